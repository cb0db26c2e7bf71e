"""Order commands validate their shape; statuses know when they are terminal."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.model import (
    AccountBalance,
    AccountInfo,
    NewOrder,
    OrderType,
    Side,
    TimeInForce,
    VenueOrderStatus,
    is_valid_client_order_id,
)
from daemon.model.orders import CLIENT_ORDER_ID_PATTERN

D = Decimal


def order(**overrides: Any) -> NewOrder:
    fields: dict[str, Any] = {
        "symbol": "BTCUSDT",
        "side": Side.BUY,
        "type": OrderType.LIMIT,
        "client_order_id": "intent-1_a",
        "quantity": D("1"),
        "price": D("100"),
        "time_in_force": TimeInForce.GTC,
    }
    fields.update(overrides)
    return NewOrder(**fields)


def test_valid_shapes() -> None:
    order()
    order(type=OrderType.LIMIT_MAKER, time_in_force=None)
    order(type=OrderType.MARKET, price=None, time_in_force=None)
    order(
        type=OrderType.MARKET,
        price=None,
        time_in_force=None,
        quantity=None,
        quote_order_qty=D("50"),
    )
    order(type=OrderType.STOP_LOSS, price=None, time_in_force=None, stop_price=D("90"))
    order(type=OrderType.TAKE_PROFIT_LIMIT, stop_price=D("110"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"client_order_id": ""}, "client_order_id"),
        ({"client_order_id": "x" * 37}, "client_order_id"),
        ({"client_order_id": "has space"}, "client_order_id"),
        ({"client_order_id": "dot.ted"}, "client_order_id"),
        ({"symbol": "btcusdt"}, "symbol"),
        ({"symbol": "BTC/USDT"}, "symbol"),
        ({"quantity": D("0")}, "quantity"),
        ({"quantity": D("-1")}, "quantity"),
        ({"price": D("NaN")}, "price"),
        ({"price": 100.0}, "price"),
        ({"quantity": None}, "needs a quantity"),
        ({"price": None}, "needs a price"),
        ({"time_in_force": None}, "needs a time_in_force"),
        ({"stop_price": D("1")}, "takes no stop_price"),
        ({"quote_order_qty": D("1")}, "only allowed on MARKET"),
        ({"type": OrderType.MARKET, "time_in_force": None}, "takes no price"),
        ({"type": OrderType.MARKET, "price": None}, "takes no time_in_force"),
        (
            {
                "type": OrderType.MARKET,
                "price": None,
                "time_in_force": None,
                "quote_order_qty": D("5"),
            },
            "exactly one",
        ),
        ({"type": OrderType.LIMIT_MAKER}, "takes no time_in_force"),
        ({"type": OrderType.STOP_LOSS_LIMIT}, "needs a stop_price"),
    ],
)
def test_invalid_shapes_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        order(**overrides)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=0, max_size=40) | st.from_regex(r"\A[A-Za-z0-9_-]{1,36}\Z"))
def test_client_order_id_validation_is_binances_regex(value: str) -> None:
    binance = re.fullmatch(r"[a-zA-Z0-9-_]{1,36}", value) is not None
    assert is_valid_client_order_id(value) is binance
    assert (CLIENT_ORDER_ID_PATTERN.match(value) is not None) is binance


def test_status_terminal_and_open() -> None:
    terminal = {s for s in VenueOrderStatus if s.is_terminal}
    assert terminal == {
        VenueOrderStatus.FILLED,
        VenueOrderStatus.CANCELED,
        VenueOrderStatus.REJECTED,
        VenueOrderStatus.EXPIRED,
        VenueOrderStatus.EXPIRED_IN_MATCH,
    }
    assert VenueOrderStatus.PARTIALLY_FILLED.is_open
    assert VenueOrderStatus.PENDING_CANCEL.is_open


def test_account_balance_lookup() -> None:
    info = AccountInfo(
        venue="binance",
        can_trade=True,
        account_type="SPOT",
        update_time_ms=1,
        balances=(AccountBalance("BTC", D("1.5"), D("0.5")),),
    )
    assert info.balance("BTC").total == D("2.0")
    assert info.balance("ETH") == AccountBalance("ETH", D(0), D(0))
