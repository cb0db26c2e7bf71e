"""The retry classifier for raw httpx2 calls, and ``Retry-After`` parsing.

What may be retried depends on whether the request can have taken effect:

==============================================  ==================  ==================
outcome                                         idempotent request  other (POST, …)
==============================================  ==================  ==================
2xx / 3xx response                              accept              accept
429 with ``Retry-After``                        wait, retry         wait, retry
429 without                                     back off, retry     back off, retry
418 with ``Retry-After`` (IP ban)               wait, retry         wait, retry
418 without                                     give up             give up
502 / 503 / 504                                 retry [#ra]_        **ambiguous**
other 5xx                                       give up             **ambiguous**
other 4xx                                       give up             give up
``ConnectError``/``ConnectTimeout``/``PoolTimeout``  retry          retry
read/write timeout or error, protocol error,    retry               **ambiguous**
``trio.TooSlowError``
``DecodingError``                               give up             **ambiguous**
other httpx2 errors (invalid URL, redirects…)   give up             give up
==============================================  ==================  ==================

.. [#ra] waiting for ``Retry-After`` instead of the backoff when the answer carries one.

The reasoning: a connect error, connect timeout or pool timeout means the
request never left, so it is always safe to send again. A 429/418 means the
peer refused to process it. Anything that fails *after* the request was
written — a timeout, a dropped connection, a 5xx, or an answer we cannot decode
— may have had its effect; for an idempotent method repeating it is harmless,
for anything else it is reported as ambiguous and never retried (an order
would be queried by its client id first, docs/ARCHITECTURE.md §4 Orders). A 418 without
``Retry-After`` is a ban of unknown length: retrying would only extend it.

A ``Retry-After`` that does not fit in what is left of the retry budget makes
the policy give up (:class:`~daemon.errors.RetryExhaustedError` with
``retry_after_s``) — freeze the limiter with it instead of hammering.
Idempotency comes from the request's method (GET, HEAD, OPTIONS, PUT, DELETE,
TRACE) unless forced with ``idempotent=``; an unknown method counts as
non-idempotent. Exceptions that are not httpx2's (e.g. the daemon's own
:mod:`daemon.errors`) go to the ``fallback`` classifier.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
from collections.abc import Callable
from typing import Any

import attrs
import httpx2
import trio

from daemon.resilience.outcomes import Outcome
from daemon.resilience.retry import Classifier, Decision, classify_by_taxonomy

__all__ = [
    "IDEMPOTENT_METHODS",
    "HttpClassifier",
    "is_idempotent",
    "parse_retry_after",
    "retry_after_s",
]

#: Methods that RFC 9110 defines as idempotent.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

#: Gateway errors worth a retry for idempotent requests.
RETRYABLE_STATUSES = frozenset({502, 503, 504})

#: "Slow down": wait for ``Retry-After``.
RATE_LIMIT_STATUSES = frozenset({429, 418})

_BAN_STATUS = 418

#: Failed before the request left: always safe to retry.
_NEVER_SENT: tuple[tuple[type[Exception], str], ...] = (
    (httpx2.ConnectTimeout, "connect_timeout"),
    (httpx2.ConnectError, "connect_error"),
    (httpx2.PoolTimeout, "pool_timeout"),
)

#: May have failed after the request was (partly) sent.
_AFTER_SEND: tuple[tuple[type[Exception], str], ...] = (
    (httpx2.ReadTimeout, "read_timeout"),
    (httpx2.WriteTimeout, "write_timeout"),
    (httpx2.ReadError, "read_error"),
    (httpx2.WriteError, "write_error"),
    (httpx2.CloseError, "close_error"),
    (httpx2.RemoteProtocolError, "remote_protocol_error"),
    (httpx2.TimeoutException, "timeout"),
    (trio.TooSlowError, "timeout"),
)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def is_idempotent(method: str) -> bool:
    """Whether repeating a request with ``method`` is harmless (RFC 9110 §9.2.2)."""
    return method.upper() in IDEMPOTENT_METHODS


def parse_retry_after(value: str | None, *, now: dt.datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` value, or ``None`` if absent/invalid.

    Accepts delay-seconds (``"120"``; fractions tolerated) and HTTP dates
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``), the latter relative to ``now`` (an
    aware datetime; naive means UTC). A date in the past gives ``0.0``.
    Whatever else a server sends is ``None``, never an exception; callers cap
    the wait where their protocol has a bound.
    """
    if value is None:
        return None
    text = value.strip()
    # A header from outside: only short ASCII values (float() would also take
    # other scripts' digits and "1_000").
    if not text or len(text) > 64 or not text.isascii() or "_" in text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or seconds < 0:
            return None
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(text)
    except Exception:  # any value the date parser chokes on counts as absent
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


