"""Shared builders for the risk tests."""

from __future__ import annotations

from decimal import Decimal

from daemon.model import NewOrder, OrderType, Side, SymbolFilters, TimeInForce
from daemon.risk import RiskRequest
from tests.helpers.instruments import trading_symbol

D = Decimal

FILTERS = SymbolFilters(
    tick_size=D("0.01"),
    min_price=D("1"),
    max_price=D("100000"),
    step_size=D("0.001"),
    min_qty=D("0.001"),
    max_qty=D("100"),
    market_step_size=D("0.01"),
    market_min_qty=D("0.01"),
    market_max_qty=D("10"),
    min_notional=D("5"),
    apply_min_to_market=True,
    max_notional=D("1000000"),
    apply_max_to_market=False,
)
BTC = trading_symbol(
    FILTERS,
    order_types={"LIMIT", "MARKET", "LIMIT_MAKER", "STOP_LOSS_LIMIT", "STOP_LOSS", "TAKE_PROFIT"},
)


def order(
    *,
    side: str = "BUY",
    type: str = "LIMIT",
    qty: str | None = "1",
    price: str | None = "100",
    stop: str | None = None,
    quote: str | None = None,
    symbol: str = "BTCUSDT",
    coid: str = "c1",
) -> NewOrder:
    kind = OrderType(type)
    return NewOrder(
        symbol=symbol,
        side=Side(side),
        type=kind,
        client_order_id=coid,
        quantity=D(qty) if qty is not None else None,
        price=D(price) if price is not None and kind.needs_price else None,
        time_in_force=TimeInForce.GTC if kind.needs_time_in_force else None,
        stop_price=D(stop) if stop is not None else None,
        quote_order_qty=D(quote) if quote is not None else None,
    )


def request(
    account: str = "acct", *, reference: str | None = None, **order_kwargs: object
) -> RiskRequest:
    return RiskRequest(
        account=account,
        order=order(**order_kwargs),  # type: ignore[arg-type]
        reference_price=D(reference) if reference is not None else None,
    )
