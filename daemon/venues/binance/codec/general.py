"""Answers of the general endpoints: the server clock and ``exchangeInfo``.

``exchangeInfo`` becomes :class:`~daemon.model.instruments.ExchangeInfo`:
each symbol's status, assets, precisions, order types and filters
(``PRICE_FILTER``, ``LOT_SIZE``, ``MARKET_LOT_SIZE``, ``NOTIONAL`` or the
older ``MIN_NOTIONAL``, ``MAX_NUM_ORDERS``, ``PERCENT_PRICE``,
``PERCENT_PRICE_BY_SIDE``; a part written as 0 is disabled, unknown fields
and filters are ignored) and the venue's rate-limit rules. Malformed input
raises :class:`~daemon.errors.VenueDecodeError` (:mod:`.decoding`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from daemon.model.instruments import (
    ExchangeInfo,
    RateLimitInterval,
    RateLimitRule,
    RateLimitType,
    SymbolFilters,
    SymbolInfo,
)
from daemon.venues.binance.codec.decoding import Obj, decode, show, str_list

__all__ = ["parse_exchange_info", "parse_server_time"]


def parse_server_time(payload: bytes | str, *, venue: str = "binance") -> int:
    """``{"serverTime": 1499827319559}`` → the server clock in epoch ms."""
    return decode(payload, "time", venue, lambda o: Obj(o, "time").integer("serverTime"))


def _rate_limit(obj: object) -> RateLimitRule:
    o = Obj(obj, "rateLimits[]")
    return RateLimitRule(
        o.enum("rateLimitType", RateLimitType),
        o.enum("interval", RateLimitInterval),
        o.integer("intervalNum"),
        o.integer("limit"),
    )


def _positive_or_none(value: Decimal | None) -> Decimal | None:
    """Binance writes a disabled filter part as 0."""
    return value if value is not None and value > 0 else None


def _filters(items: list[Any], where: str) -> SymbolFilters:
    fields: dict[str, Any] = {}
    saw_notional = False
    for i, item in enumerate(items):
        f = Obj(item, f"{where}.filters[{i}]")
        kind = f.text("filterType")
        if kind == "PRICE_FILTER":
            fields["tick_size"] = _positive_or_none(f.dec("tickSize"))
            fields["min_price"] = _positive_or_none(f.dec("minPrice"))
            fields["max_price"] = _positive_or_none(f.dec("maxPrice"))
        elif kind == "LOT_SIZE":
            fields["step_size"] = _positive_or_none(f.dec("stepSize"))
            fields["min_qty"] = _positive_or_none(f.dec("minQty"))
            fields["max_qty"] = _positive_or_none(f.dec("maxQty"))
        elif kind == "MARKET_LOT_SIZE":
            fields["market_step_size"] = _positive_or_none(f.dec("stepSize"))
            fields["market_min_qty"] = _positive_or_none(f.dec("minQty"))
            fields["market_max_qty"] = _positive_or_none(f.dec("maxQty"))
        elif kind == "NOTIONAL":
            saw_notional = True
            fields["min_notional"] = _positive_or_none(f.dec("minNotional"))
            fields["apply_min_to_market"] = f.opt_bool("applyMinToMarket") is not False
            fields["max_notional"] = _positive_or_none(f.opt_dec("maxNotional"))
            fields["apply_max_to_market"] = f.opt_bool("applyMaxToMarket") is True
        elif kind == "MIN_NOTIONAL" and not saw_notional:
            fields["min_notional"] = _positive_or_none(f.dec("minNotional"))
            fields["apply_min_to_market"] = f.opt_bool("applyToMarket") is not False
        elif kind == "MAX_NUM_ORDERS":
            fields["max_num_orders"] = f.integer("maxNumOrders")
        elif kind == "PERCENT_PRICE":
            fields["multiplier_up"] = _positive_or_none(f.dec("multiplierUp"))
            fields["multiplier_down"] = _positive_or_none(f.dec("multiplierDown"))
            fields["percent_price_avg_mins"] = f.opt_int("avgPriceMins")
        elif kind == "PERCENT_PRICE_BY_SIDE":
            fields["bid_multiplier_up"] = _positive_or_none(f.dec("bidMultiplierUp"))
            fields["bid_multiplier_down"] = _positive_or_none(f.dec("bidMultiplierDown"))
            fields["ask_multiplier_up"] = _positive_or_none(f.dec("askMultiplierUp"))
            fields["ask_multiplier_down"] = _positive_or_none(f.dec("askMultiplierDown"))
            fields["percent_price_by_side_avg_mins"] = f.opt_int("avgPriceMins")
    return SymbolFilters(**fields)


def _symbol_info(obj: object) -> SymbolInfo:
    o = Obj(obj, "symbols[]")
    name = o.text("symbol")
    where = f"symbols[{show(name)}]"  # the venue's text, escaped for messages and logs
    order_types = (
        frozenset(str_list(o.items("orderTypes"), f"{where}.orderTypes"))
        if o.has("orderTypes")
        else frozenset()
    )
    return SymbolInfo(
        symbol=name,
        status=o.text("status"),
        base_asset=o.text("baseAsset"),
        quote_asset=o.text("quoteAsset"),
        base_asset_precision=o.opt_int("baseAssetPrecision") or 8,
        quote_asset_precision=o.opt_int("quoteAssetPrecision") or o.opt_int("quotePrecision") or 8,
        order_types=order_types,
        filters=_filters(o.items("filters"), where),
    )


def parse_exchange_info(payload: bytes | str, *, venue: str = "binance") -> ExchangeInfo:
    """``GET /api/v3/exchangeInfo`` → :class:`ExchangeInfo` (unknown fields and filters ignored)."""

    def build(obj: Any) -> ExchangeInfo:
        o = Obj(obj, "exchangeInfo")
        symbols = [_symbol_info(s) for s in o.items("symbols")]
        return ExchangeInfo(
            venue=venue,
            timezone=o.opt_str("timezone") or "UTC",
            server_time_ms=o.integer("serverTime"),
            rate_limits=tuple(_rate_limit(r) for r in o.items("rateLimits")),
            symbols={s.symbol: s for s in symbols},
        )

    return decode(payload, "exchangeInfo", venue, build)
