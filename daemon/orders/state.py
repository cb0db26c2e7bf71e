"""The durable order state machine (docs/ARCHITECTURE.md §4 Orders), and how venue answers move it.

Every state below is a row in the store's state history; a change of state is
a :class:`Transition`, checked against :data:`TRANSITIONS` by
:func:`transition`, which raises :class:`InvalidStateTransitionError` on
anything else. The table is the contract the outbox, the executor and the
reconciler share::

    CANCELED ◄── canceled before sending
       ▲
    PENDING ──► SENDING ──┬──► ACCEPTED ──► PARTIALLY_FILLED ──► FILLED | CANCELED | EXPIRED
       ▲  ▲               ├──► REJECTED
       │  └── not sent ───┤    (our own rate limiter refused it; the venue answered 429/418)
       │                  └──► UNKNOWN ── query by client order id ──┬──► found: the venue's state
       │                                                             └──► proven absent
       └────────────────── resend with the same id ◄──────────────────────────┘

    from                 to
    PENDING              SENDING, CANCELED (canceled before its send section started)
    SENDING              ACCEPTED, REJECTED, UNKNOWN,
                         PENDING (only when the request provably never took effect)
    UNKNOWN              ACCEPTED, REJECTED, PENDING (only after proven absence),
                         PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED (found further along)
    ACCEPTED             PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED
    PARTIALLY_FILLED     PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED
    REJECTED, FILLED,    nothing: terminal states absorb
    CANCELED, EXPIRED

* **PENDING** — the intent is durable and nothing has been sent (or a send was
  proven never to have reached the venue, or never to have taken effect).
  Safe to send, and safe to cancel locally: PENDING → CANCELED needs no venue
  request, since the venue holds nothing under the id.
* **SENDING** — durably marked *before* the request leaves. A SENDING row
  found at start-up means the process died inside send→persist: the request
  may or may not have reached the venue, so it becomes UNKNOWN, never PENDING.
  SENDING → PENDING is legal only with a proof that the request never took
  effect (:func:`not_executed`; the reason starts with one of
  :data:`NOT_EXECUTED_CAUSES`, which :func:`transition` and the store check):
  our own rate limiter refused it before anything was written, or the venue
  answered HTTP 429 / 418, which Binance documents as a request rejected
  before processing (unlike a 5xx, whose execution status is unknown).
* **ACCEPTED** — the venue holds the order (its answer to the new order, or a
  query, said so).
* **REJECTED** — the venue definitively refused it; nothing took effect.
* **UNKNOWN** — the outcome of a send is ambiguous (timeout or connection loss
  after the request left, HTTP 5xx, -1006/-1007): the order *may* exist. Only a
  query by client order id resolves it (:func:`resolve_unknown`).
* **PARTIALLY_FILLED** → **FILLED** | **CANCELED** | **EXPIRED** — the venue's
  lifecycle. PARTIALLY_FILLED → PARTIALLY_FILLED records further fills.

Why UNKNOWN may go straight to PARTIALLY_FILLED, FILLED, CANCELED or EXPIRED:
while we were blind the order lived on. A MARKET, IOC or FOK order is closed
within milliseconds, and a resting order may fill or be canceled by an
operator before the query runs, so the query often finds it *further along*
than ACCEPTED. Recording an ACCEPTED row first would invent an observation we
never made; the history must show what we learned and when. From SENDING the
table keeps the single step to ACCEPTED: the venue's answer to the new order
*is* the acceptance, and the status inside that answer (a MARKET order comes
back FILLED) is a second, separate fact — :func:`path_to_venue_state` gives
both steps.

Why SENDING → PENDING is safe for a rate limit and nothing else: Binance's
REST documentation ("LIMITS") says a request breaking a rate limit fails with
HTTP 429 (418 once the IP is banned): it is refused by the API layer and
never reaches the matching engine, so no order exists. A 5xx, ``-1006`` or
``-1007``, a timeout or a lost connection say nothing of the kind: UNKNOWN.

Why UNKNOWN → PENDING is safe only after proof of absence: Binance accepts a
reused client order id again once the first order is closed, so a "retry" of
an order that in fact filled would double the position. :func:`resolve_unknown`
never answers RESEND unless the query outcome is :class:`NotFound`, which
:func:`classify_not_found` gives only after the visibility grace.

Everything here is pure and synchronous; the async shells (executor,
reconciler) call it and persist what it returns.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import attrs

from daemon.errors import PermanentError, VenueRateLimitedError
from daemon.model.orders import OrderReport, VenueOrderStatus

__all__ = [
    "HELD_BACK",
    "NOT_EXECUTED_CAUSES",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "Decision",
    "DecisionKind",
    "Found",
    "InvalidStateTransitionError",
    "NotExecuted",
    "NotFound",
    "NotFoundYet",
    "OrderState",
    "QueryFailed",
    "QueryOutcome",
    "Transition",
    "can_transition",
    "check_transition",
    "classify_not_found",
    "from_order_report",
    "from_venue_status",
    "is_terminal",
    "not_executed",
    "path_to_venue_state",
    "resolve_unknown",
    "transition",
]


class OrderState(enum.Enum):
    """The durable state of one order intent; see :data:`TRANSITIONS` (docs/ARCHITECTURE.md §4)."""

    PENDING = "PENDING"
    SENDING = "SENDING"
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    UNKNOWN = "UNKNOWN"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"

    @property
    def is_terminal(self) -> bool:
        """No transition leaves this state: the intent is finished for good."""
        return self in TERMINAL_STATES


_S = OrderState

#: The venue's lifecycle after acceptance: what an open order can become.
_AFTER_ACCEPT: Final = frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELED, _S.EXPIRED})

#: Every legal state change. A state missing from a value set cannot be reached
#: from the key state; terminal states map to the empty set (they absorb).
TRANSITIONS: Final[Mapping[OrderState, frozenset[OrderState]]] = MappingProxyType(
    {
        _S.PENDING: frozenset({_S.SENDING, _S.CANCELED}),
        _S.SENDING: frozenset({_S.ACCEPTED, _S.REJECTED, _S.UNKNOWN, _S.PENDING}),
        _S.UNKNOWN: frozenset({_S.ACCEPTED, _S.REJECTED, _S.PENDING}) | _AFTER_ACCEPT,
        _S.ACCEPTED: _AFTER_ACCEPT,
        _S.PARTIALLY_FILLED: _AFTER_ACCEPT,
        _S.REJECTED: frozenset(),
        _S.FILLED: frozenset(),
        _S.CANCELED: frozenset(),
        _S.EXPIRED: frozenset(),
    }
)

#: States no transition leaves.
TERMINAL_STATES: Final[frozenset[OrderState]] = frozenset(
    {_S.REJECTED, _S.FILLED, _S.CANCELED, _S.EXPIRED}
)

#: Held back before the send: a rate limit of the account's venue (or an earlier intent
#: of the account waiting for one) stopped the request from starting at all.
HELD_BACK: Final = "held back after a rate limit, not sent"
#: The proofs that a new-order request never took effect; the reason of every
#: SENDING → PENDING transition starts with one of them (see the module docstring).
NOT_EXECUTED_CAUSES: Final[tuple[str, ...]] = (
    "rate limited locally, not sent",
    "venue 429: not executed",
    "venue 418: not executed",
    HELD_BACK,
)


class InvalidStateTransitionError(PermanentError):
    """A caller asked for a state change that :data:`TRANSITIONS` forbids.

    Always a bug or a contradiction between our records and the venue (e.g. a
    query saying CANCELED for an order we recorded FILLED): never retried, and
    the order's durable state is left as it was so an operator can look.

    Attributes:
        current: The state the order is in.
        target: The state that was asked for.
        reason: Why the caller wanted the change.
    """

    def __init__(
        self, current: OrderState, target: OrderState, *, reason: str, why: str | None = None
    ) -> None:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[current])) or "none: terminal"
        super().__init__(
            f"illegal order state transition {current.value} -> {target.value} "
            f"({reason}); " + (why or f"allowed from {current.value}: {allowed}")
        )
        self.current = current
        self.target = target
        self.reason = reason


def _non_empty(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attribute.name} must be a non-empty string, got {value!r}")


@attrs.frozen
class Transition:
    """One legal state change, to be persisted as a history row.

    Every instance is legal: construction checks :data:`TRANSITIONS`, so a
    history row read back from the store is validated on the way in, too.

    Attributes:
        source: The state before.
        target: The state after.
        reason: Why (``"venue accepted"``, ``"query: FILLED"``, …), for the history.

    Raises:
        InvalidStateTransitionError: the table does not allow ``source -> target``.
        ValueError: ``reason`` is blank.
    """

    source: OrderState
    target: OrderState
    reason: str = attrs.field(validator=_non_empty)

    def __attrs_post_init__(self) -> None:
        check_transition(self.source, self.target, self.reason)


def can_transition(current: OrderState, target: OrderState) -> bool:
    """Whether :data:`TRANSITIONS` allows ``current -> target`` (for some reason)."""
    return target in TRANSITIONS[current]


def check_transition(source: OrderState, target: OrderState, reason: str) -> None:
    """Check one step against :data:`TRANSITIONS` and its guard (also the store's check).

    SENDING → PENDING is guarded: its reason must start with one of
    :data:`NOT_EXECUTED_CAUSES`.

    Raises:
        InvalidStateTransitionError: the table forbids it, or the guard fails.
    """
    if target not in TRANSITIONS[source]:
        raise InvalidStateTransitionError(source, target, reason=reason)
    if source is _S.SENDING and target is _S.PENDING and not reason.startswith(NOT_EXECUTED_CAUSES):
        causes = "; ".join(repr(cause) for cause in NOT_EXECUTED_CAUSES)
        raise InvalidStateTransitionError(
            source,
            target,
            reason=reason,
            why=f"SENDING -> PENDING needs a proof of non-execution, a reason starting with "
            f"one of: {causes}",
        )


def transition(current: OrderState, target: OrderState, *, reason: str) -> Transition:
    """Check one state change and return it as a :class:`Transition`.

    Args:
        current: The order's durable state now.
        target: The state to move to.
        reason: Why, recorded in the history row (must not be blank).

    Raises:
        InvalidStateTransitionError: the table does not allow it.
        ValueError: ``reason`` is blank.
    """
    return Transition(current, target, reason)


def is_terminal(state: OrderState) -> bool:
    """Whether ``state`` absorbs: REJECTED, FILLED, CANCELED or EXPIRED."""
    return state in TERMINAL_STATES


# --------------------------------------------------------------------------- venue truth

#: How a venue status maps onto our states. Documented per entry in
#: :func:`from_venue_status`.
_FROM_VENUE: Final[Mapping[VenueOrderStatus, OrderState]] = MappingProxyType(
    {
        VenueOrderStatus.NEW: _S.ACCEPTED,
        VenueOrderStatus.PENDING_NEW: _S.ACCEPTED,
        VenueOrderStatus.PARTIALLY_FILLED: _S.PARTIALLY_FILLED,
        VenueOrderStatus.FILLED: _S.FILLED,
        VenueOrderStatus.CANCELED: _S.CANCELED,
        VenueOrderStatus.PENDING_CANCEL: _S.ACCEPTED,
        VenueOrderStatus.REJECTED: _S.REJECTED,
        VenueOrderStatus.EXPIRED: _S.EXPIRED,
        VenueOrderStatus.EXPIRED_IN_MATCH: _S.EXPIRED,
    }
)


def from_venue_status(status: VenueOrderStatus) -> OrderState:
    """Map a venue order status onto our state.

    * NEW → ACCEPTED.
    * PENDING_NEW → ACCEPTED: the venue holds the order (an order-list leg
      waiting for its trigger); it exists and its id is taken.
    * PARTIALLY_FILLED, FILLED, CANCELED, REJECTED, EXPIRED → the same name.
    * PENDING_CANCEL → ACCEPTED: a cancel is in progress but the order can
      still trade until it completes. Calling it CANCELED early would release
      risk limits (open orders, position) while fills may still arrive. Use
      :func:`from_order_report` to keep a partial fill visible.
    * EXPIRED_IN_MATCH → EXPIRED: self-trade prevention expired it; it is
      closed exactly like an expiry.

    The result is never PENDING, SENDING or UNKNOWN: those are our own states,
    the venue cannot report them.
    """
    return _FROM_VENUE[status]


def from_order_report(report: OrderReport) -> OrderState:
    """The state a venue report shows, using its fill quantity where the status alone is vague.

    A report without a status (an ``ACK`` answer) still proves the order
    exists: ACCEPTED. An open order (NEW, PENDING_NEW, PENDING_CANCEL) with a
    positive ``executed_qty`` is PARTIALLY_FILLED, so a pending cancel does not
    hide fills already recorded.
    """
    if report.status is None:
        return _S.ACCEPTED
    state = from_venue_status(report.status)
    if state is _S.ACCEPTED and report.executed_qty is not None and report.executed_qty > 0:
        return _S.PARTIALLY_FILLED
    return state


#: States a venue can report (the image of :func:`from_venue_status`).
_VENUE_STATES: Final = frozenset({_S.ACCEPTED, _S.REJECTED}) | _AFTER_ACCEPT

#: How far along the lifecycle of an *accepted* order a state is, for telling a
#: stale observation (behind what we recorded) from news. The closing states
#: share the top rank, so one closing state seen after another is a
#: contradiction. REJECTED is not on this lifecycle: nothing is behind it.
_PROGRESS: Final[Mapping[OrderState, int]] = MappingProxyType(
    {
        _S.ACCEPTED: 1,
        _S.PARTIALLY_FILLED: 2,
        _S.FILLED: 3,
        _S.CANCELED: 3,
        _S.EXPIRED: 3,
    }
)


def path_to_venue_state(
    current: OrderState, observed: OrderState, *, reason: str
) -> tuple[Transition, ...]:
    """The transitions that bring ``current`` up to a state the venue reported.

    Venue reports arrive from several places (the new-order answer, queries,
    polling, the user data stream) and not always in order, so an observation
    may be news, old news, or a contradiction:

    * **news** — the transitions to record, in order. From SENDING an
      acceptance is recorded first (``SENDING → ACCEPTED → FILLED`` for a
      MARKET order answered FILLED); from UNKNOWN, ACCEPTED and
      PARTIALLY_FILLED it is one step.
    * **old news** — ``()``: the observation equals the current state, or is
      behind it on the accepted order's lifecycle (NEW seen after a fill was
      recorded, PARTIALLY_FILLED seen after FILLED: a poll that left before the
      fill and came back after the user data stream). PARTIALLY_FILLED seen in
      PARTIALLY_FILLED is ``()`` too: the fills themselves are stored by trade
      id, the state adds nothing.
    * **contradiction** — raises: one closing state followed by a different
      one (FILLED, then CANCELED), REJECTED for an order we know was accepted,
      anything but REJECTED for an order we recorded REJECTED, or any venue
      state for an order in PENDING (never sent, or proven absent).

    Args:
        current: The order's durable state.
        observed: The venue's state, from :func:`from_venue_status` or
            :func:`from_order_report` (never PENDING, SENDING or UNKNOWN).
        reason: Recorded on every returned transition.

    Raises:
        InvalidStateTransitionError: the observation contradicts our records.
        ValueError: ``observed`` is not a state a venue can report.
    """
    if observed not in _VENUE_STATES:
        raise ValueError(f"{observed.value} is not a state a venue reports")
    if current is observed:
        return ()
    if current is _S.PENDING:  # PENDING -> CANCELED is ours (canceled before sending) only
        raise InvalidStateTransitionError(
            current,
            observed,
            reason=reason,
            why="the venue reports an order we hold as PENDING (never sent, or proven absent)",
        )
    if current is _S.SENDING and observed is not _S.REJECTED:
        first = transition(current, _S.ACCEPTED, reason=reason)
        if observed is _S.ACCEPTED:
            return (first,)
        return (first, transition(_S.ACCEPTED, observed, reason=reason))
    if current in _PROGRESS and observed in _PROGRESS and _PROGRESS[observed] < _PROGRESS[current]:
        return ()
    return (transition(current, observed, reason=reason),)


# --------------------------------------------------------------------------- not executed


@attrs.frozen
class NotExecuted:
    """Proof that a new-order request never took effect: back to PENDING, send later.

    Attributes:
        cause: One of :data:`NOT_EXECUTED_CAUSES` (the history reason starts with it).
        retry_after_s: How long the venue (``Retry-After``) or our limiter (its
            remaining freeze) asked us to wait; ``None`` when it did not say.
        code: The venue's error code (``-1003``, ``-1015``), if any.
    """

    cause: str
    retry_after_s: float | None = None
    code: int | None = None

    def reason(self, wait_s: float) -> str:
        """The history reason: ``"venue 429: not executed (-1003); retry after 2.0 s"``."""
        code = f" ({self.code})" if self.code is not None else ""
        return f"{self.cause}{code}; retry after {wait_s:.1f} s"


def not_executed(error: BaseException) -> NotExecuted | None:
    """Whether a new order's failure proves that the order was not executed.

    * :class:`~daemon.errors.VenueRateLimitedError` without ``http_status``:
      our own rate limiter did not admit the request, which was never written.
    * :class:`~daemon.errors.VenueRateLimitedError` with HTTP 429 or 418:
      Binance rejects a request over a rate limit before processing it.

    Anything else is ``None``: a 5xx, ``-1006``/``-1007``, a timeout, a lost
    connection, even a rate-limit *code* under another HTTP status leaves the
    outcome unknown (UNKNOWN, resolved by query).
    """
    if not isinstance(error, VenueRateLimitedError):
        return None
    status = error.http_status
    if status is None:
        cause = NOT_EXECUTED_CAUSES[0]
    elif status in (429, 418):
        cause = f"venue {status}: not executed"
    else:
        return None
    return NotExecuted(cause, error.retry_after_s, error.code)


# --------------------------------------------------------------------------- UNKNOWN


@attrs.frozen
class Found:
    """The query by client order id found the order.

    Attributes:
        report: What the venue said about it.
    """

    report: OrderReport


@attrs.frozen
class NotFound:
    """The venue said "no such order" *after* the visibility grace: proof of absence.

    Build it with :func:`classify_not_found`, not by hand.

    Attributes:
        elapsed_s: Time from the last SENDING mark to the query.
    """

    elapsed_s: float


@attrs.frozen
class NotFoundYet:
    """The venue said "no such order" *inside* the visibility grace: proves nothing.

    A venue may make an order visible to queries some time after accepting it
    (and a request may still be in flight), so an early "not found" is not
    absence.

    Attributes:
        elapsed_s: Time from the last SENDING mark to the query.
        remaining_s: How long until a "not found" would count as proof.
        reported: The user data stream reported the order: it exists, and no
            "not found" will ever count as proof (the venue's queries lag).
    """

    elapsed_s: float
    remaining_s: float
    reported: bool = False


@attrs.frozen
class QueryFailed:
    """The query itself failed (timeout, 5xx, rate limit, …): nothing was learned.

    Attributes:
        error: A short description, for the log and the history.
    """

    error: str


#: What a query by client order id can tell about an UNKNOWN order.
QueryOutcome = Found | NotFound | NotFoundYet | QueryFailed


def classify_not_found(
    *, sent_at_s: float, now_s: float, visibility_grace_s: float
) -> NotFound | NotFoundYet:
    """Decide whether a venue's "no such order" proves absence.

    ``sent_at_s`` is the time of the *last* durable SENDING mark of the intent
    (each resend restarts the clock), read from the store, so it survives a
    restart; ``now_s`` is on the same (wall) clock. The mark is written before
    the request is signed, so the grace must cover the longest time a request
    can still be processed after the mark — the send section's deadline plus
    the venue's ``recvWindow`` (Binance refuses older requests) plus clock
    skew — and the venue's query visibility lag. When the clock has stepped
    back (negative elapsed time) the answer is the cautious one: not yet.

    Raises:
        ValueError: ``visibility_grace_s`` is negative or not finite.
    """
    if not visibility_grace_s >= 0 or visibility_grace_s == float("inf"):
        raise ValueError(f"visibility_grace_s must be finite and >= 0, got {visibility_grace_s}")
    elapsed_s = now_s - sent_at_s
    if elapsed_s >= visibility_grace_s:
        return NotFound(elapsed_s)
    return NotFoundYet(elapsed_s, visibility_grace_s - elapsed_s)


class DecisionKind(enum.Enum):
    """What to do with an UNKNOWN order after a query."""

    ADOPT = "adopt"  #: the venue has it: move to the venue's state
    RESEND = "resend"  #: proven absent: back to PENDING, resend with the same id
    QUERY_AGAIN = "query_again"  #: nothing proven: stay UNKNOWN, query again later


@attrs.frozen
class Decision:
    """The answer of :func:`resolve_unknown`.

    Attributes:
        kind: What to do.
        transition: The state change to persist (``UNKNOWN → venue state`` for
            ADOPT, ``UNKNOWN → PENDING`` for RESEND), ``None`` for QUERY_AGAIN.
        reason: Why, for the log.
        report: The venue's report for ADOPT (venue order id, fills), else ``None``.
        retry_after_s: For QUERY_AGAIN after :class:`NotFoundYet`, the time
            until a "not found" becomes proof; ``None`` otherwise.
    """

    kind: DecisionKind
    transition: Transition | None
    reason: str
    report: OrderReport | None = None
    retry_after_s: float | None = None

    @property
    def target(self) -> OrderState:
        """The order's state after the decision is applied."""
        return self.transition.target if self.transition is not None else _S.UNKNOWN


def resolve_unknown(outcome: QueryOutcome) -> Decision:
    """Decide what a query result means for an UNKNOWN order.

    * :class:`Found` → ADOPT the venue's state (:func:`from_order_report`),
      which may already be terminal.
    * :class:`NotFound` (after the grace) → RESEND: back to PENDING, to be sent
      again with the *same* client order id.
    * :class:`NotFoundYet` or :class:`QueryFailed` → QUERY_AGAIN: stay UNKNOWN.

    RESEND is answered for :class:`NotFound` only: no other outcome proves
    absence, and a blind resend can double a position (see the module docstring).

    Raises:
        TypeError: ``outcome`` is not a :data:`QueryOutcome`.
    """
    if isinstance(outcome, Found):
        target = from_order_report(outcome.report)
        status = outcome.report.status.value if outcome.report.status else "ACK"
        reason = f"query found venue order {outcome.report.order_id} ({status})"
        return Decision(
            DecisionKind.ADOPT,
            transition(_S.UNKNOWN, target, reason=reason),
            reason,
            report=outcome.report,
        )
    if isinstance(outcome, NotFound):
        reason = f"venue proved absence ({outcome.elapsed_s:.3f}s after sending): resend same id"
        return Decision(
            DecisionKind.RESEND, transition(_S.UNKNOWN, _S.PENDING, reason=reason), reason
        )
    if isinstance(outcome, NotFoundYet) and outcome.reported:
        reason = (
            f"not found {outcome.elapsed_s:.3f}s after sending, but the user data stream "
            f"reported it: the venue's queries lag; asking again"
        )
        return Decision(DecisionKind.QUERY_AGAIN, None, reason, retry_after_s=outcome.remaining_s)
    if isinstance(outcome, NotFoundYet):
        reason = (
            f"not found {outcome.elapsed_s:.3f}s after sending, inside the visibility grace: "
            f"no proof of absence yet"
        )
        return Decision(DecisionKind.QUERY_AGAIN, None, reason, retry_after_s=outcome.remaining_s)
    if isinstance(outcome, QueryFailed):
        return Decision(DecisionKind.QUERY_AGAIN, None, f"query failed: {outcome.error}")
    raise TypeError(f"not a query outcome: {outcome!r}")
