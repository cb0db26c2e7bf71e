"""Configuration of one Binance-protocol venue (Binance, its spot testnet, or the simulator).

One frozen value, validated at construction, so a bad value fails when the
configuration is loaded rather than at the first request. The fields that are
keys of ``[venues.NAME]`` (``recv_window_ms``, ``request_timeout_s``,
``stale_after_s``) have no default here: their defaults are declared once, in
:class:`daemon.config.VenueConfig`, and the caller passes them; the client's
own tunables keep theirs. Credentials are :class:`~daemon.secrets.Secret`
values: their ``repr`` is redacted, and the client reveals them only to sign.

Endpoints:

=====================  ====================================  =======================================
venue                  ``rest_url``                          ``ws_url``
=====================  ====================================  =======================================
Binance Spot           ``https://api.binance.com``           ``wss://stream.binance.com:9443``
Binance Spot testnet   ``https://testnet.binance.vision``    ``wss://stream.testnet.binance.vision``
simulator              ``http://127.0.0.1:<port>``           ``ws://127.0.0.1:<port>``
=====================  ====================================  =======================================

``ws_url`` is the base: streams are reached at ``<ws_url>/ws/<stream>`` and
``<ws_url>/stream?streams=<a>/<b>``.

``ws_api_url`` is the WebSocket API endpoint, path included (orders and the
user data stream, :mod:`.wsapi`). When not given it is derived from
``ws_url`` (:func:`derive_ws_api_url`): Binance's and the testnet's stream
hosts map to their documented WebSocket API URLs
(``wss://ws-api.binance.com:443/ws-api/v3``,
``wss://ws-api.testnet.binance.vision/ws-api/v3``); any other base (the
simulator, a proxy) serves it at ``<ws_url>/ws-api/v3``.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

import attrs

from daemon.secrets import Secret

__all__ = [
    "DEFAULT_MAX_CONNECTION_AGE_S",
    "MAINNET_REST_URL",
    "MAINNET_WS_API_URL",
    "MAINNET_WS_URL",
    "TESTNET_REST_URL",
    "TESTNET_WS_API_URL",
    "TESTNET_WS_URL",
    "WS_API_PATH",
    "BinanceConfig",
    "derive_ws_api_url",
]

MAINNET_REST_URL = "https://api.binance.com"
MAINNET_WS_URL = "wss://stream.binance.com:9443"
TESTNET_REST_URL = "https://testnet.binance.vision"
TESTNET_WS_URL = "wss://stream.testnet.binance.vision"
MAINNET_WS_API_URL = "wss://ws-api.binance.com:443/ws-api/v3"
TESTNET_WS_API_URL = "wss://ws-api.testnet.binance.vision/ws-api/v3"
#: Where a Binance-protocol server that is not Binance serves its WebSocket API.
WS_API_PATH = "/ws-api/v3"
#: Binance's stream hosts and the WebSocket API of the same venue.
_WS_API_BY_STREAM_HOST = {
    "stream.binance.com": MAINNET_WS_API_URL,
    "stream.testnet.binance.vision": TESTNET_WS_API_URL,
}

#: Binance closes every stream connection after 24 hours; reconnect before that.
SERVER_CONNECTION_LIMIT_S = 24 * 3600.0
DEFAULT_MAX_CONNECTION_AGE_S = 23.5 * 3600.0
#: Binance refuses a ``recvWindow`` above 60 000 ms.
MAX_RECV_WINDOW_MS = 60_000


def _url(schemes: tuple[str, ...]) -> Any:
    def check(_: object, attribute: attrs.Attribute[str], value: str) -> None:
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.netloc:
            raise ValueError(f"{attribute.name} must be a {'/'.join(schemes)} URL, got {value!r}")
        if parts.query or parts.fragment or value.endswith("/"):
            raise ValueError(
                f"{attribute.name} must be a base URL without query, fragment or trailing '/', "
                f"got {value!r}"
            )

    return check


def derive_ws_api_url(ws_url: str) -> str:
    """The WebSocket API URL of the venue whose streams are at ``ws_url``.

    Binance (``stream.binance.com``, any port) → :data:`MAINNET_WS_API_URL`;
    its testnet → :data:`TESTNET_WS_API_URL`; anything else (the simulator,
    a proxy) → ``<ws_url>/ws-api/v3``.
    """
    host = (urlsplit(ws_url).hostname or "").lower()
    known = _WS_API_BY_STREAM_HOST.get(host)
    return known if known is not None else ws_url.rstrip("/") + WS_API_PATH


def _endpoint_url(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"{attribute.name} must be a ws/wss URL, got {value!r}")
    if parts.query or parts.fragment or value.endswith("/"):
        raise ValueError(
            f"{attribute.name} must be a URL without query, fragment or trailing '/', got {value!r}"
        )


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{attribute.name} must be finite and > 0, got {value!r}")


def _positive_int(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer >= 1, got {value!r}")


def _secret(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, Secret):
        # Never echo the value: it may be the secret itself passed by mistake.
        raise TypeError(f"{attribute.name} must be a daemon.secrets.Secret or None")


@attrs.frozen(kw_only=True)
class BinanceConfig:
    """How to reach and talk to one Binance-protocol venue.

    Attributes:
        name: Venue name used in the model (``Trade.venue``), errors and logs.
        rest_url: REST base URL (no trailing slash).
        ws_url: WebSocket streams base URL (no trailing slash, no ``/ws``).
        ws_api_url: WebSocket API endpoint, path included (default: derived
            from ``ws_url``, :func:`derive_ws_api_url`).
        api_key: API key (header ``X-MBX-APIKEY``); needed for account and
            order endpoints only.
        api_secret: HMAC-SHA256 secret that signs those requests.
        recv_window_ms: ``recvWindow``: how long after its ``timestamp`` the
            venue still accepts a signed request (1..60000).
        request_timeout_s: Bound on one REST request (connect + send + answer).
        connect_timeout_s: Bound on establishing a connection (REST and streams).
        stale_after_s: A stream connection that delivers no message for this
            long is treated as dead and replaced. Choose it above the quietest
            expected interval of the subscribed streams (pings from the venue
            do not count: they are answered below the message layer).
        max_connection_age_s: Reconnect proactively after this long, before
            the venue's 24-hour cut-off.
        reconnect_initial_s: First stream reconnect delay (before jitter).
        reconnect_max_s: Cap on the stream reconnect delay.
        retry_max_attempts: Attempts (first included) of a REST *query*;
            order requests are never retried automatically.
        retry_max_elapsed_s: Time budget of a REST query's retries.
        retry_base_delay_s: First REST retry delay (exponential, full jitter).
        retry_max_delay_s: Cap on a REST retry delay.
        limiter_max_wait_s: How long a request may wait for the local rate
            limiter (e.g. during a ``Retry-After`` freeze) before it fails
            with ``VenueRateLimitedError`` without being sent.
        order_limiter_max_wait_s: The same bound for a new order (at most
            ``limiter_max_wait_s``). Keep it below ``[orders] send_timeout_s``:
            a new order refused here was never sent and goes back to PENDING,
            where one cut by the send timeout while waiting would be UNKNOWN.
        time_resync_interval_s: Re-measure the server clock offset when the
            last measurement is older than this.
        stream_queue_size: Messages trio-websocket may buffer per connection.
        ws_api_ping_interval_s: A WebSocket API connection sends a ping this
            often; no pong within ``request_timeout_s`` means the connection
            is dead (the user data stream has no traffic of its own to go
            stale on: an account without orders is silent for hours).
    """

    name: str = "binance"
    rest_url: str = attrs.field(default=MAINNET_REST_URL, validator=_url(("http", "https")))
    ws_url: str = attrs.field(default=MAINNET_WS_URL, validator=_url(("ws", "wss")))
    ws_api_url: str = attrs.field(
        default=attrs.Factory(lambda self: derive_ws_api_url(self.ws_url), takes_self=True),
        validator=_endpoint_url,
    )
    api_key: Secret | None = attrs.field(default=None, validator=_secret)
    api_secret: Secret | None = attrs.field(default=None, validator=_secret)
    # recv_window_ms, request_timeout_s and stale_after_s have no default here:
    # they are keys of [venues.NAME], declared once in daemon.config, and the
    # daemon passes them (daemon.venues.link.binance_config).
    recv_window_ms: int = attrs.field(validator=_positive_int)
    request_timeout_s: float = attrs.field(validator=_positive)
    connect_timeout_s: float = attrs.field(default=5.0, validator=_positive)
    stale_after_s: float = attrs.field(validator=_positive)
    max_connection_age_s: float = attrs.field(
        default=DEFAULT_MAX_CONNECTION_AGE_S, validator=_positive
    )
    reconnect_initial_s: float = attrs.field(default=0.5, validator=_positive)
    reconnect_max_s: float = attrs.field(default=30.0, validator=_positive)
    retry_max_attempts: int = attrs.field(default=4, validator=_positive_int)
    retry_max_elapsed_s: float = attrs.field(default=20.0, validator=_positive)
    retry_base_delay_s: float = attrs.field(default=0.25, validator=_positive)
    retry_max_delay_s: float = attrs.field(default=5.0, validator=_positive)
    limiter_max_wait_s: float = attrs.field(default=30.0, validator=_positive)
    order_limiter_max_wait_s: float = attrs.field(default=1.0, validator=_positive)
    time_resync_interval_s: float = attrs.field(default=600.0, validator=_positive)
    stream_queue_size: int = attrs.field(default=1024, validator=_positive_int)
    ws_api_ping_interval_s: float = attrs.field(default=15.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"name must be a non-empty [A-Za-z0-9_-] word, got {self.name!r}")
        if self.recv_window_ms > MAX_RECV_WINDOW_MS:
            raise ValueError(
                f"recv_window_ms must be <= {MAX_RECV_WINDOW_MS}, got {self.recv_window_ms}"
            )
        if self.max_connection_age_s >= SERVER_CONNECTION_LIMIT_S:
            raise ValueError(
                "max_connection_age_s must be below the venue's 24-hour cut-off "
                f"({SERVER_CONNECTION_LIMIT_S:.0f}s), got {self.max_connection_age_s}"
            )
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")
        if self.retry_max_delay_s < self.retry_base_delay_s:
            raise ValueError("retry_max_delay_s must be >= retry_base_delay_s")
        if (self.api_key is None) != (self.api_secret is None):
            raise ValueError("api_key and api_secret must be given together")

    @property
    def has_credentials(self) -> bool:
        """Whether signed (account and order) endpoints can be used."""
        return self.api_key is not None and self.api_secret is not None

    @classmethod
    def spot_testnet(cls, **overrides: Any) -> BinanceConfig:
        """A configuration for Binance's public spot testnet (``testnet.binance.vision``)."""
        fields: dict[str, Any] = {
            "name": "binance_testnet",
            "rest_url": TESTNET_REST_URL,
            "ws_url": TESTNET_WS_URL,
            "ws_api_url": TESTNET_WS_API_URL,
        }
        fields.update(overrides)
        return cls(**fields)
