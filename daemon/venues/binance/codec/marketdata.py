"""Market data: REST depth and trades, stream names and URLs, stream frames.

* REST answers — ``GET /api/v3/depth`` → :class:`~daemon.model.marketdata.DepthSnapshot`;
  ``/api/v3/trades`` and ``/api/v3/historicalTrades`` → :class:`~daemon.model.marketdata.Trade`.
* Streams — stream names (``<symbol>@trade``, ``<symbol>@depth@100ms``) and
  URLs (raw ``/ws/<stream>``, combined ``/stream?streams=a/b``), and frame
  parsing (``trade``, ``depthUpdate``, ``serverShutdown``, with or without
  the combined envelope) into a :data:`StreamMessage`.

Malformed input raises :class:`~daemon.errors.VenueDecodeError` and nothing
else (:mod:`.decoding`); a stream frame is bounded by
:data:`~.decoding.MAX_FRAME_BYTES` and not walked for depth (hot path).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs

from daemon.model.marketdata import DepthSnapshot, DepthUpdate, Trade
from daemon.venues.binance.codec.decoding import (
    INT64_MAX,
    INT64_MIN,
    MAX_DECIMAL_CHARS,
    MAX_DECIMAL_EXPONENT,
    MAX_FRAME_BYTES,
    Obj,
    as_list,
    bad_shape,
    decode,
    price_levels,
    show,
)
from daemon.venues.binance.codec.requests import symbol_param

__all__ = [
    "ServerShutdown",
    "StreamMessage",
    "depth_stream",
    "parse_depth",
    "parse_stream_message",
    "parse_trades",
    "stream_url",
    "trade_stream",
]

# --------------------------------------------------------------------------- REST answers


def parse_depth(payload: bytes | str, *, symbol: str, venue: str = "binance") -> DepthSnapshot:
    """``{"lastUpdateId": …, "bids": [[p, q]…], "asks": […]}`` → :class:`DepthSnapshot`."""

    def build(obj: Any) -> DepthSnapshot:
        o = Obj(obj, "depth")
        return DepthSnapshot(
            venue=venue,
            symbol=symbol,
            last_update_id=o.integer("lastUpdateId"),
            bids=price_levels(o.raw("bids"), "depth.bids"),
            asks=price_levels(o.raw("asks"), "depth.asks"),
        )

    return decode(payload, "depth", venue, build)


def _rest_trade(obj: object, symbol: str, venue: str) -> Trade:
    o = Obj(obj, "trades[]")
    price = o.dec("price")
    qty = o.dec("qty")
    quote = o.opt_dec("quoteQty")
    return Trade(
        venue=venue,
        symbol=symbol,
        trade_id=o.integer("id"),
        price=price,
        quantity=qty,
        quote_quantity=quote if quote is not None else price * qty,
        buyer_is_maker=o.flag("isBuyerMaker"),
        trade_time_ms=o.integer("time"),
        event_time_ms=None,
    )


def parse_trades(payload: bytes | str, *, symbol: str, venue: str = "binance") -> list[Trade]:
    """``/api/v3/trades`` or ``/api/v3/historicalTrades`` → trades, oldest first as sent."""
    return decode(
        payload,
        "trades",
        venue,
        lambda obj: [_rest_trade(t, symbol, venue) for t in as_list(obj, "trades")],
    )


# --------------------------------------------------------------------------- streams

_STREAM_NAME = re.compile(r"\A[^\s/?#&]+\Z")


@attrs.frozen
class ServerShutdown:
    """The venue announced that this connection's server is going away: reconnect now."""

    event_time_ms: int | None


#: What a stream frame decodes to.
StreamMessage = Trade | DepthUpdate | ServerShutdown


def trade_stream(symbol: str) -> str:
    """``<symbol>@trade`` (symbol lower case)."""
    return f"{symbol_param(symbol).lower()}@trade"


def depth_stream(symbol: str, update_speed_ms: int = 100) -> str:
    """``<symbol>@depth@100ms`` (or ``<symbol>@depth`` for the 1000 ms stream)."""
    if update_speed_ms not in (100, 1000):
        raise ValueError(f"update_speed_ms must be 100 or 1000, got {update_speed_ms}")
    name = f"{symbol_param(symbol).lower()}@depth"
    return name + "@100ms" if update_speed_ms == 100 else name


def stream_url(base_url: str, streams: Sequence[str], *, combined: bool | None = None) -> str:
    """The URL of a raw (``/ws/<stream>``) or combined (``/stream?streams=a/b``) connection.

    ``combined=None`` picks raw for one stream and combined for several.
    """
    names = list(streams)
    if not names:
        raise ValueError("at least one stream is needed")
    for name in names:
        if not _STREAM_NAME.match(name):
            raise ValueError(f"invalid stream name {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate stream names in {names}")
    base = base_url.rstrip("/")
    if combined is None:
        combined = len(names) > 1
    if not combined:
        if len(names) != 1:
            raise ValueError("a raw stream connection carries exactly one stream")
        return f"{base}/ws/{names[0]}"
    return f"{base}/stream?streams={'/'.join(names)}"


def _stream_trade(o: Obj, venue: str) -> Trade:
    price = o.dec("p")
    qty = o.dec("q")
    return Trade(
        venue=venue,
        symbol=o.text("s"),
        trade_id=o.integer("t"),
        price=price,
        quantity=qty,
        quote_quantity=price * qty,
        buyer_is_maker=o.flag("m"),
        trade_time_ms=o.integer("T"),
        event_time_ms=o.integer("E"),
    )


