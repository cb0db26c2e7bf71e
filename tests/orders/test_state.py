"""The order state machine: the transition table, venue mapping and UNKNOWN resolution.

The expected tables here are written out independently of
:mod:`daemon.orders.state`, so an edit to the module's table fails a test.
"""

from __future__ import annotations

import itertools
import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.errors import PermanentError, VenueOutcomeUnknownError, VenueRateLimitedError
from daemon.model.orders import OrderReport, VenueOrderStatus
from daemon.orders.state import (
    NOT_EXECUTED_CAUSES,
    TERMINAL_STATES,
    TRANSITIONS,
    DecisionKind,
    Found,
    InvalidStateTransitionError,
    NotExecuted,
    NotFound,
    NotFoundYet,
    OrderState,
    QueryFailed,
    Transition,
    can_transition,
    check_transition,
    classify_not_found,
    from_order_report,
    from_venue_status,
    is_terminal,
    not_executed,
    path_to_venue_state,
    resolve_unknown,
    transition,
)

S = OrderState
P, SE, A, R, U, PF, F, C, E = (
    S.PENDING,
    S.SENDING,
    S.ACCEPTED,
    S.REJECTED,
    S.UNKNOWN,
    S.PARTIALLY_FILLED,
    S.FILLED,
    S.CANCELED,
    S.EXPIRED,
)

#: docs/ARCHITECTURE.md §4 Orders (the state table): the only legal edges.
EXPECTED_EDGES: frozenset[tuple[OrderState, OrderState]] = frozenset(
    {
        (P, SE),
        (P, C),  # canceled before sending
        (SE, A),
        (SE, R),
        (SE, U),
        (SE, P),  # guarded: only with a proof of non-execution (a rate limit)
        (U, A),
        (U, R),
        (U, P),
        (U, PF),
        (U, F),
        (U, C),
        (U, E),
        (A, PF),
        (A, F),
        (A, C),
        (A, E),
        (PF, PF),
        (PF, F),
        (PF, C),
        (PF, E),
    }
)
EXPECTED_TERMINAL = {R, F, C, E}
ALL_PAIRS = list(itertools.product(OrderState, OrderState))


def report(status: VenueOrderStatus | None, executed: str | None = None) -> OrderReport:
    return OrderReport(
        venue="sim",
        symbol="BTCUSDT",
        order_id=42,
        client_order_id="td1-abc",
        status=status,
        executed_qty=None if executed is None else Decimal(executed),
    )


# --------------------------------------------------------------------------- the table


def test_nine_states_all_in_the_table() -> None:
    assert {s.value for s in OrderState} == {
        "PENDING",
        "SENDING",
        "ACCEPTED",
        "REJECTED",
        "UNKNOWN",
        "PARTIALLY_FILLED",
        "FILLED",
        "CANCELED",
        "EXPIRED",
    }
    assert set(TRANSITIONS) == set(OrderState)


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS, ids=lambda s: s.value)
def test_every_pair_against_the_table(current: OrderState, target: OrderState) -> None:
    legal = (current, target) in EXPECTED_EDGES
    assert can_transition(current, target) is legal
    assert (target in TRANSITIONS[current]) is legal
    if legal:
        reason = "venue 429: not executed; test" if (current, target) == (SE, P) else "test"
        step = transition(current, target, reason=reason)
        assert step == Transition(current, target, reason)
    else:
        with pytest.raises(InvalidStateTransitionError):
            Transition(current, target, "rebuilt from a corrupt row")
        with pytest.raises(InvalidStateTransitionError) as info:
            transition(current, target, reason="why not")
        error = info.value
        assert (error.current, error.target, error.reason) == (current, target, "why not")
        assert f"{current.value} -> {target.value}" in str(error)
        assert "why not" in str(error)


def test_the_table_has_no_extra_edges() -> None:
    edges = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert edges == EXPECTED_EDGES


@pytest.mark.parametrize("state", list(OrderState), ids=lambda s: s.value)
def test_terminal_states_absorb(state: OrderState) -> None:
    assert is_terminal(state) is (state in EXPECTED_TERMINAL)
    assert state.is_terminal is (state in EXPECTED_TERMINAL)
    assert (state in TERMINAL_STATES) is (state in EXPECTED_TERMINAL)
    assert (not TRANSITIONS[state]) is (state in EXPECTED_TERMINAL)


