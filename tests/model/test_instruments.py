"""Symbol filters (Binance's documented rules), rounding, rate-limit rules."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, ROUND_UP, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.model import (
    NewOrder,
    OrderType,
    RateLimitInterval,
    RateLimitRule,
    RateLimitType,
    Side,
    SymbolFilters,
    SymbolInfo,
    TimeInForce,
)
from tests.helpers.instruments import trading_symbol

D = Decimal

FILTERS = SymbolFilters(
    tick_size=D("0.01"),
    min_price=D("0.01"),
    max_price=D("1000000"),
    step_size=D("0.001"),
    min_qty=D("0.001"),
    max_qty=D("9000"),
    min_notional=D("5"),
    apply_min_to_market=True,
    max_notional=D("9000000"),
    apply_max_to_market=False,
)
BTC = trading_symbol(FILTERS, order_types={"LIMIT", "MARKET", "LIMIT_MAKER"})


def limit(qty: str, price: str, symbol: str = "BTCUSDT") -> NewOrder:
    return NewOrder(
        symbol=symbol,
        side=Side.BUY,
        type=OrderType.LIMIT,
        client_order_id="t1",
        quantity=D(qty),
        price=D(price),
        time_in_force=TimeInForce.GTC,
    )


def codes(problems: tuple[object, ...]) -> list[str]:
    return [p.code for p in problems]  # type: ignore[attr-defined]


def test_a_valid_order_has_no_problems() -> None:
    assert BTC.check_order(limit("0.010", "30000.01")) == ()


@pytest.mark.parametrize(
    ("qty", "price", "expected", "filter_type"),
    [
        ("0.010", "30000.015", ["PRICE_TICK"], "PRICE_FILTER"),
        ("0.010", "0.001", ["PRICE_BELOW_MIN", "PRICE_TICK", "NOTIONAL_BELOW_MIN"], "PRICE_FILTER"),
        ("0.001", "2000000", ["PRICE_ABOVE_MAX"], "PRICE_FILTER"),
        ("0.0105", "30000", ["QTY_STEP"], "LOT_SIZE"),
        ("0.0005", "30000", ["QTY_BELOW_MIN", "QTY_STEP"], "LOT_SIZE"),
        ("9001", "1", ["QTY_ABOVE_MAX"], "LOT_SIZE"),
        ("0.001", "100", ["NOTIONAL_BELOW_MIN"], "NOTIONAL"),
        ("8999", "999999", ["NOTIONAL_ABOVE_MAX"], "NOTIONAL"),
    ],
)
def test_filter_failures_are_coded(
    qty: str, price: str, expected: list[str], filter_type: str
) -> None:
    problems = BTC.check_order(limit(qty, price))
    assert codes(problems) == expected
    assert problems[0].filter_type == filter_type
    assert all(p.message for p in problems)


def test_lot_size_grid_counts_from_min_qty() -> None:
    # Binance: (quantity - minQty) % stepSize == 0
    odd = SymbolFilters(step_size=D("0.01"), min_qty=D("0.005"))
    assert odd.check(order_type=OrderType.LIMIT, quantity=D("0.015"), price=None) == ()
    assert codes(odd.check(order_type=OrderType.LIMIT, quantity=D("0.01"), price=None)) == [
        "QTY_STEP"
    ]
    assert odd.round_quantity(D("0.0299")) == D("0.025")


def test_market_orders_use_market_lot_size_and_apply_switches() -> None:
    filters = SymbolFilters(
        step_size=D("0.001"),
        min_qty=D("0.001"),
        market_step_size=D("0.1"),
        market_min_qty=D("0.1"),
        market_max_qty=D("10"),
        min_notional=D("5"),
        apply_min_to_market=False,
        max_notional=D("100"),
        apply_max_to_market=True,
    )
    # Fine for LOT_SIZE, not for MARKET_LOT_SIZE.
    problems = filters.check(order_type=OrderType.MARKET, quantity=D("0.15"), price=None)
    assert codes(problems) == ["QTY_STEP"]
    assert problems[0].filter_type == "MARKET_LOT_SIZE"
    # Notional of a MARKET order is judged at the reference price, min not applied.
    assert (
        filters.check(
            order_type=OrderType.MARKET, quantity=D("0.1"), price=None, reference_price=D("1")
        )
        == ()
    )
    assert codes(
        filters.check(
            order_type=OrderType.MARKET, quantity=D("2"), price=None, reference_price=D("60")
        )
    ) == ["NOTIONAL_ABOVE_MAX"]
    # Without a reference price the notional of a MARKET order is not checked.
    assert filters.check(order_type=OrderType.MARKET, quantity=D("2"), price=None) == ()
    assert filters.round_quantity(D("0.37"), market=True) == D("0.3")


def test_symbol_level_problems_come_first() -> None:
    halted = SymbolInfo(
        symbol="ETHBTC",
        status="HALT",
        base_asset="ETH",
        quote_asset="BTC",
        order_types=frozenset({"MARKET"}),
        filters=FILTERS,
    )
    problems = halted.check_order(limit("0.010", "30000.01"))
    assert codes(problems) == ["SYMBOL_MISMATCH", "SYMBOL_NOT_TRADING", "ORDER_TYPE_NOT_ALLOWED"]
    assert not halted.is_trading and BTC.is_trading


def test_stop_price_is_checked_against_the_price_filter() -> None:
    order = NewOrder(
        symbol="BTCUSDT",
        side=Side.SELL,
        type=OrderType.STOP_LOSS_LIMIT,
        client_order_id="s1",
        quantity=D("0.01"),
        price=D("29000"),
        stop_price=D("29000.005"),
        time_in_force=TimeInForce.GTC,
    )
    info = trading_symbol(FILTERS)
    assert codes(info.check_order(order)) == ["STOP_PRICE_TICK"]


BANDED = SymbolFilters(
    tick_size=D("0.01"),
    multiplier_up=D("1.3"),
    multiplier_down=D("0.7"),
    percent_price_avg_mins=5,
    bid_multiplier_up=D("1.2"),
    bid_multiplier_down=D("0.2"),
    ask_multiplier_up=D("5"),
    ask_multiplier_down=D("0.8"),
    percent_price_by_side_avg_mins=5,
)


def bands(
    price: str, side: Side | None, reference: str | None = "100"
) -> list[tuple[str, str | None]]:
    problems = BANDED.check(
        order_type=OrderType.LIMIT,
        quantity=None,
        price=D(price),
        reference_price=D(reference) if reference is not None else None,
        side=side,
    )
    return [(p.code, p.filter_type) for p in problems]


@pytest.mark.parametrize(
    ("price", "side", "expected"),
    [
        # PERCENT_PRICE [70, 130] for both sides; BY_SIDE bid [20, 120], ask [80, 500].
        ("100", Side.BUY, []),
        ("120", Side.BUY, []),  # bounds are inclusive
        ("120.01", Side.BUY, [("PRICE_ABOVE_BAND", "PERCENT_PRICE_BY_SIDE")]),
        (
            "130.01",
            Side.BUY,
            [("PRICE_ABOVE_BAND", "PERCENT_PRICE"), ("PRICE_ABOVE_BAND", "PERCENT_PRICE_BY_SIDE")],
        ),
        ("69.99", Side.BUY, [("PRICE_BELOW_BAND", "PERCENT_PRICE")]),
        (
            "19.99",
            Side.BUY,
            [("PRICE_BELOW_BAND", "PERCENT_PRICE"), ("PRICE_BELOW_BAND", "PERCENT_PRICE_BY_SIDE")],
        ),
        ("80", Side.SELL, []),
        ("79.99", Side.SELL, [("PRICE_BELOW_BAND", "PERCENT_PRICE_BY_SIDE")]),
        ("130", Side.SELL, []),
        ("130.01", Side.SELL, [("PRICE_ABOVE_BAND", "PERCENT_PRICE")]),
        # Without a side only PERCENT_PRICE (one band for both sides) applies.
        ("125", None, []),
        ("130.01", None, [("PRICE_ABOVE_BAND", "PERCENT_PRICE")]),
        ("69.99", None, [("PRICE_BELOW_BAND", "PERCENT_PRICE")]),
    ],
)
def test_price_bands(price: str, side: Side | None, expected: list[tuple[str, str | None]]) -> None:
    assert bands(price, side) == expected


def test_price_bands_need_a_reference_price_and_a_limit_price() -> None:
    # Without a reference price there is no band to be outside of.
    assert bands("1000000", Side.BUY, reference=None) == []
    # A MARKET order has no price of its own: bands never apply to it.
    market = BANDED.check(
        order_type=OrderType.MARKET,
        quantity=D("1"),
        price=None,
        reference_price=D("100"),
        side=Side.BUY,
    )
    assert market == ()
    # Only the limit price is banded; a stop price far away is the trader's business.
    stop = BANDED.check(
        order_type=OrderType.STOP_LOSS_LIMIT,
        quantity=D("1"),
        price=D("100"),
        stop_price=D("1000"),
        reference_price=D("100"),
        side=Side.SELL,
    )
    assert stop == ()
    # No band fields: nothing to check whatever the price.
    assert (
        FILTERS.check(
            order_type=OrderType.LIMIT,
            quantity=D("1"),
            price=D("900000"),
            reference_price=D("1"),
            side=Side.BUY,
        )
        == ()
    )


def test_band_messages_name_the_numbers() -> None:
    (above,) = BANDED.check(
        order_type=OrderType.LIMIT,
        quantity=None,
        price=D("125"),
        reference_price=D("100"),
        side=Side.BUY,
    )
    assert above.message == (
        "BUY price 125 is above 120.0 = 1.2 x the reference price 100 (PERCENT_PRICE_BY_SIDE)"
    )
    (below,) = BANDED.check(
        order_type=OrderType.LIMIT,
        quantity=None,
        price=D("69"),
        reference_price=D("100"),
    )
    assert below.message == (
        "price 69 is below 70.0 = 0.7 x the reference price 100 (PERCENT_PRICE)"
    )


def test_check_order_threads_the_side_to_the_bands() -> None:
    info = trading_symbol(BANDED)

    def order(side: Side, price: str) -> NewOrder:
        return NewOrder(
            symbol="BTCUSDT",
            side=side,
            type=OrderType.LIMIT,
            client_order_id="b1",
            quantity=D("1"),
            price=D(price),
            time_in_force=TimeInForce.GTC,
        )

    # 125 is inside PERCENT_PRICE; above the bid band, inside the ask band.
    assert codes(info.check_order(order(Side.BUY, "125"), reference_price=D("100"))) == [
        "PRICE_ABOVE_BAND"
    ]
    assert info.check_order(order(Side.SELL, "125"), reference_price=D("100")) == ()
    assert info.check_order(order(Side.BUY, "125")) == ()  # no reference price


@settings(max_examples=300, deadline=None)
@given(
    reference=st.decimals(min_value="0.00000001", max_value="1000000", places=8),
    down=st.decimals(min_value="0.01", max_value="1", places=2),
    up=st.decimals(min_value="1", max_value="10", places=2),
    price=st.decimals(min_value="0.00000001", max_value="10000000", places=8),
    side=st.sampled_from([Side.BUY, Side.SELL]),
)
def test_band_problem_iff_outside_the_inclusive_band(
    reference: D, down: D, up: D, price: D, side: Side
) -> None:
    by_side = (
        SymbolFilters(bid_multiplier_down=down, bid_multiplier_up=up)
        if side is Side.BUY
        else SymbolFilters(ask_multiplier_down=down, ask_multiplier_up=up)
    )
    problems = by_side.check(
        order_type=OrderType.LIMIT,
        quantity=None,
        price=price,
        reference_price=reference,
        side=side,
    )
    expected = []
    if price > reference * up:
        expected.append("PRICE_ABOVE_BAND")
    if price < reference * down:
        expected.append("PRICE_BELOW_BAND")
    assert codes(problems) == expected
    # The other side's order is not judged by this side's band.
    other = Side.SELL if side is Side.BUY else Side.BUY
    assert (
        by_side.check(
            order_type=OrderType.LIMIT,
            quantity=None,
            price=price,
            reference_price=reference,
            side=other,
        )
        == ()
    )


def test_rounding_modes_and_exponent() -> None:
    assert BTC.round_price(D("30000.019")) == D("30000.01")
    assert str(BTC.round_price(D("30000.019"))) == "30000.01"
    assert BTC.round_price(D("30000.011"), ROUND_UP) == D("30000.02")
    assert BTC.round_price(D("30000.015"), ROUND_HALF_UP) == D("30000.02")
    assert str(BTC.round_price(D("7"))) == "7.00"
    assert BTC.round_quantity(D("1.23456")) == D("1.234")
    assert SymbolFilters().round_price(D("1.23456")) == D("1.23456")  # no tick: unchanged


@settings(max_examples=200, deadline=None)
@given(
    price=st.decimals(min_value="0.00000001", max_value="100000", places=8),
    tick_exp=st.integers(min_value=-8, max_value=1),
    tick_mult=st.sampled_from([1, 2, 5]),
)
def test_round_price_lands_on_the_grid_just_below(price: D, tick_exp: int, tick_mult: int) -> None:
    tick = D(tick_mult).scaleb(tick_exp)
    filters = SymbolFilters(tick_size=tick)
    rounded = filters.round_price(price)
    assert rounded <= price < rounded + tick
    assert filters.check(order_type=OrderType.LIMIT, quantity=None, price=rounded) == ()
    up = filters.round_price(price, ROUND_UP)
    assert up - tick < price <= up


@settings(max_examples=200, deadline=None)
@given(
    qty=st.decimals(min_value="0.001", max_value="1000", places=6),
    step=st.sampled_from([D("0.001"), D("0.01"), D("0.5"), D("1")]),
    min_qty=st.sampled_from([D("0.001"), D("0.005"), D("0.5")]),
)
def test_round_quantity_passes_lot_size(qty: D, step: D, min_qty: D) -> None:
    filters = SymbolFilters(step_size=step, min_qty=min_qty)
    rounded = filters.round_quantity(qty)
    assert 0 <= rounded <= qty
    if qty >= min_qty:
        assert qty < rounded + step
        assert rounded >= min_qty
        assert filters.check(order_type=OrderType.LIMIT, quantity=rounded, price=None) == ()


def test_rate_limit_rules() -> None:
    rule = RateLimitRule(RateLimitType.ORDERS, RateLimitInterval.SECOND, 10, 100)
    assert rule.period_s == 10.0
    assert rule.suffix == "10S"
    assert rule.window_name == "ORDERS:10S"
    day = RateLimitRule(RateLimitType.ORDERS, RateLimitInterval.DAY, 1, 200000)
    assert day.period_s == 86400.0 and day.suffix == "1D"
    assert RateLimitInterval.from_letter("m") is RateLimitInterval.MINUTE
    assert RateLimitInterval.from_letter("H").seconds == 3600
    with pytest.raises(ValueError, match="letter"):
        RateLimitInterval.from_letter("X")
    with pytest.raises(ValueError, match="limit"):
        RateLimitRule(RateLimitType.ORDERS, RateLimitInterval.SECOND, 10, 0)
    with pytest.raises(ValueError, match="interval_num"):
        RateLimitRule(RateLimitType.ORDERS, RateLimitInterval.SECOND, 0, 1)
