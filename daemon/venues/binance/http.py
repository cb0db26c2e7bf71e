"""The REST client's HTTP request layer: one request, from spec to answer bytes.

:class:`RestExchange` takes a :class:`~.codec.RequestSpec` through the
pipeline the REST client (:mod:`.rest`) describes, and hands back the answer
(or the model, with :meth:`RestExchange.request`)::

    time sync (signed only)  →  rate limiter  →  [circuit breaker]  →  HTTP (bounded)
        →  usage headers → limiter correction  →  error mapping

* The prepared request is built whole and handed to httpx2's ``send``; its
  answer's body is read up to ``codec.MAX_BODY_BYTES`` and no further.
* The parameters of a mutating request (``POST``/``DELETE``: new order,
  cancel) travel as an ``application/x-www-form-urlencoded`` body, signed
  over exactly those body bytes (Binance's "SIGNED endpoint security"), so
  its URL is short and constant: httpx2 parses it once (its parse cache)
  instead of character by character per order, which a long signed query
  string cost every new order. Queries (``GET``) keep their parameters in
  the query string.
* ``on_sent`` (new orders) is called from httpx2's ``trace`` extension once
  the whole request is on the connection.
* Queries (GET) are retried by a bounded :class:`~daemon.resilience.RetryPolicy`
  (:func:`classify_rest_outcome`); a request refused with ``-1021`` (timestamp
  out of the receive window) is re-signed after a clock resync and sent once
  more, whatever its method.
* Errors are mapped once, here: HTTP errors by :func:`.codec.error_from_response`,
  transport errors by :class:`~daemon.resilience.HttpClassifier`, an
  undecodable answer to a mutating request into
  :class:`~daemon.errors.VenueOutcomeUnknownError`. No text carries the API
  key, the secret or a signature; httpx2's own request log line is filtered
  so the signature in the URL is masked.

The clock (:class:`~.clock.VenueClock`) and the limits
(:class:`~.admission.VenueLimits`) are the REST client's, given in.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
from collections.abc import Callable
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
from daemon.resilience import (
    CircuitBreaker,
    Decision,
    HttpClassifier,
    Outcome,
    RetryPolicy,
    Verdict,
    classify_by_taxonomy,
)
from daemon.venues.binance import codec
from daemon.venues.binance.admission import VenueLimits
from daemon.venues.binance.clock import VenueClock
from daemon.venues.binance.config import BinanceConfig

__all__ = ["Answer", "RestExchange", "classify_rest_outcome"]

# The REST client's logger: these lines were its own before the HTTP layer was split out.
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
class Answer:
    """One successful (HTTP < 300) answer, as read, with when it was sent and received."""

    body: bytes
    status: int
    sent_ms: int
    received_ms: int
    #: The body was longer than ``codec.MAX_BODY_BYTES``: not read past it.
    oversized: bool = False


class RestExchange:
    """The HTTP request layer of one venue's REST client.

    Args:
        config: Venue configuration (URLs, credentials, timeouts, retries).
        clock: The venue clock signed requests are stamped with.
        limits: The rate-limit admission every request passes first.
        transport: httpx2 transport (``httpx2.MockTransport`` in tests); the
            default connects to ``config.rest_url``.
        wall_clock_ms: Local wall clock in epoch ms, stamping each exchange
            (sent, received).
        rng: Jitter source of the query retries.
        breaker: Optional circuit breaker around each HTTP exchange.
    """

    def __init__(
        self,
        config: BinanceConfig,
        clock: VenueClock,
        limits: VenueLimits,
        *,
        transport: httpx2.AsyncBaseTransport | None,
        wall_clock_ms: Callable[[], int],
        rng: random.Random | None,
        breaker: CircuitBreaker | None,
    ) -> None:
        _install_httpx_log_filter()
        self._config = config
        self.name = config.name
        self._clock = clock
        self._limits = limits
        self._wall_clock_ms = wall_clock_ms
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
        self.retry = RetryPolicy(
            name=f"{config.name}.rest",
            max_attempts=config.retry_max_attempts,
            max_elapsed_s=config.retry_max_elapsed_s,
            base_delay_s=config.retry_base_delay_s,
            max_delay_s=config.retry_max_delay_s,
            classifier=classify_rest_outcome,
            rng=rng if rng is not None else random.Random(),
        )

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.aclose()

    async def request(
        self,
        spec: codec.RequestSpec,
        parse: Callable[[bytes], T],
        *,
        on_sent: Callable[[], None] | None = None,
    ) -> T:
        """Send ``spec`` (a query with retries, a mutating request once) and parse the answer."""
        answer = await (self._send_resyncing(spec, on_sent) if spec.mutating else self.query(spec))
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

    async def query(self, spec: codec.RequestSpec) -> Answer:
        """Send a query, retried by the policy; the answer as read."""
        async for attempt in self.retry:
            with attempt:
                return await self._send_resyncing(spec)
        raise AssertionError("unreachable: a retry loop ends by returning or raising")

    async def _send_resyncing(
        self, spec: codec.RequestSpec, on_sent: Callable[[], None] | None = None
    ) -> Answer:
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
        in_body = spec.mutating  # POST/DELETE: a form body, a constant URL
        if spec.security is not codec.Security.SIGNED:
            return codec.prepare(spec, api_key=api_key, params_in_body=in_body)
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
            params_in_body=in_body,
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
    ) -> Answer:
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
    ) -> Answer:
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
        return Answer(body, status, sent_ms, received_ms, oversized)

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
