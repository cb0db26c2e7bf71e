"""The venue's clock as this process sees it: the local wall clock plus a measured offset.

Shared by the REST client (:mod:`.rest`) and the WebSocket API clients
(:mod:`.wssession`): a signed request on any transport carries
``timestamp = local wall clock + offset``.

* The offset is the server time minus the midpoint of the round trip of
  ``GET /api/v3/time`` (:meth:`VenueClock.record`). The measurement itself is
  the REST client's (its limiter, retries and breaker apply), handed in as
  ``measure``.
* It is measured lazily before the first signed request, again when older
  than ``time_resync_interval_s`` (:meth:`VenueClock.ensure_synced`), and at
  once after a ``-1021`` answer (:meth:`VenueClock.resync_after_timestamp_error`,
  counted and logged), after which the caller re-signs and sends **once** more.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import trio

from daemon.errors import RetryExhaustedError, VenueError

__all__ = ["VenueClock", "local_wall_clock_ms"]

# The REST client's logger: these lines were its own before the clock was split out.
log = logging.getLogger("tradingd.venues.binance.rest")


def local_wall_clock_ms() -> int:
    """The local wall clock in epoch ms."""
    return time.time_ns() // 1_000_000


class VenueClock:
    """Server clock minus local clock, measured on demand and kept fresh.

    Args:
        name: The venue's name (log lines).
        measure: Performs ``GET /api/v3/time`` and calls :meth:`record` with
            its answer (the REST client's ``server_time``).
        resync_interval_s: Age after which a measurement is taken again
            before a signed request.
        wall_clock_ms: Local wall clock in epoch ms (inject in tests).
    """

    def __init__(
        self,
        name: str,
        *,
        measure: Callable[[], Awaitable[object]],
        resync_interval_s: float,
        wall_clock_ms: Callable[[], int] = local_wall_clock_ms,
    ) -> None:
        self.name = name
        self._measure = measure
        self._resync_interval_s = resync_interval_s
        self._wall_clock_ms = wall_clock_ms
        self._offset_ms: int | None = None
        self._synced_at: float | None = None
        self._sync_lock = trio.Lock()
        self._resyncs = 0

    @property
    def offset_ms(self) -> int | None:
        """Server clock minus local clock, as last measured (``None`` before the first)."""
        return self._offset_ms

    @property
    def resyncs(self) -> int:
        """How many ``-1021`` answers forced a measurement."""
        return self._resyncs

    def wall_clock_ms(self) -> int:
        """The local wall clock (epoch ms) requests are signed with (injectable in tests)."""
        return self._wall_clock_ms()

    def venue_time_ms(self) -> int:
        """``timestamp`` of a signed request: local wall clock + the measured offset."""
        return self._wall_clock_ms() + (self._offset_ms or 0)

    def record(self, server_ms: int, sent_ms: int, received_ms: int) -> int:
        """Take the offset from a server time read between ``sent_ms`` and ``received_ms``."""
        midpoint = (sent_ms + received_ms) // 2
        self._offset_ms = server_ms - midpoint
        self._synced_at = trio.current_time()
        log.debug(
            "%s: server time offset %+d ms (round trip %d ms)",
            self.name,
            self._offset_ms,
            received_ms - sent_ms,
        )
        return self._offset_ms

    async def sync(self) -> int:
        """Measure the offset now; returns it (ms, server minus local)."""
        await self._measure()
        assert self._offset_ms is not None
        return self._offset_ms

    async def ensure_synced(self) -> None:
        """Measure the offset unless a measurement younger than the interval exists.

        Raises the documented venue errors of ``GET /api/v3/time`` (the caller's
        signed request was not sent).
        """
        if self._fresh():
            return
        async with self._sync_lock:
            if not self._fresh():
                await self._sync_before_signed()

    async def resync_after_timestamp_error(self, endpoint: str) -> None:
        """After a ``-1021`` on any transport: count it, log it, measure the offset again."""
        self._resyncs += 1
        log.warning(
            "%s %s: -1021 timestamp outside recvWindow; re-syncing the clock and sending once more",
            self.name,
            endpoint,
        )
        await self._sync_before_signed()

    async def _sync_before_signed(self) -> None:
        """Sync the clock for a signed request, raising the signed call's own errors.

        The implicit ``GET /api/v3/time`` is retried like any query; when it gives
        up, the signed call (an order, a cancel) must still fail with the
        documented venue error — rate limited, unavailable — not with the retry
        wrapper, so callers can map it by policy class. The request itself was
        provably not sent.
        """
        try:
            await self.sync()
        except RetryExhaustedError as exc:
            if isinstance(exc.last_error, VenueError):
                raise exc.last_error from exc
            raise

    def _fresh(self) -> bool:
        return (
            self._offset_ms is not None
            and self._synced_at is not None
            and trio.current_time() - self._synced_at < self._resync_interval_s
        )
