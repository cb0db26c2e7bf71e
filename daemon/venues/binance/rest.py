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
* **Errors** are translated once, here, into :mod:`daemon.errors` (``raise …
  from exc``). Messages carry the endpoint (method and path) and the venue's
  code and message, never the query string, the API key, the secret or a
  signature; httpx2's own request log line is filtered so the signature in
  the URL is masked.

Usage::

    async with BinanceRestClient(config) as client:
        info = await client.exchange_info()
        book = await client.depth("BTCUSDT", limit=100)
        report = await client.new_order(order)
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import attrs
import httpx2
import trio

from daemon.errors import (
    TimestampOutOfWindowError,
    VenueDecodeError,
    VenueError,
    VenueOutcomeUnknownError,
    VenueRateLimitedError,
    VenueRequestError,
    VenueUnavailableError,
)
from daemon.model.instruments import ExchangeInfo, RateLimitRule
from daemon.model.marketdata import DepthSnapshot, Trade
from daemon.model.orders import AccountInfo, FillReport, NewOrder, OrderReport, OrderResponseType
from daemon.resilience import (
    CircuitBreaker,
    Decision,
    HttpClassifier,
    Outcome,
    RetryPolicy,
    SlidingWindowLimiter,
    Verdict,
    classify_by_taxonomy,
)
from daemon.venues.binance import codec
from daemon.venues.binance.admission import VenueLimits
from daemon.venues.binance.clock import VenueClock, local_wall_clock_ms
from daemon.venues.binance.config import BinanceConfig

__all__ = ["BinanceRestClient", "classify_rest_outcome"]

log = logging.getLogger("tradingd.venues.binance.rest")

T = TypeVar("T")

_REDACTED = "***"
_SIGNATURE_IN_TEXT = re.compile(r"(signature=)[0-9A-Za-z%]+")