def retry_after_s(
    response: httpx2.Response, *, now: Callable[[], dt.datetime] = _utc_now
) -> float | None:
    """The ``Retry-After`` of a response in seconds, or ``None``."""
    return parse_retry_after(response.headers.get("retry-after"), now=now())


def _method_of(carrier: httpx2.Response | httpx2.HTTPError) -> str | None:
    try:
        return carrier.request.method
    except RuntimeError:  # no request attached
        return None


@attrs.frozen(kw_only=True)
class HttpClassifier:
    """Classify httpx2 responses and errors (see the module docstring).

    Use it as a :class:`~daemon.resilience.RetryPolicy` classifier::

        policy = RetryPolicy(name="binance.rest", classifier=HttpClassifier())

    Attributes:
        idempotent: Force the idempotency judgement (``None``: from the
            request method). ``idempotent=True`` on a POST is a promise that
            repeating it is harmless (e.g. the venue deduplicates it).
        now: Wall clock for ``Retry-After`` dates (inject in tests).
        fallback: Judges outcomes that are not httpx2's.
    """

    idempotent: bool | None = None
    now: Callable[[], dt.datetime] = attrs.field(default=_utc_now, eq=False)
    fallback: Classifier = attrs.field(default=classify_by_taxonomy, eq=False)

    def _idempotent(self, carrier: httpx2.Response | httpx2.HTTPError) -> bool:
        if self.idempotent is not None:
            return self.idempotent
        method = _method_of(carrier)
        return method is not None and is_idempotent(method)

    def __call__(self, outcome: Outcome[Any]) -> Decision:
        error = outcome.error
        if error is None:
            if isinstance(outcome.result, httpx2.Response):
                return self.classify_response(outcome.result)
            return self.fallback(outcome)
        if isinstance(error, httpx2.HTTPStatusError):
            return self.classify_response(error.response)
        for kind, reason in _NEVER_SENT:
            if isinstance(error, kind):
                return Decision.retry(reason)
        for kind, reason in _AFTER_SEND:
            if isinstance(error, kind):
                return self._after_send(error, reason)
        if isinstance(error, httpx2.DecodingError):
            if self._idempotent(error):
                return Decision.give_up("decode_error")
            return Decision.ambiguous("decode_error")
        if isinstance(error, httpx2.HTTPError | httpx2.InvalidURL):
            return Decision.give_up(f"http_error:{type(error).__name__}")
        return self.fallback(outcome)

    def _after_send(self, error: Exception, reason: str) -> Decision:
        if isinstance(error, httpx2.HTTPError):
            idempotent = self._idempotent(error)
        else:  # trio.TooSlowError carries no request
            idempotent = bool(self.idempotent)
        return Decision.retry(reason) if idempotent else Decision.ambiguous(reason)

    def classify_response(self, response: httpx2.Response) -> Decision:
        """Judge one response by status, method and ``Retry-After``."""
        status = response.status_code
        reason = f"http_{status}"
        if status < 400:
            return Decision.accept(reason)
        if status in RATE_LIMIT_STATUSES:
            wait_s = retry_after_s(response, now=self.now)
            if wait_s is not None:
                return Decision.retry_after(wait_s, reason)
            if status == _BAN_STATUS:
                return Decision.give_up(f"{reason}_without_retry_after")
            return Decision.retry(reason)
        if status >= 500:
            if not self._idempotent(response):
                return Decision.ambiguous(reason)
            if status in RETRYABLE_STATUSES:
                wait_s = retry_after_s(response, now=self.now)
                if wait_s is not None:
                    return Decision.retry_after(wait_s, reason)
                return Decision.retry(reason)
            return Decision.give_up(reason)
        return Decision.give_up(reason)
