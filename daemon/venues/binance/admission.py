"""Rate-limit admission for one venue: what every request takes before it is sent.

Shared by the REST client (:mod:`.rest`) and the WebSocket API clients
(:mod:`.wssession`): Binance counts request weight per IP and orders per
account, whatever the transport.

* One sliding window per ``exchangeInfo.rateLimits`` rule (Binance's
  documented defaults until the venue's own are installed); installing new
  rules carries the usage counted so far and a running freeze over to the
  windows of the same name.
* Each request acquires its weight (``REQUEST_WEIGHT``), 1
  (``RAW_REQUESTS``) and its ORDERS units *before* it is sent; one that
  cannot be admitted within ``limiter_max_wait_s`` fails with
  :class:`~daemon.errors.VenueRateLimitedError` (``http_status is None``)
  without being sent.
* The venue's own counts (``X-MBX-*`` headers, WebSocket ``rateLimits``)
  correct the windows upwards; a 429/418 ``Retry-After`` freezes them all.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio

from daemon.errors import VenueError, VenueRateLimitedError
from daemon.model.instruments import RateLimitRule, RateLimitType
from daemon.resilience import SlidingWindowLimiter, Window
from daemon.venues.binance import codec
from daemon.venues.binance.config import BinanceConfig

__all__ = ["VenueLimits", "rate_limit_windows"]

# The REST client's logger: these lines were its own before admission was split out.
log = logging.getLogger("tradingd.venues.binance.rest")


def rate_limit_windows(rules: Sequence[RateLimitRule]) -> list[Window]:
    """One window per window name; of two rules with the same name, the stricter."""
    by_name: dict[str, Window] = {}
    for rule in rules:
        window = Window(rule.window_name, float(rule.limit), rule.period_s)
        known = by_name.get(window.name)
        if known is None or window.limit < known.limit:
            by_name[window.name] = window
    return list(by_name.values())


class VenueLimits:
    """The venue's rate limits as a limiter that requests are admitted by.

    Args:
        name: The venue's name (log lines, error texts, the limiter's name).
        max_wait_s: How long a request may wait for admission before it
            fails unsent (``limiter_max_wait_s``).
        order_max_wait_s: The same for a new order (a request that counts
            ``ORDERS``; ``order_limiter_max_wait_s``). Shorter, on purpose: the
            caller bounds the whole send (``[orders] send_timeout_s``), and a
            new order still waiting here when that runs out could not be told
            from one lost on the wire (UNKNOWN); failing here first says "not
            sent" (the order goes back to PENDING and waits its turn).
        rules: The rules to enforce until :meth:`install` is called again.
    """

    def __init__(
        self,
        name: str,
        *,
        max_wait_s: float,
        order_max_wait_s: float | None = None,
        rules: Sequence[RateLimitRule] = codec.DEFAULT_RATE_LIMITS,
    ) -> None:
        self.name = name
        self._max_wait_s = max_wait_s
        self._order_max_wait_s = (
            max_wait_s if order_max_wait_s is None else min(max_wait_s, order_max_wait_s)
        )
        self._rules: tuple[RateLimitRule, ...] = ()
        self._limiter: SlidingWindowLimiter | None = None
        self._freezes = 0
        self.install(rules)

    @classmethod
    def for_venue(cls, config: BinanceConfig) -> VenueLimits:
        """The limits of a venue client: its name and waits from ``config``."""
        return cls(
            config.name,
            max_wait_s=config.limiter_max_wait_s,
            order_max_wait_s=config.order_limiter_max_wait_s,
        )

    @property
    def limiter(self) -> SlidingWindowLimiter | None:
        """The current rate limiter (``None`` when the venue declares no limits)."""
        return self._limiter

    @property
    def rules(self) -> tuple[RateLimitRule, ...]:
        """The rules the limiter enforces."""
        return self._rules

    @property
    def freezes(self) -> int:
        """How many 429/418 answers with ``Retry-After`` froze the limiter."""
        return self._freezes

    def install(self, rules: Sequence[RateLimitRule]) -> None:
        """Enforce ``rules`` from now on.

        Usage counted so far and a running freeze carry over to windows of
        the same name; requests already waiting finish on the old limiter.
        """
        rules = tuple(rules)
        if rules == self._rules and (self._limiter is not None or not rules):
            return
        windows = rate_limit_windows(rules)
        new = SlidingWindowLimiter(windows, name=f"{self.name}.rest") if windows else None
        old = self._limiter
        if new is not None and old is not None:
            known = {w.name for w in old.core.windows}
            for window in windows:
                if window.name in known:
                    used = old.used(window.name)
                    if used > 0:
                        new.observe_usage(window.name, used)
            if old.frozen_until is not None:
                new.freeze_until(old.frozen_until)
        self._rules = rules
        self._limiter = new
        log.info(
            "%s: rate limits %s",
            self.name,
            ", ".join(f"{w.name}={w.limit:g}/{w.period_s:g}s" for w in windows) or "none",
        )

    async def acquire(self, weight: int, order_count: int, endpoint: str) -> None:
        """Take ``weight`` (and ``order_count`` ORDERS) from the limiter before a request.

        Raises:
            VenueRateLimitedError: not admitted within ``limiter_max_wait_s``
                (``order_limiter_max_wait_s`` for a new order; ``http_status is
                None``); the request must not be sent.
        """
        limiter = self._limiter
        if limiter is None:
            return
        cost = self._cost(weight, order_count)
        if not cost or limiter.try_acquire(cost):
            return  # admitted now: no wait, no deadline to arm
        wait_s = self._order_max_wait_s if order_count > 0 else self._max_wait_s
        with trio.move_on_after(wait_s) as scope:
            await limiter.acquire(cost)
        if scope.cancelled_caught:
            frozen_until = limiter.frozen_until
            retry_after = (
                max(0.0, frozen_until - trio.current_time()) if frozen_until is not None else None
            )
            raise VenueRateLimitedError(
                f"{self.name} {endpoint}: the local rate limiter did not admit the "
                f"request within {wait_s:g}s; not sent",
                retry_after_s=retry_after,
                venue=self.name,
                endpoint=endpoint,
            )

    def _cost(self, weight: int, order_count: int) -> dict[str, float]:
        cost: dict[str, float] = {}
        for rule in self._rules:
            if rule.type is RateLimitType.REQUEST_WEIGHT:
                units = weight
            elif rule.type is RateLimitType.ORDERS:
                units = order_count
            else:
                units = 1
            if units > 0:
                name = rule.window_name
                cost[name] = max(cost.get(name, 0.0), float(min(units, rule.limit)))
        return cost

    def observe_usage(self, reports: Sequence[codec.UsageReport]) -> None:
        """Correct the limiter upwards with the venue's own counts (headers or ``rateLimits``)."""
        limiter = self._limiter
        if limiter is None or not reports:
            return
        known = {w.name for w in limiter.core.windows}
        for report in reports:
            if report.window_name in known:
                limiter.observe_usage(report.window_name, float(report.used))

    def freeze(self, retry_after_s: float, error: VenueError) -> None:
        """Hold every request for ``retry_after_s`` (a 429/418 said so, on any transport)."""
        if self._limiter is None:
            return
        self._freezes += 1
        log.warning(
            "%s: HTTP %s code %s; all requests held for %.3fs (Retry-After)",
            self.name,
            error.http_status,
            error.code,
            retry_after_s,
        )
        self._limiter.freeze_for(retry_after_s)
