"""Rate limits as the venue states them: documented defaults, usage headers, ``Retry-After``.

* :data:`DEFAULT_RATE_LIMITS` — Binance's documented limits, used until
  ``exchangeInfo`` is read.
* Usage headers — ``X-MBX-USED-WEIGHT-<n><S|M|H|D>`` and
  ``X-MBX-ORDER-COUNT-<n><S|M|H|D>``: the venue's own count for one window
  (:class:`UsageReport`, :func:`parse_usage_headers`), which corrects the
  client's limiter. A header that cannot be read is ignored.
* ``Retry-After`` — seconds or an HTTP date, capped at
  :data:`MAX_RETRY_AFTER_S` (:func:`read_retry_after`); a value that cannot be
  read is treated as absent. :mod:`.errors` puts it on the rate-limited error.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from collections.abc import Iterable

import attrs

from daemon.model.instruments import RateLimitInterval, RateLimitRule, RateLimitType
from daemon.resilience.http import parse_retry_after

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "MAX_RETRY_AFTER_S",
    "UsageReport",
    "find_header",
    "parse_usage_headers",
    "read_retry_after",
]

#: Binance's documented default limits, used until ``exchangeInfo`` is read.
DEFAULT_RATE_LIMITS: tuple[RateLimitRule, ...] = (
    RateLimitRule(RateLimitType.REQUEST_WEIGHT, RateLimitInterval.MINUTE, 1, 6000),
    RateLimitRule(RateLimitType.ORDERS, RateLimitInterval.SECOND, 10, 100),
    RateLimitRule(RateLimitType.ORDERS, RateLimitInterval.DAY, 1, 200_000),
    RateLimitRule(RateLimitType.RAW_REQUESTS, RateLimitInterval.MINUTE, 5, 61_000),
)

#: Longest ``Retry-After`` honoured (Binance's longest IP ban is 3 days).
MAX_RETRY_AFTER_S = 3 * 24 * 3600.0
_MAX_RETRY_AFTER_CHARS = 64

# --------------------------------------------------------------------------- usage headers

_USAGE_HEADER = re.compile(
    r"\Ax-mbx-(used-weight|order-count)-([0-9]{1,6})([smhd])\Z", re.IGNORECASE | re.ASCII
)
#: A usage count: ASCII digits only (``int`` would accept other scripts' digits).
_USAGE_VALUE = re.compile(r"\A[0-9]{1,18}\Z")


@attrs.frozen
class UsageReport:
    """The venue's own count for one limit window, from a response header.

    ``X-MBX-USED-WEIGHT-1M: 53`` is ``UsageReport(REQUEST_WEIGHT, 1, MINUTE, 53)``.
    """

    type: RateLimitType
    interval_num: int
    interval: RateLimitInterval
    used: int

    @property
    def window_name(self) -> str:
        """The limiter window it corrects (see :attr:`RateLimitRule.window_name`)."""
        return f"{self.type.value}:{self.interval_num}{self.interval.letter}"


def parse_usage_headers(headers: Iterable[tuple[str, str]]) -> tuple[UsageReport, ...]:
    """Every ``X-MBX-USED-WEIGHT-*`` / ``X-MBX-ORDER-COUNT-*`` header (names case-insensitive).

    Headers with a value that is not a plain count (ASCII digits, at most 18)
    are skipped, and so is anything else odd about a header: a correction is
    optional, and a bad header must not fail a good answer.
    """
    reports = []
    for name, value in headers:
        try:
            report = _usage_report(name, value)
        except Exception:  # a hostile header is ignored, never a failed answer
            continue
        if report is not None:
            reports.append(report)
    return tuple(reports)


def _usage_report(name: str, value: str) -> UsageReport | None:
    window = _usage_window(name)
    if window is None:
        return None
    text = value.strip()
    if not _USAGE_VALUE.match(text):
        return None
    kind, interval_num, interval = window
    return UsageReport(kind, interval_num, interval, int(text))


#: Usage header names parsed (every answer carries the same few; bounded against
#: a venue that makes up new ones).
_USAGE_NAMES_CACHED = 64


@functools.lru_cache(maxsize=_USAGE_NAMES_CACHED)
def _usage_window(name: str) -> tuple[RateLimitType, int, RateLimitInterval] | None:
    """The window a usage header's name counts for, parsed once per distinct name."""
    match = _USAGE_HEADER.match(name.strip())
    if match is None:
        return None
    kind = (
        RateLimitType.REQUEST_WEIGHT
        if match.group(1).lower() == "used-weight"
        else RateLimitType.ORDERS
    )
    interval_num = int(match.group(2))
    if interval_num < 1:
        return None
    return kind, interval_num, RateLimitInterval.from_letter(match.group(3))


def read_retry_after(value: str | None, now: dt.datetime) -> float | None:
    """``Retry-After`` in seconds, capped at :data:`MAX_RETRY_AFTER_S`; ``None`` if unusable.

    Never raises: a value that cannot be parsed (garbage, a date out of
    range, huge numbers) is treated as absent.
    """
    if value is None or len(value) > _MAX_RETRY_AFTER_CHARS:
        return None  # an HTTP date is 29 characters
    try:
        seconds = parse_retry_after(value, now=now)
    except Exception:
        return None
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER_S)


def find_header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """The value of the first header called ``name`` (case-insensitive), or ``None``."""
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None
