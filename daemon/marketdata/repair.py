"""Gaps found after the fact: the repair of OPEN gaps, and tail checks of quiet streams.

* :class:`GapRepair` — a task of the feed that backfills the gaps recorded
  OPEN (a fetch failed while the range was known; see
  :class:`~daemon.marketdata.backfill.Backfiller`), oldest first, retrying
  until the venue serves them; on the first start it reloads the OPEN gaps the
  store has (a crash forgets nothing).
* :class:`TailCheck` — when a symbol's stream has been quiet
  ``tail_check_interval_s``, one cheap call (``GET /api/v3/trades?limit=1``)
  compares the resume point with the venue's latest trade and backfills a
  missed tail.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from daemon.marketdata.backfill import Backfiller, OpenGaps
from daemon.marketdata.feed_io import FETCH_ERRORS, FeedIO
from daemon.marketdata.ingest import CHECKPOINT_STREAM, GapRecord
from daemon.store.marketdata_values import GapState
from daemon.supervise import ChildContext

__all__ = ["GapRepair", "TailCheck"]

log = logging.getLogger("tradingd.marketdata.feed")


class GapRepair:
    """Backfills the recorded OPEN gaps, then queues each one's resolution."""

    def __init__(self, io: FeedIO, backfiller: Backfiller, open_gaps: OpenGaps) -> None:
        self._io = io
        self._backfiller = backfiller
        self._open_gaps = open_gaps
        self.venue = io.venue

    async def load(self, ctx: ChildContext) -> None:
        """Queue the store's OPEN gaps of the captured symbols for the repair task."""
        io = self._io

        async def read() -> list[Any]:
            return await io.market.gaps(
                venue=self.venue, stream=CHECKPOINT_STREAM, state=GapState.OPEN
            )

        for gap in await io.store_call(ctx, read, what="reading the open gaps"):
            stats = io.symbols.get(gap.symbol)
            if stats is None:
                continue
            stats.open_gaps[(gap.from_id, gap.to_id)] = gap.reason
            self._open_gaps.pending[(gap.symbol, gap.from_id, gap.to_id)] = gap.reason
            log.warning(
                "marketdata %s %s: open gap [%d, %d] (%s) from the store; backfilling it",
                self.venue,
                gap.symbol,
                gap.from_id,
                gap.to_id,
                gap.reason,
            )
        if self._open_gaps.pending:
            self._open_gaps.wake()

    async def run(self, ctx: ChildContext) -> None:
        """Backfill the recorded OPEN gaps, oldest first, retrying until the venue serves them."""
        pending = self._open_gaps.pending
        while True:
            if not pending:
                await self._open_gaps.wait()
                continue
            key = min(pending, key=lambda k: (k[1], k[0], k[2]))
            await self._repair(ctx, *key, reason=pending[key])
            pending.pop(key, None)

    async def _repair(
        self, ctx: ChildContext, symbol: str, low: int, high: int, *, reason: str
    ) -> None:
        """Fetch ``low..high`` (a recorded OPEN gap), queue it, then queue its resolution.

        The resolution is a :class:`GapRecord` with the open gap's own bounds,
        so the writer moves that row out of OPEN once the trades before it
        committed: BACKFILLED when every id was fetched, UNRECOVERABLE (with
        the counts) when the venue no longer had some (those parts get their
        own UNRECOVERABLE rows, as in
        :meth:`~daemon.marketdata.backfill.Backfiller.backfill`).
        """
        io = self._io
        backfiller = self._backfiller
        stats = io.symbols[symbol]
        client = io.require_client()
        limit = io.settings.backfill_limit
        next_id = low
        first: int | None = None
        last: int | None = None
        fetched = 0
        lost: list[tuple[int, int]] = []
        failures = 0
        stats.gaps_open += 1
        try:
            while next_id <= high:
                want = min(limit, high - next_id + 1)
                stats.backfill_requests += 1
                try:
                    page = await client.historical_trades(symbol, from_id=next_id, limit=want)
                except FETCH_ERRORS as exc:
                    failures += 1
                    io.backfill_failed(
                        exc, f"repair of open gap {symbol} {low}..{high} from {next_id}"
                    )
                    # A plain sleep: this task is not the one that heartbeats.
                    await trio.sleep(io.rest_backoff.delay_s(failures))
                    continue
                failures = 0
                io.backfill_ok()
                page = sorted(
                    (t for t in page if next_id <= t.trade_id <= high), key=lambda t: t.trade_id
                )
                if not page:
                    break
                for trade in page:
                    if trade.trade_id > next_id:
                        lost.append((next_id, trade.trade_id - 1))
                        await backfiller.lost(ctx, symbol, next_id, trade.trade_id - 1, reason)
                    if first is None:
                        first = trade.trade_id
                    last = trade.trade_id
                    await io.put(ctx, trade)
                    stats.trades_backfill += 1
                    fetched += 1
                    next_id = trade.trade_id + 1
            if next_id <= high:
                lost.append((next_id, high))
                await backfiller.lost(ctx, symbol, next_id, high, reason)
        finally:
            stats.gaps_open -= 1
        total = high - low + 1
        if not lost:
            resolution = f"{fetched} trade(s) fetched via REST historicalTrades (was open)"
            await io.put(
                ctx,
                GapRecord(self.venue, symbol, low, high, GapState.BACKFILLED, reason, resolution),
            )
            log.info(
                "marketdata %s %s: open gap %d..%d backfilled (%s)",
                self.venue,
                symbol,
                low,
                high,
                reason,
            )
            return
        if first is not None and last is not None:
            await backfiller.record_backfilled(
                ctx, symbol, first, last, fetched=fetched, reason=reason
            )
        if lost != [(low, high)]:  # else lost()'s own record resolves the open row
            missing = sum(b - a + 1 for a, b in lost)
            resolution = (
                f"{missing} of {total} trade(s) no longer available from the venue; "
                f"{fetched} backfilled"
            )
            await io.put(
                ctx,
                GapRecord(
                    self.venue, symbol, low, high, GapState.UNRECOVERABLE, reason, resolution
                ),
            )


