"""The main stage: limits, reservations and their life, properties against simple models."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.errors import PermanentError
from daemon.model import Side
from daemon.risk import (
    Exposure,
    LimitTable,
    PreTradeRisk,
    Reservation,
    ReservationState,
    ReservationStateError,
    RiskBook,
    RiskDecision,
    RiskLimits,
    RiskRequest,
    TradingStates,
)
from daemon.risk.reservation import TRANSITIONS
from tests.helpers.clock import FakeClock
from tests.helpers.risk import BTC, D, request

UNLIMITED = RiskLimits(max_orders_per_window=None, max_open_orders=None)


def reserved(book: RiskBook, req: RiskRequest) -> Reservation:
    result = book.reserve(req)
    assert isinstance(result, Reservation), result
    return result


def codes(result: Reservation | RiskDecision) -> tuple[str, ...]:
    assert isinstance(result, RiskDecision), result
    return result.codes


# --------------------------------------------------------------------------- limits config


def test_defaults() -> None:
    limits = RiskLimits()
    assert limits.max_orders_per_window == 50
    assert limits.order_window_s == 10.0
    assert limits.max_open_orders == 200
    assert limits.max_order_notional is None and limits.max_position_qty is None


def test_limits_accept_decimal_strings_and_per_symbol_overrides() -> None:
    limits = RiskLimits(
        max_order_notional="1000.5",
        max_position_qty=3,
        position_qty_by_symbol={"ETHUSDT": "40"},
    )
    assert limits.max_order_notional == D("1000.5")
    assert limits.max_position_for("BTCUSDT") == D(3)
    assert limits.max_position_for("ETHUSDT") == D(40)
    with pytest.raises(TypeError):
        limits.position_qty_by_symbol["X"] = D(1)  # type: ignore[index]
    hash(limits)  # frozen values stay hashable


def test_limits_report_every_problem_at_once() -> None:
    with pytest.raises(ValueError) as info:
        RiskLimits(
            max_orders_per_window=0,
            order_window_s=float("nan"),
            max_order_notional=1.5,  # type: ignore[arg-type]
            max_open_orders=True,
            max_position_qty="-1",
            position_qty_by_symbol={"BTCUSDT": "abc"},
        )
    message = str(info.value)
    for field in (
        "max_orders_per_window",
        "order_window_s",
        "max_order_notional",
        "max_open_orders",
        "max_position_qty",
        "position_qty_by_symbol.BTCUSDT",
    ):
        assert field in message
    with pytest.raises(ValueError, match="max_order_notional must be > 0"):
        RiskLimits(max_order_notional=D(0))
    assert RiskLimits(max_position_qty=D(0)).max_position_qty == 0  # reduce-only by limit


def test_limit_table_per_account() -> None:
    special = RiskLimits(max_open_orders=1)
    table = LimitTable(accounts={"vip": special})
    assert table.for_account("vip") is special
    assert table.for_account("other") == RiskLimits()
    with pytest.raises(ValueError, match="bad entries"):
        LimitTable(accounts={"x": "nope"})  # type: ignore[dict-item]


def test_book_applies_per_account_limits() -> None:
    table = LimitTable(
        default=RiskLimits(max_open_orders=1), accounts={"big": RiskLimits(max_open_orders=3)}
    )
    book = RiskBook(table, clock=FakeClock())
    reserved(book, request("small"))
    assert codes(book.reserve(request("small"))) == ("OPEN_ORDERS_EXCEEDED",)
    for _ in range(3):
        reserved(book, request("big"))
    assert codes(book.reserve(request("big"))) == ("OPEN_ORDERS_EXCEEDED",)


# --------------------------------------------------------------------------- reason table


def prime_rate(book: RiskBook) -> None:
    for i in range(2):
        reserved(book, request(coid=f"p{i}", qty="0.1")).commit()


def prime_open(book: RiskBook) -> None:
    for i in range(2):
        r = reserved(book, request(coid=f"p{i}", qty="0.1"))
        r.commit()


def prime_long(book: RiskBook) -> None:
    book.set_position("acct", "BTCUSDT", D(4))
    book.restore(request(coid="p", qty="0.5"))


def prime_short(book: RiskBook) -> None:
    book.set_position("acct", "BTCUSDT", D(-4))
    book.restore(request(coid="p", side="SELL", qty="0.5"))


def no_prime(book: RiskBook) -> None:
    pass


MAIN_CASES: list[tuple[str, RiskLimits, Any, RiskRequest, list[str]]] = [
    ("within every limit", RiskLimits(), no_prime, request(), []),
    (
        "order rate",
        RiskLimits(max_orders_per_window=2, max_open_orders=None),
        prime_rate,
        request(),
        ["ORDER_RATE_EXCEEDED"],
    ),
    (
        "notional above max",
        RiskLimits(max_order_notional=D(150)),
        no_prime,
        request(qty="2", price="100"),
        ["ORDER_NOTIONAL_ABOVE_MAX"],
    ),
    (
        "notional at max",
        RiskLimits(max_order_notional=D(200)),
        no_prime,
        request(qty="2", price="100"),
        [],
    ),
    (
        "market notional at the reference price",
        RiskLimits(max_order_notional=D(150)),
        no_prime,
        request(type="MARKET", qty="2", reference="100"),
        ["ORDER_NOTIONAL_ABOVE_MAX"],
    ),
    (
        "market notional unknown",
        RiskLimits(max_order_notional=D(150)),
        no_prime,
        request(type="MARKET", qty="2"),
        ["NOTIONAL_UNKNOWN"],
    ),
    (
        "market without a notional limit needs no price",
        RiskLimits(),
        no_prime,
        request(type="MARKET", qty="2"),
        [],
    ),
    (
        "quote order notional is its quote quantity",
        RiskLimits(max_order_notional=D(150)),
        no_prime,
        request(type="MARKET", qty=None, quote="151", reference="1"),
        ["ORDER_NOTIONAL_ABOVE_MAX"],
    ),
    (
        "quote order without a reference price",
        RiskLimits(),
        no_prime,
        request(type="MARKET", qty=None, quote="100"),
        ["QUANTITY_UNKNOWN"],
    ),
    (
        "open orders",
        RiskLimits(max_open_orders=2),
        prime_open,
        request(),
        ["OPEN_ORDERS_EXCEEDED"],
    ),
    (
        "long position counts open buys",
        RiskLimits(max_position_qty=D(5)),
        prime_long,
        request(qty="0.501"),
        ["POSITION_LIMIT_EXCEEDED"],
    ),
    (
        "long position exactly at the limit",
        RiskLimits(max_position_qty=D(5)),
        prime_long,
        request(qty="0.5"),
        [],
    ),
    (
        "a sell reduces a long whatever the limit",
        RiskLimits(max_position_qty=D(1)),
        prime_long,
        request(side="SELL", qty="4"),
        [],
    ),
    (
        "short position counts open sells",
        RiskLimits(max_position_qty=D(5)),
        prime_short,
        request(side="SELL", qty="0.501"),
        ["POSITION_LIMIT_EXCEEDED"],
    ),
    (
        "per-symbol position override",
        RiskLimits(max_position_qty=D(100), position_qty_by_symbol={"BTCUSDT": D(1)}),
        no_prime,
        request(qty="1.001"),
        ["POSITION_LIMIT_EXCEEDED"],
    ),
    (
        "quote order position at the reference price",
        RiskLimits(max_position_qty=D(1)),
        no_prime,
        request(type="MARKET", qty=None, quote="150", reference="100"),
        ["POSITION_LIMIT_EXCEEDED"],
    ),
    (
        "every breach together",
        RiskLimits(
            max_orders_per_window=2,
            max_order_notional=D(10),
            max_open_orders=2,
            max_position_qty=D("0.5"),
        ),
        prime_open,
        request(qty="1"),
        [
            "ORDER_RATE_EXCEEDED",
            "ORDER_NOTIONAL_ABOVE_MAX",
            "OPEN_ORDERS_EXCEEDED",
            "POSITION_LIMIT_EXCEEDED",
        ],
    ),
]


@pytest.mark.parametrize(
    ("limits", "prime", "req", "expected"),
    [case[1:] for case in MAIN_CASES],
    ids=[case[0] for case in MAIN_CASES],
)
def test_main_stage_table(
    limits: RiskLimits, prime: Any, req: RiskRequest, expected: list[str]
) -> None:
    book = RiskBook(limits, clock=FakeClock())
    prime(book)
    before = book.snapshot()
    assert list(book.check(req).codes) == expected
    assert book.snapshot() == before  # check() holds nothing
    result = book.reserve(req)
    if expected:
        assert list(codes(result)) == expected
        assert book.snapshot() == before  # a reject holds nothing
    else:
        assert isinstance(result, Reservation)
        assert result.state is ReservationState.RESERVED


def test_every_main_code_is_covered_by_the_table() -> None:
    covered = {code for case in MAIN_CASES for code in case[4]}
    assert covered == {
        "ORDER_RATE_EXCEEDED",
        "ORDER_NOTIONAL_ABOVE_MAX",
        "NOTIONAL_UNKNOWN",
        "QUANTITY_UNKNOWN",
        "OPEN_ORDERS_EXCEEDED",
        "POSITION_LIMIT_EXCEEDED",
    }


# --------------------------------------------------------------------------- life of a reservation


def test_reserve_commit_fill_release_moves_the_position() -> None:
    book = RiskBook(UNLIMITED, clock=FakeClock())
    r = reserved(book, request(qty="3", coid="o1"))
    assert book.exposure("acct", "BTCUSDT") == Exposure(open_buy_qty=D(3))
    assert book.open_orders("acct") == 1
    assert book.find("o1") is None  # only committed reservations are indexed
    r.commit()
    assert book.find("o1") is r
    r.record_fill(D(1))
    r.record_fill(D(1))  # cumulative: a repeat is harmless
    assert book.exposure("acct", "BTCUSDT") == Exposure(position=D(1), open_buy_qty=D(2))
    assert (r.executed_qty, r.open_qty) == (D(1), D(2))
    r.release(filled_qty=D("2.5"))
    assert r.state is ReservationState.RELEASED
    assert book.exposure("acct", "BTCUSDT") == Exposure(position=D("2.5"))
    assert book.open_orders("acct") == 0
    assert book.find("o1") is None
    r.release(filled_qty=D("2.5"))  # idempotent
    with pytest.raises(ReservationStateError, match=r"released with filled_qty=2\.5"):
        r.release(filled_qty=D(3))


def test_cancel_without_fill_releases_all_exposure_but_keeps_the_rate_slot() -> None:
    clock = FakeClock()
    book = RiskBook(RiskLimits(max_orders_per_window=1, order_window_s=10.0), clock=clock)
    r = reserved(book, request(side="SELL", qty="2"))
    r.commit()
    r.release(filled_qty=D(0))
    assert book.snapshot() == {"acct": {"open_orders": 0, "order_times": [0.0], "symbols": {}}}
    assert codes(book.reserve(request())) == ("ORDER_RATE_EXCEEDED",)
    clock.now = 9.999
    assert codes(book.reserve(request())) == ("ORDER_RATE_EXCEEDED",)
    clock.now = 10.0  # [0, 10): the slot has left the window
    reserved(book, request())


def test_sell_fills_move_the_position_down() -> None:
    book = RiskBook(UNLIMITED, clock=FakeClock())
    book.set_position("acct", "BTCUSDT", D(5))
    r = reserved(book, request(side="SELL", qty="2"))
    r.commit()
    r.release(filled_qty=D(2))
    assert book.position("acct", "BTCUSDT") == D(3)


def test_rollback_restores_exact_state_and_frees_the_rate_slot() -> None:
    book = RiskBook(RiskLimits(max_orders_per_window=1, max_position_qty=D(1)), clock=FakeClock())
    empty = book.snapshot()
    r = reserved(book, request(qty="1"))
    assert codes(book.reserve(request(qty="1"))) == (
        "ORDER_RATE_EXCEEDED",
        "POSITION_LIMIT_EXCEEDED",
    )
    r.rollback()
    assert book.snapshot() == empty == {}
    reserved(book, request(qty="1"))


def test_transition_errors_and_idempotency() -> None:
    book = RiskBook(UNLIMITED, clock=FakeClock())
    r = reserved(book, request())
    with pytest.raises(ReservationStateError, match="cannot release a RESERVED"):
        r.release(filled_qty=D(0))
    with pytest.raises(ReservationStateError, match="cannot record fills on a RESERVED"):
        r.record_fill(D(0))
    r.commit()
    after_commit = book.snapshot()
    r.commit()
    assert book.snapshot() == after_commit
    with pytest.raises(ReservationStateError, match="cannot roll back a COMMITTED"):
        r.rollback()
    assert book.snapshot() == after_commit and r.state is ReservationState.COMMITTED
    r.release(filled_qty=D(0))
    r.commit()  # still a no-op: it was committed
    with pytest.raises(ReservationStateError, match="cannot roll back a RELEASED"):
        r.rollback()

    other = reserved(book, request(coid="c2"))
    other.rollback()
    other.rollback()
    with pytest.raises(ReservationStateError, match="cannot commit a ROLLED_BACK"):
        other.commit()
    with pytest.raises(ReservationStateError, match="ROLLED_BACK"):
        other.release(filled_qty=D(0))
    assert isinstance(ReservationStateError("x"), PermanentError)


def test_transition_table_shape() -> None:
    assert TRANSITIONS[ReservationState.RESERVED] == {
        ReservationState.COMMITTED,
        ReservationState.ROLLED_BACK,
    }
    assert TRANSITIONS[ReservationState.COMMITTED] == {ReservationState.RELEASED}
    assert not TRANSITIONS[ReservationState.ROLLED_BACK]
    assert not TRANSITIONS[ReservationState.RELEASED]


def test_fill_quantities_are_validated() -> None:
    book = RiskBook(UNLIMITED, clock=FakeClock())
    r = reserved(book, request(qty="2"))
    r.commit()
    r.record_fill(D(1))
    before = book.snapshot()
    with pytest.raises(ValueError, match="cumulative"):
        r.record_fill(D("0.5"))
    with pytest.raises(ValueError, match="exceeds"):
        r.record_fill(D("2.1"))
    with pytest.raises(ValueError, match="finite"):
        r.release(filled_qty=D("NaN"))
    assert book.snapshot() == before and r.state is ReservationState.COMMITTED


def test_estimated_quote_order_may_fill_beyond_its_estimate() -> None:
    book = RiskBook(UNLIMITED, clock=FakeClock())
    r = reserved(book, request(type="MARKET", qty=None, quote="200", reference="100"))
    assert (r.quantity, r.quantity_estimated) == (D(2), True)
    r.commit()
    r.release(filled_qty=D("2.2"))  # the price fell while it filled
    assert book.exposure("acct", "BTCUSDT") == Exposure(position=D("2.2"))


def test_a_client_order_id_commits_once() -> None:
    book = RiskBook(UNLIMITED, clock=FakeClock())
    first = reserved(book, request(coid="same"))
    second = reserved(book, request(coid="same"))  # a racing duplicate message
    first.commit()
    with pytest.raises(ReservationStateError, match="already has a committed reservation"):
        second.commit()
    assert second.state is ReservationState.RESERVED
    second.rollback()
    assert book.open_orders("acct") == 1
    first.release(filled_qty=D(0))
    third = reserved(book, request(coid="same"))  # the id is free again once released
    third.commit()


def test_restore_rebuilds_live_orders_without_checks_or_rate_slots() -> None:
    limits = RiskLimits(max_orders_per_window=1, max_open_orders=1, max_position_qty=D(1))
    book = RiskBook(limits, clock=FakeClock())
    book.set_position("acct", "BTCUSDT", D("0.5"))
    r1 = book.restore(request(qty="2", coid="live1"), executed_qty=D("0.5"))
    r2 = book.restore(request(side="SELL", qty="1", coid="live2"))
    assert r1.state is ReservationState.COMMITTED and book.find("live1") is r1
    assert book.exposure("acct", "BTCUSDT") == Exposure(
        position=D("0.5"), open_buy_qty=D("1.5"), open_sell_qty=D(1)
    )
    assert (r1.executed_qty, r1.open_qty) == (D("0.5"), D("1.5"))
    assert book.orders_in_window("acct") == 0
    assert codes(book.reserve(request(side="SELL", qty="0.1"))) == ("OPEN_ORDERS_EXCEEDED",)
    with pytest.raises(ReservationStateError):
        book.restore(request(coid="live1"))
    with pytest.raises(ValueError, match="executed_qty"):
        book.restore(request(coid="x", qty="1"), executed_qty=D(2))
    with pytest.raises(ValueError, match="quantity unknown"):
        book.restore(request(coid="y", type="MARKET", qty=None, quote="5"))
    r1.release(filled_qty=D(2))
    r2.release(filled_qty=D(0))
    assert book.snapshot() == {
        "acct": {
            "open_orders": 0,
            "order_times": [],
            "symbols": {"BTCUSDT": {"position": "2", "open_buy_qty": "0", "open_sell_qty": "0"}},
        }
    }


def test_set_position_validates_and_tidies() -> None:
    book = RiskBook(UNLIMITED, clock=FakeClock())
    book.set_position("acct", "BTCUSDT", D("1.50"))
    assert book.snapshot()["acct"]["symbols"]["BTCUSDT"]["position"] == "1.5"
    book.set_position("acct", "BTCUSDT", D(0))
    assert book.snapshot() == {}
    with pytest.raises(ValueError):
        book.set_position("acct", "BTCUSDT", D("Infinity"))


def test_set_limits_applies_to_new_reservations_only() -> None:
    book = RiskBook(RiskLimits(max_open_orders=2), clock=FakeClock())
    a = reserved(book, request(coid="a"))
    reserved(book, request(coid="b"))
    book.set_limits(RiskLimits(max_open_orders=1))
    assert book.limits.default.max_open_orders == 1
    assert codes(book.reserve(request())) == ("OPEN_ORDERS_EXCEEDED",)
    a.commit()  # existing reservations live on
    a.release(filled_qty=D(0))
    assert codes(book.reserve(request())) == ("OPEN_ORDERS_EXCEEDED",)


def test_clock_stepping_back_is_treated_as_standing_still() -> None:
    clock = FakeClock(100.0)
    book = RiskBook(RiskLimits(max_orders_per_window=1, order_window_s=10.0), clock=clock)
    reserved(book, request())
    clock.now = 50.0
    assert book.now() == 100.0
    assert codes(book.reserve(request())) == ("ORDER_RATE_EXCEEDED",)
    clock.now = 110.0
    reserved(book, request())


# --------------------------------------------------------------------------- both stages


def test_pre_trade_risk_reports_both_stages_and_reserves_only_when_clean() -> None:
    states = TradingStates()
    book = RiskBook(RiskLimits(max_order_notional=D(50)), clock=FakeClock())
    risk = PreTradeRisk(book, states)
    result = risk.submit(request(price="100.005"), BTC)
    assert codes(result) == ("PRICE_TICK", "ORDER_NOTIONAL_ABOVE_MAX")
    assert book.snapshot() == {}
    states.halt("acct")
    assert codes(risk.submit(request(qty="0.4"), BTC)) == ("ACCOUNT_HALTED",)
    states.resume("acct")
    ok = risk.submit(request(qty="0.4"), BTC)
    assert isinstance(ok, Reservation)
    assert risk.evaluate(request(qty="0.4"), BTC).accepted


def test_halting_never_touches_accepted_reservations() -> None:
    states = TradingStates()
    book = RiskBook(UNLIMITED, clock=FakeClock())
    risk = PreTradeRisk(book, states)
    pending = risk.submit(request(coid="a"), BTC)
    committed = risk.submit(request(coid="b"), BTC)
    assert isinstance(pending, Reservation) and isinstance(committed, Reservation)
    committed.commit()
    states.halt()
    states.halt("acct")
    assert codes(risk.submit(request(coid="c"), BTC)) == ("TRADING_HALTED", "ACCOUNT_HALTED")
    pending.commit()
    committed.record_fill(D("0.5"))
    committed.release(filled_qty=D(1))
    pending.release(filled_qty=D(0))
    assert book.position("acct", "BTCUSDT") == D(1)


def test_reducing_uses_the_books_open_orders() -> None:
    states = TradingStates()
    book = RiskBook(UNLIMITED, clock=FakeClock())
    risk = PreTradeRisk(book, states)
    book.set_position("acct", "BTCUSDT", D(2))
    states.reduce_only()
    first = risk.submit(request(side="SELL", qty="1.5", coid="s1"), BTC)
    assert isinstance(first, Reservation)
    # 1.5 already on its way out: another 1 could flip the long.
    assert codes(risk.submit(request(side="SELL", qty="1", coid="s2"), BTC)) == (
        "REDUCE_ONLY_VIOLATION",
    )
    first.rollback()
    assert isinstance(risk.submit(request(side="SELL", qty="1", coid="s2"), BTC), Reservation)


# --------------------------------------------------------------------------- properties

ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "commit", "rollback", "fill", "release"]),
        st.sampled_from(Side),
        st.integers(1, 6),  # quantity, or which live reservation
        st.integers(0, 100),  # fill fraction in percent
    ),
    max_size=40,
)


def drive_one(live: list[Reservation], kind: str, n: int, pct: int) -> list[Reservation]:
    """Apply one non-reserve action to a live reservation; return those still live."""
    if not live:
        return live
    r = live[n % len(live)]
    if kind == "commit" and r.state is ReservationState.RESERVED:
        r.commit()
    elif kind == "rollback" and r.state is ReservationState.RESERVED:
        r.rollback()
        return [x for x in live if x is not r]
    elif kind in ("fill", "release") and r.state is ReservationState.COMMITTED:
        executed = max(r.executed_qty, (r.quantity * pct / 100).quantize(D("0.01")))
        if kind == "fill":
            r.record_fill(executed)
        else:
            r.release(filled_qty=executed)
            return [x for x in live if x is not r]
    return live


def drive(book: RiskBook, actions: list[tuple[str, Side, int, int]]) -> list[Reservation]:
    """Apply ``actions`` to ``book``; return the reservations still live."""
    live: list[Reservation] = []
    for number, (kind, side, n, pct) in enumerate(actions):
        if kind == "reserve":
            result = book.reserve(
                request(side=side.value, qty=str(n), price="10", coid=f"c{number}")
            )
            if isinstance(result, Reservation):
                live.append(result)
        else:
            live = drive_one(live, kind, n, pct)
    return live


@settings(max_examples=150, deadline=None)
@given(
    max_position=st.integers(0, 12),
    start=st.integers(-12, 12),
    actions=ACTIONS,
)
def test_reservations_never_let_position_plus_open_exposure_pass_the_limit(
    max_position: int, start: int, actions: list[tuple[str, Side, int, int]]
) -> None:
    limits = RiskLimits(
        max_orders_per_window=None, max_open_orders=None, max_position_qty=D(max_position)
    )
    book = RiskBook(limits, clock=FakeClock())
    start_position = max(-max_position, min(max_position, start))
    book.set_position("acct", "BTCUSDT", D(start_position))
    limit = D(max_position)
    live: list[Reservation] = []
    for number, (kind, side, n, pct) in enumerate(actions):
        before = book.exposure("acct", "BTCUSDT")
        if kind == "reserve":
            req = request(side=side.value, qty=str(n), price="10", coid=f"c{number}")
            result = book.reserve(req)
            if side is Side.BUY:
                extent = before.position + before.open_buy_qty + n
            else:
                extent = before.open_sell_qty + n - before.position
            # Rejected exactly when it could breach: never too lax, never too strict.
            assert isinstance(result, Reservation) is (extent <= limit)
            if isinstance(result, Reservation):
                live.append(result)
        else:
            live = drive_one(live, kind, n, pct)
        e = book.exposure("acct", "BTCUSDT")
        assert e.position + e.open_buy_qty <= limit
        assert e.open_sell_qty - e.position <= limit


@settings(max_examples=150, deadline=None)
@given(
    actions=ACTIONS,
    side=st.sampled_from(Side),
    qty=st.integers(1, 6),
    commit_first=st.booleans(),
    max_position=st.one_of(st.none(), st.integers(0, 30)),
)
def test_rollback_restores_the_exact_previous_state(
    actions: list[tuple[str, Side, int, int]],
    side: Side,
    qty: int,
    commit_first: bool,
    max_position: int | None,
) -> None:
    limits = RiskLimits(
        max_orders_per_window=30,
        max_open_orders=30,
        max_position_qty=None if max_position is None else D(max_position),
    )
    book = RiskBook(limits, clock=FakeClock())
    drive(book, actions)
    before = book.snapshot()
    result = book.reserve(request(side=side.value, qty=str(qty), price="10", coid="probe"))
    if not isinstance(result, Reservation):
        assert book.snapshot() == before
        return
    assert book.snapshot() != before
    result.rollback()
    assert book.snapshot() == before
    result.rollback()  # idempotent
    assert book.snapshot() == before
    with pytest.raises(ReservationStateError):
        result.commit()
    assert book.snapshot() == before


@settings(max_examples=100, deadline=None)
@given(actions=ACTIONS, repeats=st.integers(1, 3))
def test_commit_is_idempotent(actions: list[tuple[str, Side, int, int]], repeats: int) -> None:
    book = RiskBook(UNLIMITED, clock=FakeClock())
    drive(book, actions)
    r = reserved(book, request(coid="probe"))
    r.commit()
    after = book.snapshot()
    for _ in range(repeats):
        r.commit()
        assert book.snapshot() == after
        with pytest.raises(ReservationStateError):
            r.rollback()
        assert book.snapshot() == after
    assert r.state is ReservationState.COMMITTED


RATE_STEPS = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0, 2.5, 7.75]),  # clock advance, exact in binary
        st.sampled_from(["reserve", "reserve", "reserve", "rollback", "commit"]),
        st.integers(0, 100),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 4),
    window_s=st.sampled_from([0.5, 1.0, 2.5, 10.0]),
    steps=RATE_STEPS,
)
def test_order_rate_never_exceeds_the_limit_in_any_window(
    limit: int, window_s: float, steps: list[tuple[float, str, int]]
) -> None:
    clock = FakeClock()
    book = RiskBook(
        RiskLimits(max_orders_per_window=limit, order_window_s=window_s, max_open_orders=None),
        clock=clock,
    )
    model: list[tuple[float, Reservation]] = []  # admitted and not rolled back
    for number, (advance, kind, pick) in enumerate(steps):
        clock.now += advance
        now = clock.now
        if kind == "reserve":
            in_window = sum(1 for at, _ in model if at > now - window_s)
            result = book.reserve(request(coid=f"c{number}"))
            assert isinstance(result, Reservation) is (in_window < limit)
            if isinstance(result, Reservation):
                model.append((now, result))
            else:
                assert result.codes == ("ORDER_RATE_EXCEEDED",)
        elif model:
            at, r = model[pick % len(model)]
            if kind == "rollback" and r.state is ReservationState.RESERVED:
                r.rollback()
                model.remove((at, r))
            elif kind == "commit":
                r.commit()
        assert book.orders_in_window("acct") == sum(1 for at, _ in model if at > now - window_s)
        # No half-open window [s, s + window_s) ever holds more than ``limit`` orders.
        times = sorted(at for at, _ in model)
        for i, start in enumerate(times):
            assert sum(1 for t in times[i:] if t < start + window_s) <= limit
