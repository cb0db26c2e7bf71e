"""Request-weight and order-count accounting, as Binance enforces it.

Binance's limits are fixed windows on the clock (the weight of minute
12:00 is forgotten at 12:01:00), so this module counts per window index
``now_ms // window_ms`` on the injectable wall clock:

* ``REQUEST_WEIGHT`` and ``RAW_REQUESTS`` per client IP. Every answer carries
  ``X-MBX-USED-WEIGHT-<n><letter>`` (e.g. ``X-MBX-USED-WEIGHT-1M``). Going over
  answers ``429`` ``-1003`` with ``Retry-After`` (seconds to the window's end).
* An IP that keeps sending while told to wait is a *violation*; after
  ``ban_after_violations`` of them the IP is banned: ``418`` ``-1003`` with
  ``Retry-After`` until the ban ends. Bans double for repeat offenders up to
  ``ban_max_s`` ("from 2 minutes to 3 days").
* ``ORDERS`` per account (API key). Successful order answers carry
  ``X-MBX-ORDER-COUNT-<n><letter>``; going over answers ``429`` ``-1015``
  *without* ``Retry-After``, as the docs say.

A request refused with 429/418 adds no weight. Pure and synchronous: callers
pass ``now_ms``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs

from daemon.venues.sim import protocol as p
from daemon.venues.sim.config import LimitsConfig, RateLimitConfig
from daemon.venues.sim.protocol import ApiError

__all__ = ["RateLimiter"]

Headers = tuple[tuple[str, str], ...]


@attrs.define
class _Window:
    spec: RateLimitConfig
    window_ms: int
    header_suffix: str
    # key (IP or API key) -> (window index, used)
    used: dict[str, tuple[int, int]] = attrs.field(factory=dict)

    def current(self, key: str, now_ms: int) -> int:
        index, used = self.used.get(key, (-1, 0))
        return used if index == now_ms // self.window_ms else 0

    def add(self, key: str, amount: int, now_ms: int) -> int:
        total = self.current(key, now_ms) + amount
        self.used[key] = (now_ms // self.window_ms, total)
        return total

    def window_end_ms(self, now_ms: int) -> int:
        return (now_ms // self.window_ms + 1) * self.window_ms

    def describe(self) -> str:
        return f"{self.spec.interval_num} {self.spec.interval}"


@attrs.define
class _IpState:
    limited_until_ms: int = 0
    violations: int = 0
    banned_until_ms: int = 0
    bans: int = 0


def _retry_after_s(until_ms: int, now_ms: int) -> int:
    return max(1, math.ceil((until_ms - now_ms) / 1000))


class RateLimiter:
    """The limits of one simulator, with the state of every IP and account."""

    def __init__(self, rate_limits: Sequence[RateLimitConfig], config: LimitsConfig) -> None:
        self.config = config
        self._weight: list[_Window] = []
        self._raw: list[_Window] = []
        self._orders: list[_Window] = []
        for spec in rate_limits:
            window_ms = p.INTERVAL_MS[spec.interval] * spec.interval_num
            suffix = f"{spec.interval_num}{p.INTERVAL_LETTERS[spec.interval]}"
            window = _Window(spec, window_ms, suffix)
            {"REQUEST_WEIGHT": self._weight, "RAW_REQUESTS": self._raw, "ORDERS": self._orders}[
                spec.type
            ].append(window)
        self._ips: dict[str, _IpState] = {}

    def exchange_info(self) -> list[dict[str, object]]:
        """The ``rateLimits`` array of ``GET /api/v3/exchangeInfo``."""
        return [
            {
                "rateLimitType": w.spec.type,
                "interval": w.spec.interval,
                "intervalNum": w.spec.interval_num,
                "limit": w.spec.limit,
            }
            for w in (*self._weight, *self._orders, *self._raw)
        ]

    def weight_headers(self, ip: str, now_ms: int) -> Headers:
        """``X-MBX-USED-WEIGHT-*`` for ``ip`` now."""
        return tuple(
            (f"X-MBX-USED-WEIGHT-{w.header_suffix}", str(w.current(ip, now_ms)))
            for w in self._weight
        )

    def admit(self, ip: str, weight: int, now_ms: int) -> Headers:
        """Charge one request of ``weight`` to ``ip``; returns the usage headers.

        Raises:
            ApiError: 418 while banned (or when this request earns a ban), 429
                when over a limit or sent before an earlier ``Retry-After``.
        """
        state = self._ips.setdefault(ip, _IpState())
        if state.banned_until_ms > now_ms:
            raise self._banned(ip, state, now_ms)
        if state.limited_until_ms > now_ms:
            state.violations += 1
            if state.violations >= self.config.ban_after_violations:
                ban_s = min(self.config.ban_s * 2**state.bans, self.config.ban_max_s)
                state.bans += 1
                state.banned_until_ms = now_ms + int(ban_s * 1000)
                state.violations = 0
                raise self._banned(ip, state, now_ms)
            raise ApiError(
                p.TOO_MANY_REQUESTS,
                "Too much request weight used; please wait for the Retry-After period. "
                "Please use WebSocket Streams for live updates to avoid bans.",
                status=429,
                headers=(
                    ("Retry-After", str(_retry_after_s(state.limited_until_ms, now_ms))),
                    *self.weight_headers(ip, now_ms),
                ),
            )
        for windows, amount, what in (
            (self._weight, weight, "request weight"),
            (self._raw, 1, "requests"),
        ):
            for w in windows:
                if w.current(ip, now_ms) + amount > w.spec.limit:
                    until = w.window_end_ms(now_ms)
                    state.limited_until_ms = until
                    state.violations = 0
                    raise ApiError(
                        p.TOO_MANY_REQUESTS,
                        f"Too much {what} used; current limit is {w.spec.limit} {what} per "
                        f"{w.describe()}. Please use WebSocket Streams for live updates to "
                        "avoid polling the API.",
                        status=429,
                        headers=(
                            ("Retry-After", str(_retry_after_s(until, now_ms))),
                            *self.weight_headers(ip, now_ms),
                        ),
                    )
        for w in self._weight:
            w.add(ip, weight, now_ms)
        for w in self._raw:
            w.add(ip, 1, now_ms)
        return self.weight_headers(ip, now_ms)

    def impose(self, ip: str, until_ms: int) -> None:
        """Treat ``ip`` as rate limited until ``until_ms`` (a 429 burst from fault injection)."""
        state = self._ips.setdefault(ip, _IpState())
        state.limited_until_ms = max(state.limited_until_ms, until_ms)
        state.violations = 0

    def _banned(self, ip: str, state: _IpState, now_ms: int) -> ApiError:
        return ApiError(
            p.TOO_MANY_REQUESTS,
            f"Way too much request weight used; IP banned until {state.banned_until_ms}. "
            "Please use WebSocket Streams for live updates to avoid bans.",
            status=418,
            headers=(
                ("Retry-After", str(_retry_after_s(state.banned_until_ms, now_ms))),
                *self.weight_headers(ip, now_ms),
            ),
        )

    def order_headers(self, account: str, now_ms: int) -> Headers:
        """``X-MBX-ORDER-COUNT-*`` for ``account`` now."""
        return tuple(
            (f"X-MBX-ORDER-COUNT-{w.header_suffix}", str(w.current(account, now_ms)))
            for w in self._orders
        )

    def count_order(self, account: str, now_ms: int) -> Headers:
        """Count one new order against ``account``; returns the order-count headers.

        Raises:
            ApiError: 429 -1015 (no ``Retry-After``) when an ORDERS limit is reached.
        """
        for w in self._orders:
            if w.current(account, now_ms) + 1 > w.spec.limit:
                raise ApiError(
                    p.TOO_MANY_ORDERS,
                    f"Too many new orders; current limit is {w.spec.limit} orders per "
                    f"{w.describe()}.",
                    status=429,
                    headers=self.order_headers(account, now_ms),
                )
        for w in self._orders:
            w.add(account, 1, now_ms)
        return self.order_headers(account, now_ms)
