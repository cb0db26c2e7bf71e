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
BTC = SymbolInfo(
    symbol="BTCUSDT",
    status="TRADING",
    base_asset="BTC",
    quote_asset="USDT",
    order_types=frozenset({"LIMIT", "MARKET", "LIMIT_MAKER"}),
    filters=FILTERS,
)


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
    info = SymbolInfo(
        symbol="BTCUSDT", status="TRADING", base_asset="BTC", quote_asset="USDT", filters=FILTERS
    )
    assert codes(info.check_order(order)) == ["STOP_PRICE_TICK"]


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
