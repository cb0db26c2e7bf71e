"""Symbols for tests: a trading :class:`~daemon.model.SymbolInfo` with the filters a test needs."""

from __future__ import annotations

from collections.abc import Iterable

from daemon.model import SymbolFilters, SymbolInfo


def trading_symbol(
    filters: SymbolFilters, *, symbol: str = "BTCUSDT", order_types: Iterable[str] = ()
) -> SymbolInfo:
    """``symbol`` (base and quote asset: its first three letters and the rest), TRADING."""
    return SymbolInfo(
        symbol=symbol,
        status="TRADING",
        base_asset=symbol[:3],
        quote_asset=symbol[3:],
        order_types=frozenset(order_types),
        filters=filters,
    )