def _stream_depth(o: Obj, venue: str) -> DepthUpdate:
    first = o.integer("U")
    final = o.integer("u")
    if final < first:
        bad_shape(f"depthUpdate: u ({final}) < U ({first})")
    return DepthUpdate(
        venue=venue,
        symbol=o.text("s"),
        first_update_id=first,
        final_update_id=final,
        bids=price_levels(o.raw("b"), "depthUpdate.b"),
        asks=price_levels(o.raw("a"), "depthUpdate.a"),
        event_time_ms=o.integer("E"),
    )


def _fast_trade(obj: Any, venue: str) -> Trade | None:
    """The common frame, a well-formed trade (raw or combined), read without :class:`Obj`.

    The hot path of market data. It accepts a subset of what :func:`_stream_event`
    accepts, with the same result: every field has exactly the type and bounds
    the general path requires (prices and quantities as decimal strings only).
    Anything else — another event, a missing field, a number where a string
    belongs — answers ``None``, and the general path decides (and names the
    error). ``tests/venues/binance/test_codec.py`` checks the two agree.
    """
    if type(obj) is not dict or "event" in obj:
        return None
    if "stream" in obj and "data" in obj:
        if type(obj["stream"]) is not str:
            return None
        obj = obj["data"]
        if type(obj) is not dict:
            return None
    if obj.get("e") != "trade":
        return None
    p = obj.get("p")
    q = obj.get("q")
    symbol = obj.get("s")
    trade_id = obj.get("t")
    trade_time = obj.get("T")
    event_time = obj.get("E")
    maker = obj.get("m")
    if (
        type(p) is not str
        or type(q) is not str
        or type(symbol) is not str
        or type(trade_id) is not int
        or type(trade_time) is not int
        or type(event_time) is not int
        or type(maker) is not bool
        or len(p) > MAX_DECIMAL_CHARS
        or len(q) > MAX_DECIMAL_CHARS
        or not INT64_MIN <= trade_id <= INT64_MAX
        or not INT64_MIN <= trade_time <= INT64_MAX
        or not INT64_MIN <= event_time <= INT64_MAX
    ):
        return None
    try:
        price = Decimal(p)
        qty = Decimal(q)
    except (InvalidOperation, ValueError):
        return None
    if not (
        price.is_finite()
        and qty.is_finite()
        and -MAX_DECIMAL_EXPONENT <= price.adjusted() <= MAX_DECIMAL_EXPONENT
        and -MAX_DECIMAL_EXPONENT <= qty.adjusted() <= MAX_DECIMAL_EXPONENT
    ):
        return None
    return Trade(
        venue=venue,
        symbol=symbol,
        trade_id=trade_id,
        price=price,
        quantity=qty,
        quote_quantity=price * qty,
        buyer_is_maker=maker,
        trade_time_ms=trade_time,
        event_time_ms=event_time,
    )


def _stream_event(obj: Any, venue: str) -> StreamMessage:
    fast = _fast_trade(obj, venue)
    return fast if fast is not None else _general_event(obj, venue)


def _general_event(obj: Any, venue: str) -> StreamMessage:
    o = Obj(obj, "event")
    if isinstance(obj.get("event"), dict):
        # The WebSocket API's wrapper: {"event": {"e": "serverShutdown", "E": …}}
        o = Obj(obj["event"], "event")
    elif "stream" in obj and "data" in obj:
        stream = o.text("stream")
        o = Obj(obj["data"], f"{show(stream)}.data")  # escaped: the venue's text
    kind = o.text("e")
    if kind == "trade":
        return _stream_trade(o, venue)
    if kind == "depthUpdate":
        return _stream_depth(o, venue)
    if kind == "serverShutdown":
        return ServerShutdown(o.opt_int("E"))
    bad_shape(f"unsupported event type {show(kind)}")


def parse_stream_message(payload: bytes | str, *, venue: str = "binance") -> StreamMessage:
    """Decode one stream frame: raw, combined envelope, or a ``serverShutdown`` event.

    Shapes (Binance Spot WebSocket Streams)::

        {"e":"trade","E":…,"s":"BNBBTC","t":12345,"p":"0.001","q":"100","T":…,"m":true,"M":true}
        {"e":"depthUpdate","E":…,"s":"BNBBTC","U":157,"u":160,"b":[["0.0024","10"]],"a":[…]}
        {"stream":"bnbbtc@trade","data":{…one of the above…}}
        {"e":"serverShutdown","E":…}   (also inside "data", or as {"event":{…}})

    Raises:
        VenueDecodeError: not JSON, not one of these shapes, or a field of the
            wrong type; ``raw`` holds the frame. This is the only exception:
            hostile frames (nested 100,000 deep, numbers beyond the int-string
            limit or 64 bits, ``1e999999`` prices, invalid UTF-8, longer than
            :data:`MAX_FRAME_BYTES`) all end here, to be dead-lettered.
    """
    return decode(
        payload,
        "stream frame",
        venue,
        lambda obj: _stream_event(obj, venue),
        max_bytes=MAX_FRAME_BYTES,
        max_depth=None,  # hot path: the schema refuses nesting; RecursionError is caught
    )