def test_graph_shape() -> None:
    """Everything is reachable from PENDING, and every state can still end."""

    def reachable(start: OrderState) -> set[OrderState]:
        seen, todo = {start}, [start]
        while todo:
            for nxt in TRANSITIONS[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    assert reachable(P) == set(OrderState)
    for state in OrderState:
        assert reachable(state) & TERMINAL_STATES, state


def test_the_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        TRANSITIONS[F] = frozenset({A})  # type: ignore[index]


def test_error_is_permanent_and_says_what_is_allowed() -> None:
    with pytest.raises(PermanentError, match=r"allowed from FILLED: none: terminal"):
        transition(F, A, reason="late report")
    with pytest.raises(
        InvalidStateTransitionError, match=r"allowed from PENDING: CANCELED, SENDING"
    ):
        transition(P, A, reason="skip")


@pytest.mark.parametrize("cause", NOT_EXECUTED_CAUSES)
def test_sending_back_to_pending_needs_a_proof_of_non_execution(cause: str) -> None:
    step = transition(SE, P, reason=f"{cause}; retry after 1.0 s")
    assert (step.source, step.target) == (SE, P)
    check_transition(SE, P, cause)
    for reason in ["timeout", "HTTP 503", "retry", f"x {cause}"]:
        with pytest.raises(InvalidStateTransitionError, match="proof of non-execution") as info:
            transition(SE, P, reason=reason)
        assert (info.value.current, info.value.target) == (SE, P)
        with pytest.raises(InvalidStateTransitionError):
            check_transition(SE, P, reason)
    # The other ways into PENDING are not guarded by the reason.
    assert transition(U, P, reason="venue proved absence").target is P


def _limited(status: int | None, retry_after_s: float | None = 2.0) -> VenueRateLimitedError:
    return VenueRateLimitedError(
        "rate limited",
        retry_after_s=retry_after_s,
        banned=status == 418,
        venue="sim",
        code=None if status is None else -1003,
        http_status=status,
    )


def test_only_a_rate_limit_before_processing_proves_non_execution() -> None:
    local = not_executed(_limited(None, None))
    assert local == NotExecuted("rate limited locally, not sent", None, None)
    assert local.reason(1.0) == "rate limited locally, not sent; retry after 1.0 s"
    venue = not_executed(_limited(429))
    assert venue == NotExecuted("venue 429: not executed", 2.0, -1003)
    assert venue.reason(2.0) == "venue 429: not executed (-1003); retry after 2.0 s"
    banned = not_executed(_limited(418, 120.0))
    assert banned is not None and banned.cause == "venue 418: not executed"
    for proof in (local, venue, banned):
        assert transition(SE, P, reason=proof.reason(1.0)).target is P
    # A rate-limit code under any other status, a 5xx, a timeout: no proof.
    assert not_executed(_limited(400)) is None
    assert not_executed(_limited(503)) is None
    unknown = VenueOutcomeUnknownError("HTTP 503", venue="sim", http_status=503, code=-1006)
    assert not_executed(unknown) is None
    assert not_executed(TimeoutError()) is None


def test_a_venue_report_never_moves_a_pending_intent() -> None:
    with pytest.raises(InvalidStateTransitionError, match="PENDING") as info:
        path_to_venue_state(P, C, reason="open-order poll")
    assert "never sent" in str(info.value)


@pytest.mark.parametrize("reason", ["", "   "])
def test_a_transition_needs_a_reason(reason: str) -> None:
    with pytest.raises(ValueError, match="reason"):
        transition(P, SE, reason=reason)


# --------------------------------------------------------------------------- venue mapping

EXPECTED_FROM_VENUE = {
    VenueOrderStatus.NEW: A,
    VenueOrderStatus.PENDING_NEW: A,
    VenueOrderStatus.PARTIALLY_FILLED: PF,
    VenueOrderStatus.FILLED: F,
    VenueOrderStatus.CANCELED: C,
    VenueOrderStatus.PENDING_CANCEL: A,
    VenueOrderStatus.REJECTED: R,
    VenueOrderStatus.EXPIRED: E,
    VenueOrderStatus.EXPIRED_IN_MATCH: E,
}


@pytest.mark.parametrize("status", list(VenueOrderStatus), ids=lambda s: s.value)
def test_from_venue_status(status: VenueOrderStatus) -> None:
    state = from_venue_status(status)
    assert state is EXPECTED_FROM_VENUE[status]
    # Venue and state machine agree on what is closed.
    assert state.is_terminal is status.is_terminal
    # The venue never reports our own bookkeeping states, and UNKNOWN can adopt all it reports.
    assert state not in (P, SE, U)
    assert can_transition(U, state)


@pytest.mark.parametrize(
    ("status", "executed", "expected"),
    [
        (None, None, A),  # an ACK proves existence
        (None, "1", A),
        (VenueOrderStatus.NEW, None, A),
        (VenueOrderStatus.NEW, "0", A),
        (VenueOrderStatus.NEW, "0.5", PF),
        (VenueOrderStatus.PENDING_CANCEL, "0", A),
        (VenueOrderStatus.PENDING_CANCEL, "0.5", PF),
        (VenueOrderStatus.PENDING_NEW, "0.1", PF),
        (VenueOrderStatus.PARTIALLY_FILLED, "0.5", PF),
        (VenueOrderStatus.CANCELED, "0.5", C),
        (VenueOrderStatus.FILLED, "1", F),
        (VenueOrderStatus.EXPIRED_IN_MATCH, "0.2", E),
        (VenueOrderStatus.REJECTED, "0", R),
    ],
)
def test_from_order_report(
    status: VenueOrderStatus | None, executed: str | None, expected: OrderState
) -> None:
    assert from_order_report(report(status, executed)) is expected


# --------------------------------------------------------------------------- venue observations

VENUE_STATES = [A, R, PF, F, C, E]
X = "raise"
#: current -> observed -> path of targets (or X: contradiction).
EXPECTED_PATHS: dict[OrderState, dict[OrderState, tuple[OrderState, ...] | str]] = {
    P: {A: X, R: X, PF: X, F: X, C: X, E: X},
    SE: {A: (A,), R: (R,), PF: (A, PF), F: (A, F), C: (A, C), E: (A, E)},
    U: {A: (A,), R: (R,), PF: (PF,), F: (F,), C: (C,), E: (E,)},
    A: {A: (), R: X, PF: (PF,), F: (F,), C: (C,), E: (E,)},
    PF: {A: (), R: X, PF: (), F: (F,), C: (C,), E: (E,)},
    R: {A: X, R: (), PF: X, F: X, C: X, E: X},
    F: {A: (), R: X, PF: (), F: (), C: X, E: X},
    C: {A: (), R: X, PF: (), F: X, C: (), E: X},
    E: {A: (), R: X, PF: (), F: X, C: X, E: ()},
}


@pytest.mark.parametrize(
    ("current", "observed"),
    list(itertools.product(OrderState, VENUE_STATES)),
    ids=lambda s: s.value,
)
def test_path_to_venue_state(current: OrderState, observed: OrderState) -> None:
    expected = EXPECTED_PATHS[current][observed]
    if expected == X:
        with pytest.raises(InvalidStateTransitionError):
            path_to_venue_state(current, observed, reason="obs")
        return
    path = path_to_venue_state(current, observed, reason="obs")
    assert tuple(t.target for t in path) == expected
    # A returned path is a chain of legal steps from the current state.
    source = current
    for step in path:
        assert step.source is source
        assert can_transition(step.source, step.target)
        assert step.reason == "obs"
        source = step.target


@pytest.mark.parametrize("observed", [P, SE, U], ids=lambda s: s.value)
def test_path_to_venue_state_refuses_states_a_venue_cannot_report(observed: OrderState) -> None:
    with pytest.raises(ValueError, match="not a state a venue reports"):
        path_to_venue_state(U, observed, reason="obs")


# --------------------------------------------------------------------------- UNKNOWN


def test_classify_not_found_boundaries() -> None:
    assert classify_not_found(sent_at_s=100.0, now_s=104.0, visibility_grace_s=5.0) == (
        NotFoundYet(elapsed_s=4.0, remaining_s=1.0)
    )
    assert classify_not_found(sent_at_s=100.0, now_s=105.0, visibility_grace_s=5.0) == NotFound(5.0)
    assert classify_not_found(sent_at_s=100.0, now_s=160.0, visibility_grace_s=5.0) == NotFound(
        60.0
    )
    # The wall clock stepped back: never proof.
    assert classify_not_found(sent_at_s=100.0, now_s=90.0, visibility_grace_s=5.0) == NotFoundYet(
        -10.0, 15.0
    )
    assert classify_not_found(sent_at_s=1.0, now_s=1.0, visibility_grace_s=0.0) == NotFound(0.0)


@pytest.mark.parametrize("grace", [-1.0, math.nan, math.inf])
def test_classify_not_found_rejects_bad_grace(grace: float) -> None:
    with pytest.raises(ValueError, match="visibility_grace_s"):
        classify_not_found(sent_at_s=0.0, now_s=10.0, visibility_grace_s=grace)


@given(
    sent=st.floats(0, 1e9, allow_nan=False),
    elapsed=st.floats(-1e6, 1e6, allow_nan=False),
    grace=st.floats(0, 1e4, allow_nan=False),
)
@settings(max_examples=200, deadline=None)
def test_not_found_is_proof_only_after_the_grace(sent: float, elapsed: float, grace: float) -> None:
    now = sent + elapsed
    outcome = classify_not_found(sent_at_s=sent, now_s=now, visibility_grace_s=grace)
    if now - sent < grace:
        assert isinstance(outcome, NotFoundYet)
        assert outcome.remaining_s > 0
    else:
        assert isinstance(outcome, NotFound)


@pytest.mark.parametrize("status", [*VenueOrderStatus, None], ids=str)
def test_resolve_found_adopts_the_venue_state(status: VenueOrderStatus | None) -> None:
    found = report(status)
    decision = resolve_unknown(Found(found))
    assert decision.kind is DecisionKind.ADOPT
    assert decision.report is found
    assert decision.transition is not None
    assert decision.transition.source is U
    assert decision.target is from_order_report(found)
    assert "42" in decision.reason


def test_resolve_found_further_along() -> None:
    decision = resolve_unknown(Found(report(VenueOrderStatus.FILLED, "1")))
    assert decision.target is F


def test_resolve_proven_absence_resends_with_the_same_id() -> None:
    decision = resolve_unknown(NotFound(elapsed_s=30.0))
    assert decision.kind is DecisionKind.RESEND
    assert decision.transition == Transition(U, P, decision.reason)
    assert decision.target is P
    assert decision.report is None


def test_resolve_not_found_yet_waits() -> None:
    decision = resolve_unknown(NotFoundYet(elapsed_s=1.0, remaining_s=4.0))
    assert decision.kind is DecisionKind.QUERY_AGAIN
    assert decision.transition is None
    assert decision.target is U
    assert decision.retry_after_s == 4.0


def test_resolve_query_error_waits() -> None:
    decision = resolve_unknown(QueryFailed("HTTP 503"))
    assert decision.kind is DecisionKind.QUERY_AGAIN
    assert decision.transition is None
    assert decision.retry_after_s is None
    assert "HTTP 503" in decision.reason


def test_resolve_refuses_other_values() -> None:
    with pytest.raises(TypeError):
        resolve_unknown("not found")  # type: ignore[arg-type]


outcomes = st.one_of(
    st.builds(
        Found,
        st.builds(
            report,
            st.none() | st.sampled_from(VenueOrderStatus),
            st.none() | st.sampled_from(["0", "0.5", "1"]),
        ),
    ),
    st.builds(NotFound, st.floats(0, 1e6)),
    st.builds(NotFoundYet, st.floats(-1e6, 1e6), st.floats(0.001, 1e6)),
    st.builds(QueryFailed, st.text()),
)


@given(outcomes)
@settings(max_examples=200, deadline=None)
def test_only_proof_of_absence_ever_resends(outcome: object) -> None:
    decision = resolve_unknown(outcome)  # type: ignore[arg-type]
    assert (decision.kind is DecisionKind.RESEND) is isinstance(outcome, NotFound)
    if decision.transition is not None:
        assert decision.transition.source is U
        assert can_transition(U, decision.transition.target)
    assert (decision.kind is DecisionKind.ADOPT) is isinstance(outcome, Found)
