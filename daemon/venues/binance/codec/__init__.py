"""The Binance Spot protocol, sans I/O: requests, signatures, answers, errors, stream frames.

Everything here is a pure function of its arguments (no clock, no network, no
randomness), so the REST client (:mod:`daemon.venues.binance.rest`) and the
stream client (:mod:`daemon.venues.binance.stream`) share it and tests can pin
it down exactly. The simulator (:mod:`daemon.venues.sim`) does *not* use it:
it is an independent reading of the same Binance documentation (its wire
rules are in :mod:`daemon.venues.sim.protocol` and :mod:`daemon.venues.sim.auth`),
so a misunderstanding here cannot cancel out against the same one there.

Modules, from the bottom up:

* :mod:`.decoding` — the hostile-input limits and the strict JSON readers
  every parser goes through: any input gives a valid result or a
  :class:`~daemon.errors.VenueDecodeError` carrying the raw payload.
* :mod:`.signing` — RFC 3986 parameter encoding, plain-notation decimals,
  HMAC-SHA256 signatures over ``totalParams`` (and the server half, for tests).
* :mod:`.requests` — one builder per REST endpoint returning a
  :class:`RequestSpec` with its documented weight and order count;
  :func:`prepare` turns it into the exact query, body and headers.
* :mod:`.ratelimits` — the documented default limits, the
  ``X-MBX-USED-WEIGHT-*``/``X-MBX-ORDER-COUNT-*`` usage headers, ``Retry-After``.
* :mod:`.errors` — HTTP status + ``{"code": -2010, "msg": "…"}`` → the
  project's exception tree (:func:`error_from_response`, :func:`error_from_code`).
* :mod:`.general` — server time and ``exchangeInfo`` answers.
* :mod:`.marketdata` — depth and trades answers; stream names, URLs and frames.
* :mod:`.orders` — order, ``myTrades`` and account answers.

* :mod:`.wsapi` — the WebSocket API (``/ws-api/v3``): request frames signed the
  WebSocket-API way, answers (``result``/``error``/``rateLimits``), the same
  error map (:func:`error_from_code`) and ``result`` readers as REST;
* :mod:`.userdata` — user data stream events → :mod:`daemon.model.userstream`.

This package re-exports the public names of its modules, so
``from daemon.venues.binance import codec`` and ``codec.parse_order(...)``
keep working; new code may import from the module that defines a name.
"""

from __future__ import annotations

from daemon.venues.binance.codec.decoding import (
    INT64_MAX,
    INT64_MIN,
    MAX_BODY_BYTES,
    MAX_DECIMAL_EXPONENT,
    MAX_FRAME_BYTES,
)
from daemon.venues.binance.codec.errors import (
    DUPLICATE_ORDER_MESSAGE,
    error_from_code,
    error_from_response,
    parse_error_body,
)
from daemon.venues.binance.codec.general import parse_exchange_info, parse_server_time
from daemon.venues.binance.codec.marketdata import (
    ServerShutdown,
    StreamMessage,
    depth_stream,
    parse_depth,
    parse_stream_message,
    parse_trades,
    stream_url,
    trade_stream,
)
from daemon.venues.binance.codec.orders import (
    parse_account,
    parse_my_trades,
    parse_order,
    parse_orders,
)
from daemon.venues.binance.codec.ratelimits import (
    DEFAULT_RATE_LIMITS,
    MAX_RETRY_AFTER_S,
    UsageReport,
    parse_usage_headers,
)
from daemon.venues.binance.codec.requests import (
    API_KEY_HEADER,
    DEPTH_LIMIT_MAX,
    FORM_CONTENT_TYPE,
    TRADES_LIMIT_MAX,
    PreparedRequest,
    RequestSpec,
    Security,
    account_request,
    cancel_order_request,
    depth_request,
    depth_weight,
    exchange_info_request,
    get_order_request,
    historical_trades_request,
    my_trades_request,
    new_order_request,
    open_orders_request,
    ping_request,
    prepare,
    recent_trades_request,
    server_time_request,
)
from daemon.venues.binance.codec.signing import (
    encode_params,
    format_decimal,
    parse_query,
    sign,
    signature_payload,
    split_signature,
    verify_signature,
)

__all__ = [
    "API_KEY_HEADER",
    "DEFAULT_RATE_LIMITS",
    "DEPTH_LIMIT_MAX",
    "DUPLICATE_ORDER_MESSAGE",
    "FORM_CONTENT_TYPE",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_BODY_BYTES",
    "MAX_DECIMAL_EXPONENT",
    "MAX_FRAME_BYTES",
    "MAX_RETRY_AFTER_S",
    "TRADES_LIMIT_MAX",
    "PreparedRequest",
    "RequestSpec",
    "Security",
    "ServerShutdown",
    "StreamMessage",
    "UsageReport",
    "account_request",
    "cancel_order_request",
    "depth_request",
    "depth_stream",
    "depth_weight",
    "encode_params",
    "error_from_code",
    "error_from_response",
    "exchange_info_request",
    "format_decimal",
    "get_order_request",
    "historical_trades_request",
    "my_trades_request",
    "new_order_request",
    "open_orders_request",
    "parse_account",
    "parse_depth",
    "parse_error_body",
    "parse_exchange_info",
    "parse_my_trades",
    "parse_order",
    "parse_orders",
    "parse_query",
    "parse_server_time",
    "parse_stream_message",
    "parse_trades",
    "parse_usage_headers",
    "ping_request",
    "prepare",
    "recent_trades_request",
    "server_time_request",
    "sign",
    "signature_payload",
    "split_signature",
    "stream_url",
    "trade_stream",
    "verify_signature",
]
