"""Stateful test: an order's life against a model venue, driven only by the pure cores.

A hypothesis ``RuleBasedStateMachine`` plays random sequences of events — send
outcomes (accept, reject, request lost, answer lost, refused by our own rate
limiter or by the venue's 429/418, which go back to PENDING), cancels of a
PENDING intent (CANCELED locally, nothing sent), crashes inside
send→persist and restarts, clock advances, queries that fail or find
nothing, venue fills/cancels/expiries, stale and fresh observations, and
attempts at arbitrary transitions — and applies what
:func:`~daemon.orders.state.transition`,
:func:`~daemon.orders.state.path_to_venue_state`,
:func:`~daemon.orders.state.classify_not_found` and
:func:`~daemon.orders.state.resolve_unknown` say.

The model venue is Binance's dangerous one: an order becomes visible to
queries only after a lag, and a client order id is accepted again once the
first order is closed. Invariants: every recorded path is legal, terminal
states absorb, the order is never sent while the venue holds an order with its
id (so at most one venue order ever exists), PENDING is only ever re-entered
when the venue has none, a closed state agrees with the venue, and a CANCELED
order without a venue order was canceled before it was sent.
"""

from __future__ import annotations

from decimal import Decimal

import attrs
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from daemon.errors import VenueRateLimitedError
from daemon.model.orders import OrderReport, VenueOrderStatus
from daemon.orders.state import (
    NOT_EXECUTED_CAUSES,
    TRANSITIONS,
    DecisionKind,
    Found,
    InvalidStateTransitionError,
    OrderState,
    QueryFailed,
    QueryOutcome,
    Transition,
    classify_not_found,
    from_order_report,
    from_venue_status,
    not_executed,
    path_to_venue_state,
    resolve_unknown,
    transition,
)

S = OrderState
#: The venue makes a new order visible to queries at most this long after the request.
MAX_VISIBILITY_LAG_S = 6.0
#: Our grace covers it (the boundary case lag == grace is drawn on purpose).
VISIBILITY_GRACE_S = MAX_VISIBILITY_LAG_S
QUANTITY = Decimal("1")
TRACKED = frozenset({S.ACCEPTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED})


@attrs.define
class VenueOrder:
    """The model venue's order under our client order id."""

    order_id: int
    visible_at_s: float
    status: VenueOrderStatus = VenueOrderStatus.NEW
    executed: Decimal = Decimal(0)
    #: Every report the venue ever gave for it, oldest first (for stale observations).
    snapshots: list[OrderReport] = attrs.field(factory=list)

    def report(self) -> OrderReport:
        return OrderReport(
            venue="model",
            symbol="BTCUSDT",
            order_id=self.order_id,
            client_order_id="td1-model",
            status=self.status,
            orig_qty=QUANTITY,
            executed_qty=self.executed,
        )

    def record(self) -> None:
        self.snapshots.append(self.report())


class OrderLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = S.PENDING
        self.history: list[Transition] = []
        self.now_s = 0.0
        self.sent_at_s: float | None = None
        self.crashed = False  # the process died inside send→persist
        self.venue: VenueOrder | None = None
        self.orders_created = 0
        self.sends = 0
        self.rate_limited = 0
        self.canceled_locally = False

    # ------------------------------------------------------------------ helpers

    def apply(self, step: Transition) -> None:
        assert step.source is self.state
        assert step.target in TRANSITIONS[step.source]
        self.history.append(step)
        self.state = step.target

    def create_venue_order(self, lag_s: float, fill_at_once: bool) -> VenueOrder:
        self.orders_created += 1
        order = VenueOrder(order_id=1000 + self.orders_created, visible_at_s=self.now_s + lag_s)
        order.record()
        if fill_at_once:  # a MARKET order: closed within milliseconds
            order.status, order.executed = VenueOrderStatus.FILLED, QUANTITY
            order.record()
        self.venue = order
        return order

    # ------------------------------------------------------------------ our side

    @precondition(lambda self: self.state is S.PENDING)
    @rule()
    def mark_sending(self) -> None:
        self.apply(transition(S.PENDING, S.SENDING, reason="send"))
        self.sent_at_s = self.now_s

    @precondition(lambda self: self.state is S.PENDING)
    @rule()
    def cancel_before_sending(self) -> None:
        """The caller cancels an intent nothing of which is at the venue: no request."""
        assert self.venue is None
        self.apply(transition(S.PENDING, S.CANCELED, reason="canceled before sending"))
        self.canceled_locally = True

    @precondition(lambda self: self.state is S.SENDING and not self.crashed)
    @rule(
        fate=st.sampled_from(
            [
                "accepted",
                "rejected",
                "request_lost",
                "answer_lost",
                "crash_before",
                "crash_after",
                "limited_locally",
                "limited_429",
                "banned_418",
            ]
        ),
        lag_s=st.sampled_from([0.0, 1.0, 3.0, MAX_VISIBILITY_LAG_S]),
        fill_at_once=st.booleans(),
    )
    def send(self, fate: str, lag_s: float, fill_at_once: bool) -> None:
        # The heart of exactly-once: never send while the venue holds an order with
        # this id. (Binance would accept the id again once that order closed.)
        assert self.venue is None, "sent while the venue already had the order"
        self.sends += 1
        if fate == "accepted":
            order = self.create_venue_order(lag_s, fill_at_once)
            answer = order.report()
            for step in path_to_venue_state(self.state, from_order_report(answer), reason="ack"):
                self.apply(step)
        elif fate == "rejected":
            self.apply(transition(S.SENDING, S.REJECTED, reason="venue rejected"))
        elif fate == "request_lost":  # timeout before the venue processed it
            self.apply(transition(S.SENDING, S.UNKNOWN, reason="timeout"))
        elif fate == "answer_lost":  # processed, then 5xx / timeout / connection loss
            self.create_venue_order(lag_s, fill_at_once)
            self.apply(transition(S.SENDING, S.UNKNOWN, reason="5xx"))
        elif fate.startswith(("limited", "banned")):
            # Our limiter refused it unsent, or the venue rejected it before processing.
            status = {"limited_locally": None, "limited_429": 429, "banned_418": 418}[fate]
            error = VenueRateLimitedError(
                "rate limited", retry_after_s=1.0, venue="model", http_status=status
            )
            proof = not_executed(error)
            assert proof is not None
            self.rate_limited += 1
            self.apply(transition(S.SENDING, S.PENDING, reason=proof.reason(1.0)))
        elif fate == "crash_before":
            self.crashed = True
        else:  # crash_after: the venue has it, our store still says SENDING
            self.create_venue_order(lag_s, fill_at_once)
            self.crashed = True

    @precondition(lambda self: self.state is S.SENDING and self.crashed)
    @rule()
    def restart(self) -> None:
        # A SENDING row at start-up: the request may have left. Never PENDING.
        self.crashed = False
        self.apply(transition(S.SENDING, S.UNKNOWN, reason="restart found SENDING"))

    # Time stands still inside the (atomic) send section, so the grace counted from
    # the SENDING mark covers the visibility lag.
    @precondition(lambda self: not (self.state is S.SENDING and not self.crashed))
    @rule(dt_s=st.sampled_from([0.5, 1.0, VISIBILITY_GRACE_S - 0.5, VISIBILITY_GRACE_S]))
    def advance_time(self, dt_s: float) -> None:
        self.now_s += dt_s

    @precondition(lambda self: self.state is S.UNKNOWN)
    @rule(offset_s=st.sampled_from([-0.5, -0.001, 0.0, 0.5]))
    def jump_near_the_grace_end(self, offset_s: float) -> None:
        """Move the clock next to the end of the visibility grace, where bugs hide."""
        assert self.sent_at_s is not None
        self.now_s = max(self.now_s, self.sent_at_s + VISIBILITY_GRACE_S + offset_s)

    @precondition(lambda self: self.state is S.UNKNOWN)
    @rule(query_fails=st.sampled_from([False, False, True]))
    def query(self, query_fails: bool) -> None:
        assert self.sent_at_s is not None
        outcome: QueryOutcome
        if query_fails:
            outcome = QueryFailed("HTTP 503")
        elif self.venue is not None and self.now_s >= self.venue.visible_at_s:
            outcome = Found(self.venue.report())
        else:
            outcome = classify_not_found(
                sent_at_s=self.sent_at_s, now_s=self.now_s, visibility_grace_s=VISIBILITY_GRACE_S
            )
        decision = resolve_unknown(outcome)
        if decision.kind is DecisionKind.QUERY_AGAIN:
            assert decision.transition is None
            return
        assert decision.transition is not None
        if decision.kind is DecisionKind.RESEND:
            assert self.venue is None, "resend decided while the venue holds the order"
        else:
            assert self.venue is not None
        self.apply(decision.transition)

    @precondition(lambda self: self.state in TRACKED and self.venue is not None)
    @rule(data=st.data())
    def observe(self, data: st.DataObject) -> None:
        """A poll or user-data-stream report arrives, possibly an old one."""
        assert self.venue is not None
        snapshot = data.draw(st.sampled_from(self.venue.snapshots), label="snapshot")
        steps = path_to_venue_state(self.state, from_order_report(snapshot), reason="poll")
        for step in steps:
            self.apply(step)

    @rule(wanted=st.sampled_from(OrderState), cause=st.sampled_from(NOT_EXECUTED_CAUSES))
    def attempt_any_transition(self, wanted: OrderState, cause: str) -> None:
        if (self.state, wanted) == (S.SENDING, S.PENDING):
            # Guarded: a proof of non-execution is needed, a bare reason is refused.
            assert transition(self.state, wanted, reason=cause).target is wanted
            try:
                transition(self.state, wanted, reason="probe")
            except InvalidStateTransitionError:
                return
            raise AssertionError("SENDING -> PENDING was allowed without a proof")
        if wanted in TRANSITIONS[self.state]:
            assert transition(self.state, wanted, reason="probe").target is wanted
        else:
            try:
                transition(self.state, wanted, reason="probe")
            except InvalidStateTransitionError:
                pass
            else:
                raise AssertionError(f"{self.state} -> {wanted} was allowed")

    # ------------------------------------------------------------------ the venue's side

    @precondition(lambda self: self.venue is not None and not self.venue.status.is_terminal)
    @rule(event=st.sampled_from(["partial", "fill", "cancel", "expire"]))
    def venue_event(self, event: str) -> None:
        order = self.venue
        assert order is not None
        if event == "partial" and order.executed < QUANTITY - Decimal("0.1"):
            order.status = VenueOrderStatus.PARTIALLY_FILLED
            order.executed += Decimal("0.1")
        elif event == "fill":
            order.status, order.executed = VenueOrderStatus.FILLED, QUANTITY
        elif event == "cancel":
            order.status = VenueOrderStatus.CANCELED
        elif event == "expire":
            order.status = VenueOrderStatus.EXPIRED_IN_MATCH
        order.record()

    # ------------------------------------------------------------------ invariants

    @invariant()
    def at_most_one_venue_order(self) -> None:
        assert self.orders_created <= 1

    @invariant()
    def history_is_a_legal_path(self) -> None:
        current = S.PENDING
        for step in self.history:
            assert step.source is current
            assert step.target in TRANSITIONS[current]
            current = step.target
        assert current is self.state

    @invariant()
    def terminal_states_absorb(self) -> None:
        if self.state.is_terminal:
            assert not TRANSITIONS[self.state]
            for target in OrderState:
                try:
                    transition(self.state, target, reason="after the end")
                except InvalidStateTransitionError:
                    continue
                raise AssertionError(f"terminal {self.state} allowed -> {target}")

    @invariant()
    def our_state_agrees_with_the_venue(self) -> None:
        if self.state in (S.PENDING, S.REJECTED):
            # PENDING (first time, or after proven absence) and REJECTED: nothing exists.
            assert self.venue is None
        if self.state in TRACKED and not self.canceled_locally:
            assert self.venue is not None
        if self.state is S.CANCELED and self.canceled_locally:
            assert self.venue is None  # canceled before sending: nothing ever reached it
        elif self.state.is_terminal and self.state is not S.REJECTED:
            assert self.venue is not None
            assert from_venue_status(self.venue.status) is self.state

    @invariant()
    def a_rate_limited_send_went_back_to_pending(self) -> None:
        back = [t for t in self.history if (t.source, t.target) == (S.SENDING, S.PENDING)]
        assert len(back) == self.rate_limited
        assert all(t.reason.startswith(NOT_EXECUTED_CAUSES) for t in back)


OrderLifecycle.TestCase.settings = settings(max_examples=500, stateful_step_count=30, deadline=None)
TestOrderLifecycle = OrderLifecycle.TestCase
