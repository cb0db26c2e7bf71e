"""Malformed stream frames: counted, dead-lettered durably with the raw payload, skipped.

A malformed frame never ends the feed. It may have been a trade, though: while
trades keep coming the next one reveals the gap, but if it was the last before
a quiet spell only asking the venue does. So :class:`MalformedFrames` also
says when the feed should verify with the venue (:meth:`MalformedFrames.verify_in`):
as soon as the stream goes quiet, at most every
:data:`VERIFY_AFTER_MALFORMED_INTERVAL_S`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import trio

from daemon.marketdata.feed_io import FeedIO
from daemon.resilience import DeadLetter, DeadLetterStore
from daemon.store.errors import StoreError
from daemon.supervise import ChildContext
from daemon.venues.binance.stream import MalformedFrame

__all__ = ["VERIFY_AFTER_MALFORMED_INTERVAL_S", "MalformedFrames"]

log = logging.getLogger("tradingd.marketdata.feed")

#: After a malformed frame (which may have replaced a trade), the feed checks
#: with the venue for missed trades as soon as the stream goes quiet — at most
#: this often, so a flood of garbage cannot exhaust the REST weight budget.
VERIFY_AFTER_MALFORMED_INTERVAL_S = 1.0

#: Malformed frames are logged one by one up to this many, then every N-th.
_LOG_FIRST_MALFORMED = 10
_LOG_EVERY_MALFORMED = 1000


class MalformedFrames:
    """Dead-letters malformed frames and plans the check for a trade they replaced.

    Args:
        io: The feed's shared calls (store retries, counters).
        dead_letters: Durable dead letters.
        wall_clock_ms: Epoch ms (the dead letters' times).
    """

    def __init__(
        self, io: FeedIO, dead_letters: DeadLetterStore, wall_clock_ms: Callable[[], int]
    ) -> None:
        self._io = io
        self._dead_letters = dead_letters
        self._wall_clock_ms = wall_clock_ms
        self.venue = io.venue
        self._verify_due = False
        self._verified_at = -math.inf

    def verify_in(self) -> float | None:
        """Seconds until the venue should be asked (``<= 0``: now; ``None``: no need)."""
        if not self._verify_due:
            return None
        return self._verified_at + VERIFY_AFTER_MALFORMED_INTERVAL_S - trio.current_time()

    def verifying(self) -> None:
        """The feed is asking the venue now."""
        self._verify_due = False
        self._verified_at = trio.current_time()

    async def on_frame(self, ctx: ChildContext, frame: MalformedFrame) -> None:
        """Count ``frame``, dead-letter it (retrying while the store is unavailable), skip it."""
        stats = self._io.stats
        self._verify_due = True
        stats.malformed += 1
        total = stats.malformed
        if total <= _LOG_FIRST_MALFORMED or total % _LOG_EVERY_MALFORMED == 0:
            log.warning(
                "marketdata %s: malformed frame #%d (%s); dead-lettering it",
                self.venue,
                total,
                frame.error,
            )
        now = self._wall_clock_ms() / 1000
        letter = DeadLetter(
            source=f"marketdata.{self.venue}.stream",
            payload=frame.raw,
            error_type="daemon.errors.VenueDecodeError",
            error_message=frame.error[:2000],
            first_failed_at=now,
            last_failed_at=now,
        )
        try:
            await self._io.store_call(
                ctx, lambda: self._dead_letters.add(letter), what="dead-lettering a malformed frame"
            )
        except StoreError as exc:
            stats.dead_letter_failures += 1
            raw = frame.raw[:200]
            log.error(
                "marketdata %s: could not dead-letter a malformed frame (%s); raw prefix %r",
                self.venue,
                exc,
                raw,
            )
            return
        stats.dead_lettered += 1
