"""Orders with exactly-once effects (DESIGN §4): the pure cores.

Read top to bottom, an order travels through these modules:

* :mod:`.intent` — a submission (``POST /orders`` or a strategy) is validated
  into an :class:`OrderIntent`, every problem reported at once;
* :mod:`.ids` — its client order id is derived deterministically from
  ``(message_id, account, symbol)``, so a resubmission finds the same intent;
* :mod:`.state` — the durable state machine the outbox, the executor and the
  reconciler move it through, including the decision that resolves an
  ambiguous (UNKNOWN) send: adopt the venue's state, resend with the same id
  only after proven absence, or query again.

Everything here is pure and synchronous; the async shells (entry, executor,
reconciler) build on it.
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
