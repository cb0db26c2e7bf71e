"""Orders with exactly-once effects (docs/ARCHITECTURE.md §4 Orders).

Read top to bottom, an order travels through these modules:

* :mod:`.gateway` — the entry contract ``POST /orders`` and strategies call,
  and the errors it answers with;
* :mod:`.intent` — a submission is validated into an :class:`OrderIntent`,
  every problem reported at once;
* :mod:`.ids` — its client order id is derived deterministically from
  ``(message_id, account, symbol)``, so a resubmission finds the same intent;
* :mod:`.entry` — pre-trade risk, then the group commit of the intent to the
  outbox (:mod:`daemon.store.orders`, rows as :mod:`.records`) before the answer;
* :mod:`.dispatch` — per-account queues: one account's work one at a time,
  in submit order;
* :mod:`.executor` — the shielded send → persist → ack section, cancels, and
  queries that resolve UNKNOWN outcomes;
* :mod:`.ledger` — the one place that changes an order's state (memory,
  store and risk book together);
* :mod:`.state` — the durable state machine all of them follow, including
  the decision that resolves an ambiguous (UNKNOWN) send: adopt the venue's
  state, resend with the same id only after proven absence, or query again;
* :mod:`.reconcile` — start-up and periodic reconciliation against the venue;
* :mod:`.service` — the supervised child that builds the pipeline
  (:mod:`.settings` its tunables); :mod:`.control` the operator's commands.

The pure, synchronous parts are :mod:`.ids`, :mod:`.intent`, :mod:`.state`
and the values of :mod:`.records`; this package re-exports the first three.
Everything else does I/O or runs tasks, and is imported from its own module.
"""

from __future__ import annotations

from daemon.orders.ids import (
    DEFAULT_PREFIX,
    derive_client_order_id,
    is_derived_client_order_id,
    validate_client_order_id,
)
from daemon.orders.intent import (
    IntentProblem,
    IntentValidationError,
    OrderIntent,
    ProblemCode,
)
from daemon.orders.state import (
    TERMINAL_STATES,
    TRANSITIONS,
    Decision,
    DecisionKind,
    Found,
    InvalidStateTransitionError,
    NotFound,
    NotFoundYet,
    OrderState,
    QueryFailed,
    QueryOutcome,
    Transition,
    can_transition,
    classify_not_found,
    from_order_report,
    from_venue_status,
    is_terminal,
    path_to_venue_state,
    resolve_unknown,
    transition,
)

__all__ = [
    "DEFAULT_PREFIX",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "Decision",
    "DecisionKind",
    "Found",
    "IntentProblem",
    "IntentValidationError",
    "InvalidStateTransitionError",
    "NotFound",
    "NotFoundYet",
    "OrderIntent",
    "OrderState",
    "ProblemCode",
    "QueryFailed",
    "QueryOutcome",
    "Transition",
    "can_transition",
    "classify_not_found",
    "derive_client_order_id",
    "from_order_report",
    "from_venue_status",
    "is_derived_client_order_id",
    "is_terminal",
    "path_to_venue_state",
    "resolve_unknown",
    "transition",
    "validate_client_order_id",
]