class _SignatureLogFilter(logging.Filter):
    """Masks ``signature=…`` in httpx2's "HTTP Request: GET <url>" log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _SIGNATURE_IN_TEXT.sub(r"\1" + _REDACTED, message)
        if masked != message:
            record.msg = masked
            record.args = None
        return True


_HTTPX_LOG_FILTER = _SignatureLogFilter()


def _install_httpx_log_filter() -> None:
    logger = logging.getLogger("httpx2")
    if _HTTPX_LOG_FILTER not in logger.filters:
        logger.addFilter(_HTTPX_LOG_FILTER)


def classify_rest_outcome(outcome: Outcome[Any]) -> Decision:
    """The retry classifier of REST queries: the error taxonomy, minus two waits.

    A local limiter timeout (``http_status is None``) and a 418 ban without
    ``Retry-After`` are given up at once: waiting again would only queue
    behind the same freeze, or extend a ban of unknown length.
    """
    error = outcome.error
    if isinstance(error, VenueRateLimitedError):
        if error.http_status is None:
            return Decision.give_up("local_rate_limit")
        if error.banned and error.retry_after_s is None:
            return Decision.give_up("banned")
    return classify_by_taxonomy(outcome)


@attrs.frozen
class _Answer:
    body: bytes
    status: int
    sent_ms: int
    received_ms: int
    #: The body was longer than ``codec.MAX_BODY_BYTES``: not read past it.
    oversized: bool = False


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
        _install_httpx_log_filter()
        self._config = config
        self.name = config.name
        self._wall_clock_ms = wall_clock_ms  # stamps each exchange (sent, received)
        self._breaker = breaker
        self._http = httpx2.AsyncClient(
            base_url=config.rest_url,
            timeout=httpx2.Timeout(config.request_timeout_s, connect=config.connect_timeout_s),
            transport=transport,
            headers={"User-Agent": "tradingd"},
            follow_redirects=False,
        )
        # Each request is built whole here and handed to ``send`` (the client's
        # headers and timeout included), not merged by ``request``: one URL parse
        # and one header list a request instead of several copies. The URL is
        # joined as httpx2 joins ``base_url`` and a relative one. No cookies: the
        # Binance API does not use them.
        base = str(self._http.base_url)
        self._url_prefix = base if base.endswith("/") else base + "/"
        self._base_headers = tuple(self._http.headers.multi_items())
        self._extensions: dict[str, Any] = {"timeout": self._http.timeout.as_dict()}
        self._limits = VenueLimits.for_venue(config)
        self._clock = VenueClock(
            config.name,
            measure=self.server_time,
            resync_interval_s=config.time_resync_interval_s,
            wall_clock_ms=wall_clock_ms,
        )
        self._retry = RetryPolicy(
            name=f"{config.name}.rest",
            max_attempts=config.retry_max_attempts,
            max_elapsed_s=config.retry_max_elapsed_s,
            base_delay_s=config.retry_base_delay_s,
            max_delay_s=config.retry_max_delay_s,
            classifier=classify_rest_outcome,
            rng=rng if rng is not None else random.Random(),
        )

    def __repr__(self) -> str:
        return f"BinanceRestClient({self.name!r}, {self._config.rest_url!r})"

    async def __aenter__(self) -> BinanceRestClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.aclose()

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
        return self._retry

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state for ``/status``: limiter, retries, clock offset."""
        limiter = self._limits.limiter
        return {
            "venue": self.name,
            "time_offset_ms": self._clock.offset_ms,
            "time_resyncs": self._clock.resyncs,
            "freezes": self._limits.freezes,
            "limiter": limiter.snapshot() if limiter is not None else None,
            "retries": self._retry.stats.snapshot(),
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
        await self._request(codec.ping_request(), lambda body: None)

    async def server_time(self) -> int:
        """The venue's clock (epoch ms); also refreshes the clock offset."""
        answer = await self._query(codec.server_time_request())
        server_ms = codec.parse_server_time(answer.body, venue=self.name)
        self._clock.record(server_ms, answer.sent_ms, answer.received_ms)
        return server_ms

    async def sync_time(self) -> int:
        """Measure the server clock offset now; returns it (ms, server minus local)."""
        return await self._clock.sync()

    async def exchange_info(self, symbols: Sequence[str] | None = None) -> ExchangeInfo:
        """``GET /api/v3/exchangeInfo``; also installs the venue's rate limits."""
        info = await self._request(
            codec.exchange_info_request(symbols),
            partial(codec.parse_exchange_info, venue=self.name),
        )
        self.install_rate_limits(info.rate_limits)
        return info

    async def depth(self, symbol: str, limit: int = 100) -> DepthSnapshot:
        """``GET /api/v3/depth``: a book snapshot with its ``lastUpdateId``."""
        return await self._request(
            codec.depth_request(symbol, limit),
            partial(codec.parse_depth, symbol=symbol.upper(), venue=self.name),
        )

    async def recent_trades(self, symbol: str, limit: int = 500) -> list[Trade]:
        """``GET /api/v3/trades``: the latest ``limit`` trades, oldest first."""
        return await self._request(
            codec.recent_trades_request(symbol, limit),
            partial(codec.parse_trades, symbol=symbol.upper(), venue=self.name),
        )

    async def historical_trades(
        self, symbol: str, from_id: int | None = None, limit: int = 500
    ) -> list[Trade]:
        """``GET /api/v3/historicalTrades``: ``limit`` trades starting at trade id ``from_id``."""
        return await self._request(
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
        return await self._request(
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
        return await self._request(
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
        return await self._request(
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
        return await self._request(
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
        return await self._request(
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
        return await self._request(
            codec.account_request(omit_zero_balances=omit_zero_balances),
            partial(codec.parse_account, venue=self.name),
        )

    # ------------------------------------------------------------------ machinery

    async def _request(
        self,
        spec: codec.RequestSpec,
        parse: Callable[[bytes], T],
        *,
        on_sent: Callable[[], None] | None = None,
    ) -> T:
        answer = await (self._send_resyncing(spec, on_sent) if spec.mutating else self._query(spec))
        try:
            if answer.oversized:
                raise VenueDecodeError(
                    f"{self.name} {spec.endpoint}: answer longer than "
                    f"{codec.MAX_BODY_BYTES} bytes, not read",
                    raw=answer.body[:1024],
                    venue=self.name,
                    endpoint=spec.endpoint,
                )
            return parse(answer.body)
        except VenueDecodeError as exc:
            if not spec.mutating:
                raise
            raise VenueOutcomeUnknownError(
                f"{self.name} {spec.endpoint}: HTTP {answer.status} answer could not be "
                f"decoded; the request may have taken effect",
                venue=self.name,
                http_status=answer.status,
                endpoint=spec.endpoint,
            ) from exc

    async def _query(self, spec: codec.RequestSpec) -> _Answer:
        async for attempt in self._retry:
            with attempt:
                return await self._send_resyncing(spec)
        raise AssertionError("unreachable: a retry loop ends by returning or raising")

    async def _send_resyncing(
        self, spec: codec.RequestSpec, on_sent: Callable[[], None] | None = None
    ) -> _Answer:
        try:
            return await self._send(spec, on_sent)
        except TimestampOutOfWindowError:
            if spec.security is not codec.Security.SIGNED:
                raise
            await self._clock.resync_after_timestamp_error(spec.endpoint)
            return await self._send(spec, on_sent)

    def _prepare(self, spec: codec.RequestSpec) -> codec.PreparedRequest:
        config = self._config
        api_key = config.api_key.reveal() if config.api_key is not None else None
        if spec.security is not codec.Security.SIGNED:
            return codec.prepare(spec, api_key=api_key)
        if config.api_secret is None or api_key is None:
            raise VenueRequestError(
                f"{self.name} {spec.endpoint}: needs api_key and api_secret in the venue's "
                "configuration",
                venue=self.name,
                endpoint=spec.endpoint,
            )
        assert self._clock.offset_ms is not None
        return codec.prepare(
            spec,
            api_key=api_key,
            api_secret=config.api_secret.reveal(),
            timestamp_ms=self._clock.venue_time_ms(),
            recv_window_ms=config.recv_window_ms,
        )

    def _scrubber(self, prepared: codec.PreparedRequest) -> Callable[[str], str]:
        """What masks this request's secrets in error text (built only for an error)."""
        secrets = [
            s.reveal()
            for s in (self._config.api_key, self._config.api_secret)
            if s is not None and s.reveal()
        ]
        _, signature = codec.split_signature(prepared.query or prepared.body)
        if signature:
            secrets.append(signature)

        def scrub(text: str) -> str:
            for secret in secrets:
                text = text.replace(secret, _REDACTED)
            return _SIGNATURE_IN_TEXT.sub(r"\1" + _REDACTED, text)

        return scrub

    async def _send(
        self, spec: codec.RequestSpec, on_sent: Callable[[], None] | None = None
    ) -> _Answer:
        """One exchange with the venue: acquire, send, observe, map errors."""
        if spec.security is codec.Security.SIGNED:
            await self._clock.ensure_synced()
        await self._limits.acquire(spec.weight, spec.order_count, spec.endpoint)
        prepared = self._prepare(spec)  # after the wait: the timestamp must be fresh
        if self._breaker is not None:
            async with self._breaker.protect():
                return await self._exchange(spec, prepared, on_sent)
        return await self._exchange(spec, prepared, on_sent)

    async def _exchange(
        self,
        spec: codec.RequestSpec,
        prepared: codec.PreparedRequest,
        on_sent: Callable[[], None] | None = None,
    ) -> _Answer:
        sent_ms = self._wall_clock_ms()
        started = trio.current_time()
        extensions = self._extensions
        if on_sent is not None:
            extensions = {**extensions, "trace": _call_when_sent(on_sent)}
        try:
            request = httpx2.Request(
                prepared.method,
                self._url_prefix + prepared.target.lstrip("/"),
                content=prepared.body.encode("utf-8") if prepared.body else None,
                headers=(*self._base_headers, *prepared.headers),
                extensions=extensions,
            )
            with trio.fail_after(self._config.request_timeout_s):
                response = await self._http.send(request, stream=True)
                body, oversized = await _read_body(response, codec.MAX_BODY_BYTES)
        except (httpx2.HTTPError, httpx2.InvalidURL, trio.TooSlowError) as exc:
            raise self._transport_error(spec, exc, self._scrubber(prepared)) from exc
        received_ms = self._wall_clock_ms()
        status = response.status_code
        log.debug(
            "%s %s -> HTTP %d (weight %d) in %.3fs",
            self.name,
            spec.endpoint,
            status,
            spec.weight,
            trio.current_time() - started,
        )
        self._observe_usage(response)
        if status >= 300:
            error = codec.error_from_response(
                status,
                self._scrubber(prepared)(body.decode("utf-8", "replace")),
                response.headers.multi_items(),
                venue=self.name,
                endpoint=spec.endpoint,
                mutating=spec.mutating,
            )
            if isinstance(error, VenueRateLimitedError) and error.retry_after_s is not None:
                self._limits.freeze(error.retry_after_s, error)
            raise error
        return _Answer(body, status, sent_ms, received_ms, oversized)

    def _observe_usage(self, response: httpx2.Response) -> None:
        if self._limits.limiter is None:
            return
        usage = [  # only the venue's own headers are decoded and parsed
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in response.headers.raw
            if name[:6].lower() == b"x-mbx-"
        ]
        self._limits.observe_usage(codec.parse_usage_headers(usage))

    def _transport_error(
        self, spec: codec.RequestSpec, exc: Exception, scrub: Callable[[str], str]
    ) -> VenueError:
        decision = HttpClassifier(idempotent=not spec.mutating)(Outcome.failure(exc))
        detail = scrub(f"{type(exc).__name__}: {exc}")
        fields: dict[str, Any] = {"venue": self.name, "endpoint": spec.endpoint}
        prefix = f"{self.name} {spec.endpoint}"
        if decision.verdict is Verdict.AMBIGUOUS:
            return VenueOutcomeUnknownError(
                f"{prefix}: {decision.reason} after sending; the request may have taken "
                f"effect ({detail})",
                **fields,
            )
        if decision.verdict in (Verdict.RETRY, Verdict.RETRY_AFTER):
            what = "not sent" if _never_sent(exc) else "failed"
            return VenueUnavailableError(
                f"{prefix}: {decision.reason}, {what} ({detail})", **fields
            )
        return VenueRequestError(f"{prefix}: request could not be made ({detail})", **fields)


#: The httpcore trace event (``http11.``/``http2.`` prefixed) after which the
#: whole request is on the connection.
_REQUEST_WRITTEN = ".send_request_body.complete"


def _call_when_sent(on_sent: Callable[[], None]) -> Callable[[str, dict[str, Any]], Any]:
    """An httpx2 ``trace`` extension calling ``on_sent`` once the request is written.

    Transports that do not trace (``httpx2.MockTransport``) never call it;
    the caller must not depend on it (the executor also signals when the
    send ends).
    """

    async def trace(event_name: str, info: dict[str, Any]) -> None:
        if event_name.endswith(_REQUEST_WRITTEN):
            on_sent()

    return trace


async def _read_body(response: httpx2.Response, limit: int) -> tuple[bytes, bool]:
    """The body of a streamed response, read up to ``limit`` bytes; ``(body, oversized)``.

    A venue (or anything on the path) cannot make the client hold more than
    ``limit`` bytes of one answer: past it, reading stops and the connection
    is closed. An oversized error body keeps its first ``limit`` bytes (only
    its start is ever shown).
    """
    chunks: list[bytes] = []
    size = 0
    try:
        async with contextlib.aclosing(response.aiter_bytes()) as parts:
            async for chunk in parts:  # decoded: a compressed bomb is cut too
                size += len(chunk)
                if size > limit:
                    chunks.append(chunk[: len(chunk) - (size - limit)])
                    return b"".join(chunks), True
                chunks.append(chunk)
        return b"".join(chunks), False
    finally:
        await response.aclose()


def _never_sent(exc: Exception) -> bool:
    return isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout | httpx2.PoolTimeout)
