"""The start stage: venue filters, symbol status and trading state, every reason at once."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.errors import PermanentError
from daemon.model import Side, SymbolInfo
from daemon.risk import (
    Exposure,
    RiskDecision,
    RiskReason,
    RiskRejectedError,
    RiskRequest,
    TradingStates,
    check_start,
)
from tests.helpers.risk import BTC, D, order, request

NOT_TRADING = attrs.evolve(BTC, status="BREAK")
LIMIT_ONLY = attrs.evolve(BTC, order_types=frozenset({"LIMIT"}))
ETH = attrs.evolve(BTC, symbol="ETHUSDT")
#: Binance's BTCUSDT price bands (PERCENT_PRICE_BY_SIDE): 0.2x..5x the reference on each side.
BANDED = attrs.evolve(
    BTC,
    filters=attrs.evolve(
        BTC.filters,
        bid_multiplier_up=D("5"),
        bid_multiplier_down=D("0.2"),
        ask_multiplier_up=D("5"),
        ask_multiplier_down=D("0.2"),
        percent_price_by_side_avg_mins=5,
    ),
)

Setup = Callable[[TradingStates], None]


def nothing(_: TradingStates) -> None:
    pass


def halt_all(states: TradingStates) -> None:
    states.halt()


def halt_acct(states: TradingStates) -> None:
    states.halt("acct")


def halt_both(states: TradingStates) -> None:
    states.halt()
    states.halt("acct")


def reduce_acct(states: TradingStates) -> None:
    states.reduce_only("acct")


def reduce_all(states: TradingStates) -> None:
    states.reduce_only()


def halt_other(states: TradingStates) -> None:
    states.halt("other")


LONG_2 = Exposure(position=D(2))
SHORT_2 = Exposure(position=D(-2))

# (id, request, symbol info, state setup, exposure, expected codes in order)
CASES: list[tuple[str, RiskRequest, SymbolInfo | None, Setup, Exposure, list[str]]] = [
    ("valid limit", request(), BTC, nothing, Exposure(), []),
    ("unknown symbol", request(), None, nothing, Exposure(), ["UNKNOWN_SYMBOL"]),
    ("symbol mismatch", request(), ETH, nothing, Exposure(), ["SYMBOL_MISMATCH"]),
    ("not trading", request(), NOT_TRADING, nothing, Exposure(), ["SYMBOL_NOT_TRADING"]),
    (
        "order type not allowed",
        request(type="LIMIT_MAKER"),
        LIMIT_ONLY,
        nothing,
        Exposure(),
        ["ORDER_TYPE_NOT_ALLOWED"],
    ),
    ("price tick", request(price="100.005"), BTC, nothing, Exposure(), ["PRICE_TICK"]),
    (
        "price below min",
        request(price="0.5", qty="20"),
        BTC,
        nothing,
        Exposure(),
        ["PRICE_BELOW_MIN"],
    ),
    ("price above max", request(price="100001"), BTC, nothing, Exposure(), ["PRICE_ABOVE_MAX"]),
    (
        "stop price below min",
        request(type="STOP_LOSS_LIMIT", stop="0.5"),
        BTC,
        nothing,
        Exposure(),
        ["STOP_PRICE_BELOW_MIN"],
    ),
    (
        "stop price above max",
        request(type="STOP_LOSS_LIMIT", stop="200000"),
        BTC,
        nothing,
        Exposure(),
        ["STOP_PRICE_ABOVE_MAX"],
    ),
    (
        "stop price tick",
        request(type="STOP_LOSS_LIMIT", stop="99.999"),
        BTC,
        nothing,
        Exposure(),
        ["STOP_PRICE_TICK"],
    ),
    (
        "qty below min",
        request(qty="0.0005", price="20000"),
        BTC,
        nothing,
        Exposure(),
        ["QTY_BELOW_MIN", "QTY_STEP"],
    ),
    ("qty above max", request(qty="101", price="10"), BTC, nothing, Exposure(), ["QTY_ABOVE_MAX"]),
    ("qty step", request(qty="1.0005"), BTC, nothing, Exposure(), ["QTY_STEP"]),
    (
        "notional below min",
        request(qty="0.01", price="100"),
        BTC,
        nothing,
        Exposure(),
        ["NOTIONAL_BELOW_MIN"],
    ),
    (
        "notional above max",
        request(qty="100", price="20000"),
        BTC,
        nothing,
        Exposure(),
        ["NOTIONAL_ABOVE_MAX"],
    ),
    # MARKET orders: the market lot rules; notional only with a reference price.
    ("market ok", request(type="MARKET", qty="1", reference="100"), BTC, nothing, Exposure(), []),
    (
        "market qty uses MARKET_LOT_SIZE",
        request(type="MARKET", qty="11"),
        BTC,
        nothing,
        Exposure(),
        ["QTY_ABOVE_MAX"],
    ),
    (
        "market qty step of MARKET_LOT_SIZE",
        request(type="MARKET", qty="1.005"),
        BTC,
        nothing,
        Exposure(),
        ["QTY_STEP"],
    ),
    (
        "market notional below min at the reference price",
        request(type="MARKET", qty="0.01", reference="100"),
        BTC,
        nothing,
        Exposure(),
        ["NOTIONAL_BELOW_MIN"],
    ),
    (
        "market notional unchecked without a reference price",
        request(type="MARKET", qty="0.01"),
        BTC,
        nothing,
        Exposure(),
        [],
    ),
    (
        "market max notional not applied to market",
        request(type="MARKET", qty="10", reference="200000"),
        BTC,
        nothing,
        Exposure(),
        [],
    ),
    (
        "quote order qty below min notional",
        request(type="MARKET", qty=None, quote="4"),
        BTC,
        nothing,
        Exposure(),
        ["NOTIONAL_BELOW_MIN"],
    ),
    (
        "quote order qty ok",
        request(type="MARKET", qty=None, quote="50"),
        BTC,
        nothing,
        Exposure(),
        [],
    ),
    # Price bands around the reference price (orders with a limit price only).
    ("inside the band", request(price="500", reference="100"), BANDED, nothing, Exposure(), []),
    (
        "buy far above the reference price",
        request(price="20000", reference="100"),
        BANDED,
        nothing,
        Exposure(),
        ["PRICE_ABOVE_BAND"],
    ),
    (
        "sell far below the reference price",
        request(side="SELL", price="19.99", reference="100"),
        BANDED,
        nothing,
        Exposure(),
        ["PRICE_BELOW_BAND"],
    ),
    (
        "band unchecked without a reference price",
        request(price="20000"),
        BANDED,
        nothing,
        Exposure(),
        [],
    ),
    (
        "market order has no price to band",
        request(type="MARKET", qty="1", reference="100"),
        BANDED,
        nothing,
        Exposure(),
        [],
    ),
    (
        "band with other filter problems",
        request(price="20000.005", reference="100"),
        BANDED,
        nothing,
        Exposure(),
        ["PRICE_TICK", "PRICE_ABOVE_BAND"],
    ),
    # Trading state.
    ("global halt", request(), BTC, halt_all, Exposure(), ["TRADING_HALTED"]),
    ("account halt", request(), BTC, halt_acct, Exposure(), ["ACCOUNT_HALTED"]),
    ("both halts", request(), BTC, halt_both, Exposure(), ["TRADING_HALTED", "ACCOUNT_HALTED"]),
    ("another account halted", request(), BTC, halt_other, Exposure(), []),
    (
        "halt reported with filter problems",
        request(price="100.005", qty="1.0005"),
        NOT_TRADING,
        halt_acct,
        Exposure(),
        ["SYMBOL_NOT_TRADING", "PRICE_TICK", "QTY_STEP", "ACCOUNT_HALTED"],
    ),
    ("reducing: buy from flat", request(), BTC, reduce_acct, Exposure(), ["REDUCE_ONLY_VIOLATION"]),
    ("reducing: buy adds to long", request(), BTC, reduce_acct, LONG_2, ["REDUCE_ONLY_VIOLATION"]),
    ("reducing: sell reduces long", request(side="SELL"), BTC, reduce_acct, LONG_2, []),
    (
        "reducing: sell closes long exactly",
        request(side="SELL", qty="2"),
        BTC,
        reduce_acct,
        LONG_2,
        [],
    ),
    (
        "reducing: sell would flip long",
        request(side="SELL", qty="2.001"),
        BTC,
        reduce_acct,
        LONG_2,
        ["REDUCE_ONLY_VIOLATION"],
    ),
    (
        "reducing: open sells count against the flip",
        request(side="SELL", qty="1.5"),
        BTC,
        reduce_acct,
        Exposure(position=D(2), open_sell_qty=D("0.6")),
        ["REDUCE_ONLY_VIOLATION"],
    ),
    (
        "reducing: open buys do not help a sell",
        request(side="SELL", qty="1"),
        BTC,
        reduce_acct,
        Exposure(position=D(2), open_buy_qty=D(5), open_sell_qty=D(1)),
        [],
    ),
    ("reducing: buy reduces short", request(), BTC, reduce_all, SHORT_2, []),
    (
        "reducing: buy flips short",
        request(qty="3"),
        BTC,
        reduce_all,
        SHORT_2,
        ["REDUCE_ONLY_VIOLATION"],
    ),
    (
        "reducing: sell adds to short",
        request(side="SELL"),
        BTC,
        reduce_all,
        SHORT_2,
        ["REDUCE_ONLY_VIOLATION"],
    ),
    (
        "reducing: quote order with a reference price",
        request(type="MARKET", side="SELL", qty=None, quote="150", reference="100"),
        BTC,
        reduce_acct,
        LONG_2,
        [],
    ),
    (
        "reducing: quote order too large at the reference price",
        request(type="MARKET", side="SELL", qty=None, quote="250", reference="100"),
        BTC,
        reduce_acct,
        LONG_2,
        ["REDUCE_ONLY_VIOLATION"],
    ),
    (
        "reducing: quote order without a reference price",
        request(type="MARKET", side="SELL", qty=None, quote="50"),
        BTC,
        reduce_acct,
        LONG_2,
        ["REDUCE_ONLY_VIOLATION"],
    ),
    ("halt wins over reducing", request(side="SELL"), BTC, halt_all, LONG_2, ["TRADING_HALTED"]),
]


@pytest.mark.parametrize(
    ("req", "info", "setup", "exposure", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_start_stage_table(
    req: RiskRequest,
    info: SymbolInfo | None,
    setup: Setup,
    exposure: Exposure,
    expected: list[str],
) -> None:
    states = TradingStates()
    setup(states)
    decision = check_start(req, info, states=states, exposure=exposure)
    assert list(decision.codes) == expected
    assert decision.accepted is (not expected)
    assert all(reason.message for reason in decision.reasons)


def test_every_start_code_is_covered_by_the_table() -> None:
    covered = {code for case in CASES for code in case[5]}
    assert covered >= {
        "UNKNOWN_SYMBOL",
        "SYMBOL_MISMATCH",
        "SYMBOL_NOT_TRADING",
        "ORDER_TYPE_NOT_ALLOWED",
        "PRICE_TICK",
        "PRICE_BELOW_MIN",
        "PRICE_ABOVE_MAX",
        "STOP_PRICE_TICK",
        "STOP_PRICE_BELOW_MIN",
        "STOP_PRICE_ABOVE_MAX",
        "QTY_STEP",
        "QTY_BELOW_MIN",
        "QTY_ABOVE_MAX",
        "NOTIONAL_BELOW_MIN",
        "NOTIONAL_ABOVE_MAX",
        "PRICE_ABOVE_BAND",
        "PRICE_BELOW_BAND",
        "TRADING_HALTED",
        "ACCOUNT_HALTED",
        "REDUCE_ONLY_VIOLATION",
    }


def test_filter_reasons_keep_the_filter_type() -> None:
    decision = check_start(request(price="100.005"), BTC, states=TradingStates())
    assert decision.reasons == (
        RiskReason(
            "PRICE_TICK", "price 100.005 is not a multiple of the tick size 0.01", "PRICE_FILTER"
        ),
    )
    assert decision.reasons[0].to_json() == {
        "code": "PRICE_TICK",
        "message": "price 100.005 is not a multiple of the tick size 0.01",
        "filter_type": "PRICE_FILTER",
    }
    halted = TradingStates()
    halted.halt()
    reason = check_start(request(), BTC, states=halted).reasons[0]
    assert reason.to_json() == {"code": "TRADING_HALTED", "message": reason.message}


def test_band_reason_names_the_filter_and_the_numbers() -> None:
    decision = check_start(request(price="20000", reference="100"), BANDED, states=TradingStates())
    assert decision.reasons == (
        RiskReason(
            "PRICE_ABOVE_BAND",
            "BUY price 20000 is above 500 = 5 x the reference price 100 (PERCENT_PRICE_BY_SIDE)",
            "PERCENT_PRICE_BY_SIDE",
        ),
    )
    assert not decision.accepted


def test_check_start_reads_states_and_never_changes_them() -> None:
    states = TradingStates()
    states.halt("acct", reason="x")
    before = states.snapshot()
    check_start(request(), BTC, states=states)
    assert states.snapshot() == before


def test_decision_and_error() -> None:
    accepted = RiskDecision.accept()
    assert accepted.accepted and not accepted.rejected and accepted.codes == ()
    accepted.raise_if_rejected()  # no-op
    reasons = [RiskReason("A", "first"), RiskReason("B", "second")]
    rejected = RiskDecision.reject(reasons)
    assert rejected.rejected and rejected.codes == ("A", "B")
    with pytest.raises(RiskRejectedError) as info:
        rejected.raise_if_rejected()
    assert isinstance(info.value, PermanentError)
    assert info.value.codes == ("A", "B")
    assert info.value.reasons == tuple(reasons)
    assert "A: first; B: second" in str(info.value)
    assert (accepted + rejected).codes == ("A", "B")
    with pytest.raises(ValueError, match="at least one"):
        RiskDecision.reject([])


def test_request_validation_and_derived_amounts() -> None:
    with pytest.raises(ValueError, match="account"):
        RiskRequest(account="", order=order())
    with pytest.raises(ValueError, match="reference_price"):
        RiskRequest(account="a", order=order(), reference_price=D(0))
    limit = request(qty="2", price="100")
    assert (limit.base_quantity, limit.notional, limit.quantity_estimated) == (D(2), D(200), False)
    market = request(type="MARKET", qty="2")
    assert (market.base_quantity, market.notional) == (D(2), None)
    assert request(type="MARKET", qty="2", reference="50").notional == D(100)
    quote = request(type="MARKET", qty=None, quote="150")
    assert (quote.base_quantity, quote.notional, quote.quantity_estimated) == (None, D(150), True)
    assert request(type="MARKET", qty=None, quote="150", reference="100").base_quantity == D("1.5")
    # A stop order is judged at the larger of its stop price and the reference price.
    stop = request(type="STOP_LOSS", qty="2", stop="90")
    assert stop.notional == D(180)
    assert request(type="STOP_LOSS", qty="2", stop="90", reference="95").notional == D(190)
    assert request(type="STOP_LOSS", qty="2", stop="90", reference="85").notional == D(180)


def test_exposure_worst_case_and_reduces() -> None:
    exposure = Exposure(position=D(3), open_buy_qty=D(1), open_sell_qty=D(2))
    assert exposure.worst_case(Side.BUY, D(1)) == D(5)
    assert exposure.worst_case(Side.SELL, D(1)) == D(0)
    assert exposure.reduces(Side.SELL, D(1))
    assert not exposure.reduces(Side.SELL, D("1.01"))
    assert not exposure.reduces(Side.BUY, D(1))
    assert not Exposure().reduces(Side.SELL, D(1))


@settings(max_examples=200, deadline=None)
@given(
    position=st.integers(-50, 50),
    open_same=st.integers(0, 20),
    qty=st.integers(1, 40),
    side=st.sampled_from(Side),
)
def test_reducing_accepts_exactly_the_orders_that_cannot_flip(
    position: int, open_same: int, qty: int, side: Side
) -> None:
    states = TradingStates()
    states.reduce_only("acct")
    if side is Side.BUY:
        exposure = Exposure(position=Decimal(position), open_buy_qty=Decimal(open_same))
        ok = position < 0 and position + open_same + qty <= 0
    else:
        exposure = Exposure(position=Decimal(position), open_sell_qty=Decimal(open_same))
        ok = position > 0 and position - open_same - qty >= 0
    req = request(side=side.value, qty=str(qty), price="10")
    decision = check_start(req, BTC, states=states, exposure=exposure)
    assert decision.accepted is ok
    assert decision.codes in ((), ("REDUCE_ONLY_VIOLATION",))
