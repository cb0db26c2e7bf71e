"""The Binance Spot REST client: a thin async shell over :mod:`.codec` and httpx2.

Per request, in this order::

    time sync (signed only)  →  rate limiter  →  [circuit breaker]  →  HTTP (bounded)
        →  usage headers → limiter correction  →  error mapping  →  model

* **Clock** (:class:`~.clock.VenueClock`, :attr:`BinanceRestClient.clock`).
  Signed requests carry ``timestamp = local wall clock + offset``; the offset
  is measured with ``GET /api/v3/time`` (server time minus the midpoint of the
  round trip), lazily before the first signed request, again when older than
  ``time_resync_interval_s``, and at once after a ``-1021`` answer — after
  which the request is re-signed and sent **once** more (a ``-1021`` is
  refused before processing, so resending cannot duplicate).
* **Rate limits** (:class:`~.admission.VenueLimits`,
  :attr:`BinanceRestClient.limits`). One sliding window per
  ``exchangeInfo.rateLimits`` rule (Binance's documented defaults until
  :meth:`exchange_info` is called). Each request acquires its endpoint weight
  (``REQUEST_WEIGHT``), 1 (``RAW_REQUESTS``) and, for a new order, 1 per
  ``ORDERS`` window *before* it is sent; the
  ``X-MBX-USED-WEIGHT-*``/``X-MBX-ORDER-COUNT-*`` headers of every answer
  correct the windows upwards; a 429/418 ``Retry-After`` freezes the limiter.
  A request that cannot be admitted within ``limiter_max_wait_s`` fails with
  :class:`~daemon.errors.VenueRateLimitedError` (``http_status is None``)
  *without being sent*.

The clock and the limits are shared with the WebSocket API clients
(:mod:`.wssession`), which take them from this client.
* **Retries.** Only queries (GET) are retried, by a bounded
  :class:`~daemon.resilience.RetryPolicy` following the error taxonomy
  (transport errors are first judged by
  :class:`~daemon.resilience.HttpClassifier`). ``POST``/``DELETE /api/v3/order``
  are never retried: a 5xx, ``-1000/-1006/-1007``, a timeout after sending or
  an undecodable answer raises :class:`~daemon.errors.VenueOutcomeUnknownError`
  — the order may exist; query it by client id (docs/ARCHITECTURE.md §4 Orders).
* **Errors** are translated once, in the HTTP layer, into :mod:`daemon.errors` (``raise …
  from exc``). Messages carry the endpoint (method and path) and the venue's
  code and message, never the query string, the API key, the secret or a
  signature; httpx2's own request log line is filtered so the signature in
  the URL is masked.

This class is the API surface (endpoints, state, ``/status``); the request
pipeline above (signing, sending, retries, error mapping) is
:class:`~.http.RestExchange`.

Usage::

    async with BinanceRestClient(config) as client:
        info = await client.exchange_info()
        book = await client.depth("BTCUSDT", limit=100)
        report = await client.new_order(order)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import httpx2

from daemon.model.instruments import ExchangeInfo, RateLimitRule
from daemon.model.marketdata import DepthSnapshot, Trade
from daemon.model.orders import AccountInfo, FillReport, NewOrder, OrderReport, OrderResponseType
from daemon.resilience import CircuitBreaker, RetryPolicy, SlidingWindowLimiter
from daemon.venues.binance import codec
from daemon.venues.binance.admission import VenueLimits
from daemon.venues.binance.clock import VenueClock, local_wall_clock_ms
from daemon.venues.binance.config import BinanceConfig
from daemon.venues.binance.http import RestExchange, classify_rest_outcome

__all__ = ["BinanceRestClient", "classify_rest_outcome"]


class BinanceRestClient:
    """Async client of the Binance Spot REST API subset tradingd uses.

    Satisfies :class:`daemon.venues.base.Venue`'s REST half. Not tied to one
    task: concurrent calls share the limiter and the clock offset.

    Args:
        config: Venue configuration (URLs, credentials, timeouts, retries).
        transport: httpx2 transport (``httpx2.MockTransport`` in tests); the
            default connects to ``config.rest_url``.
        wall_clock_ms: Local wall clock in epoch ms (inject in tests).
        rng: Jitter source of the query retries (``random.Random(seed)`` in tests).
        breaker: Optional circuit breaker around each HTTP exchange; when it
            is open a call fails with ``CircuitRejectedError`` without being sent.
    """

    def __init__(
        self,
        config: BinanceConfig,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
        wall_clock_ms: Callable[[], int] = local_wall_clock_ms,
        rng: random.Random | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._config = config
        self.name = config.name
        self._wall_clock_ms = wall_clock_ms  # stamps each exchange (sent, received)
        self._limits = VenueLimits.for_venue(config)
        self._clock = VenueClock(
            config.name,
            measure=self.server_time,
            resync_interval_s=config.time_resync_interval_s,
            wall_clock_ms=wall_clock_ms,
        )
        self._exchange = RestExchange(
            config,
            self._clock,
            self._limits,
            transport=transport,
            wall_clock_ms=self._stamp_ms,
            rng=rng,
            breaker=breaker,
        )

    def _stamp_ms(self) -> int:
        # Read at every exchange, so a test may replace ``_wall_clock_ms`` on the client.
        return self._wall_clock_ms()

    def __repr__(self) -> str:
        return f"BinanceRestClient({self.name!r}, {self._config.rest_url!r})"

    async def __aenter__(self) -> BinanceRestClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._exchange.aclose()

    # ------------------------------------------------------------------ state

    @property
    def config(self) -> BinanceConfig:
        """The configuration this client was built with."""
        return self._config

    @property
    def clock(self) -> VenueClock:
        """The venue clock (offset) signed requests use, shared with the WebSocket API."""
        return self._clock

    @property
    def limits(self) -> VenueLimits:
        """The rate-limit admission, shared with the WebSocket API."""
        return self._limits

    @property
    def limiter(self) -> SlidingWindowLimiter | None:
        """The current rate limiter (``None`` when the venue declares no limits)."""
        return self._limits.limiter

    @property
    def rate_limits(self) -> tuple[RateLimitRule, ...]:
        """The rules the limiter enforces."""
        return self._limits.rules

    @property
    def time_offset_ms(self) -> int | None:
        """Server clock minus local clock, as last measured (``None`` before the first)."""
        return self._clock.offset_ms

    @property
    def retry_policy(self) -> RetryPolicy:
        """The policy (and its stats) of query retries."""
        return self._exchange.retry

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state for ``/status``: limiter, retries, clock offset."""
        limiter = self._limits.limiter
        return {
            "venue": self.name,
            "time_offset_ms": self._clock.offset_ms,
            "time_resyncs": self._clock.resyncs,
            "freezes": self._limits.freezes,
            "limiter": limiter.snapshot() if limiter is not None else None,
            "retries": self._exchange.retry.stats.snapshot(),
        }

    def install_rate_limits(self, rules: Sequence[RateLimitRule]) -> None:
        """Enforce ``rules`` from now on (called by :meth:`exchange_info`).

        Usage counted so far and a running freeze carry over to windows of
        the same name; requests already waiting finish on the old limiter.
        """
        self._limits.install(rules)

    # ------------------------------------------------------------------ public API

    async def ping(self) -> None:
        """``GET /api/v3/ping``: succeeds when the venue answers."""
        await self._exchange.request(codec.ping_request(), lambda body: None)

    async def server_time(self) -> int:
        """The venue's clock (epoch ms); also refreshes the clock offset."""
        answer = await self._exchange.query(codec.server_time_request())
        server_ms = codec.parse_server_time(answer.body, venue=self.name)
        self._clock.record(server_ms, answer.sent_ms, answer.received_ms)
        return server_ms

    async def sync_time(self) -> int:
        """Measure the server clock offset now; returns it (ms, server minus local)."""
        return await self._clock.sync()

    async def exchange_info(self, symbols: Sequence[str] | None = None) -> ExchangeInfo:
        """``GET /api/v3/exchangeInfo``; also installs the venue's rate limits."""
        info = await self._exchange.request(
            codec.exchange_info_request(symbols),
            partial(codec.parse_exchange_info, venue=self.name),
        )
        self.install_rate_limits(info.rate_limits)
        return info

    async def depth(self, symbol: str, limit: int = 100) -> DepthSnapshot:
        """``GET /api/v3/depth``: a book snapshot with its ``lastUpdateId``."""
        return await self._exchange.request(
            codec.depth_request(symbol, limit),
            partial(codec.parse_depth, symbol=symbol.upper(), venue=self.name),
        )

    async def recent_trades(self, symbol: str, limit: int = 500) -> list[Trade]:
        """``GET /api/v3/trades``: the latest ``limit`` trades, oldest first."""
        return await self._exchange.request(
            codec.recent_trades_request(symbol, limit),
            partial(codec.parse_trades, symbol=symbol.upper(), venue=self.name),
        )

    async def historical_trades(
        self, symbol: str, from_id: int | None = None, limit: int = 500
    ) -> list[Trade]:
        """``GET /api/v3/historicalTrades``: ``limit`` trades starting at trade id ``from_id``."""
        return await self._exchange.request(
            codec.historical_trades_request(symbol, from_id, limit),
            partial(codec.parse_trades, symbol=symbol.upper(), venue=self.name),
        )

    async def new_order(
        self,
        order: NewOrder,
        *,
        resp_type: OrderResponseType = OrderResponseType.FULL,
        on_sent: Callable[[], None] | None = None,
    ) -> OrderReport:
        """``POST /api/v3/order``. Never retried automatically.

        ``on_sent`` is called once the whole request has been written to the
        connection (the venue may be working on it from then on): the order
        pipeline answers the submitter only then, so the order goes out first.

        Raises:
            VenueOutcomeUnknownError: the order may exist (5xx, -1000/-1006/-1007,
                timeout or broken connection after sending, undecodable answer).
            VenueUnavailableError: the request was not sent (connect error) or
                refused unprocessed (-1001/-1008).
            VenueRateLimitedError: refused by the venue's or the local limiter;
                not processed.
            DuplicateOrderError: an open order already has this client id.
            OrderRejectedError: any other -2010/-1013 reject.
        """
        return await self._exchange.request(
            codec.new_order_request(order, resp_type),
            partial(codec.parse_order, venue=self.name),
            on_sent=on_sent,
        )

    async def get_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> OrderReport:
        """``GET /api/v3/order`` by client order id (preferred) or venue order id.

        Raises:
            OrderNotFoundError: -2013.
        """
        return await self._exchange.request(
            codec.get_order_request(symbol, client_order_id=client_order_id, order_id=order_id),
            partial(codec.parse_order, venue=self.name),
        )

    async def cancel_order(
        self,
        symbol: str,
        *,
        client_order_id: str | None = None,
        order_id: int | None = None,
        new_client_order_id: str | None = None,
    ) -> OrderReport:
        """``DELETE /api/v3/order``. Never retried automatically.

        Raises:
            CancelRejectedError: -2011 (unknown or already closed order).
            VenueOutcomeUnknownError: the cancel may have taken effect.
        """
        return await self._exchange.request(
            codec.cancel_order_request(
                symbol,
                client_order_id=client_order_id,
                order_id=order_id,
                new_client_order_id=new_client_order_id,
            ),
            partial(codec.parse_order, venue=self.name),
        )

    async def open_orders(self, symbol: str | None = None) -> list[OrderReport]:
        """``GET /api/v3/openOrders`` for one symbol (weight 6) or all (weight 80)."""
        return await self._exchange.request(
            codec.open_orders_request(symbol), partial(codec.parse_orders, venue=self.name)
        )

    async def my_trades(
        self,
        symbol: str,
        *,
        order_id: int | None = None,
        from_id: int | None = None,
        start_time_ms: int | None = None,
        end_time_ms: int | None = None,
        limit: int = 500,
    ) -> list[FillReport]:
        """``GET /api/v3/myTrades``: our fills on ``symbol``."""
        return await self._exchange.request(
            codec.my_trades_request(
                symbol,
                order_id=order_id,
                from_id=from_id,
                start_time_ms=start_time_ms,
                end_time_ms=end_time_ms,
                limit=limit,
            ),
            partial(codec.parse_my_trades, venue=self.name),
        )

    async def account(self, *, omit_zero_balances: bool = False) -> AccountInfo:
        """``GET /api/v3/account``: balances and permissions."""
        return await self._exchange.request(
            codec.account_request(omit_zero_balances=omit_zero_balances),
            partial(codec.parse_account, venue=self.name),
        )