class TailCheck:
    """Asks the venue for its latest trade when a symbol's stream has been quiet."""

    def __init__(self, io: FeedIO, backfiller: Backfiller) -> None:
        self._io = io
        self._backfiller = backfiller
        self.venue = io.venue
        #: Trio time of each symbol's last stream trade (or last tail check):
        #: when it is ``tail_check_interval_s`` old, the venue is asked.
        self._quiet_since: dict[str, float] = {}

    def heard(self, symbol: str) -> None:
        """A stream trade of ``symbol`` arrived: the quiet interval starts again."""
        self._quiet_since[symbol] = trio.current_time()

    def restart(self) -> None:
        """A connection caught up: every symbol's quiet interval starts now."""
        self._quiet_since = dict.fromkeys(self._io.symbols, trio.current_time())

    async def due(self, ctx: ChildContext) -> float | None:
        """Check the symbols whose stream has been quiet ``tail_check_interval_s``.

        Returns the time until the next check is due (``None``: none planned).
        """
        io = self._io
        interval = io.settings.tail_check_interval_s
        if interval <= 0 or not io.stats.connected or not self._quiet_since:
            return None
        now = trio.current_time()
        for symbol in io.symbols:
            since = self._quiet_since.get(symbol)
            if since is not None and now - since >= interval:
                await self._check(ctx, symbol)
                self._quiet_since[symbol] = trio.current_time()
        now = trio.current_time()
        return max(0.0, min(self._quiet_since.values()) + interval - now)

    async def _check(self, ctx: ChildContext, symbol: str) -> None:
        """Compare the resume point with the venue's latest trade; backfill a missed tail.

        One cheap call (``GET /api/v3/trades?limit=1``). A failure is only
        logged: the next quiet interval tries again.
        """
        io = self._io
        stats = io.symbols[symbol]
        client = io.require_client()
        stats.tail_checks += 1
        try:
            recent = await io.bounded(lambda: client.recent_trades(symbol, 1))
        except FETCH_ERRORS as exc:
            io.stats.rest_failures += 1
            io.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "marketdata %s %s: tail check failed (%s); trying again in %.1fs",
                self.venue,
                symbol,
                io.stats.last_error,
                io.settings.tail_check_interval_s,
            )
            return
        last = stats.last_enqueued_id
        if not recent or last is None:
            return
        latest = max(t.trade_id for t in recent)
        if latest <= last:
            return
        stats.tail_gaps += 1
        log.warning(
            "marketdata %s %s: the stream is quiet but the venue is at trade %d, capture at %d",
            self.venue,
            symbol,
            latest,
            last,
        )
        await self._backfiller.backfill(ctx, symbol, last + 1, latest, reason="tail check")
