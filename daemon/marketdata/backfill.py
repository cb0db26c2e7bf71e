"""Catch-up and gap backfill: trades the stream did not deliver, fetched over REST.

:class:`Backfiller` queues, in order, the trades of a missing range
(``historicalTrades?fromId=`` in pages of ``backfill_limit``) and the
:class:`~daemon.marketdata.ingest.GapRecord` of its outcome:

* a *catch-up* (:meth:`Backfiller.catch_up`) after every (re)connection: pages
  from the resume point up to the venue's latest trade at that moment;
* a *gap* (:meth:`Backfiller.backfill` with a bound): the ids between the resume
  point and a live trade above it, or a tail found by a tail check;
* ids the venue no longer has are recorded UNRECOVERABLE
  (:meth:`Backfiller.lost`), the fetched range BACKFILLED;
* a fetch that fails while the range's bound is known records the rest of
  the range OPEN in the store at once and hands it to the repair
  (:class:`OpenGaps`, consumed by :class:`~daemon.marketdata.repair.GapRepair`).
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from daemon.marketdata.feed_io import FETCH_ERRORS, FeedIO
from daemon.marketdata.ingest import CHECKPOINT_STREAM, GapRecord
from daemon.model.marketdata import Trade
from daemon.store.marketdata_values import GapState
from daemon.supervise import ChildContext

__all__ = ["Backfiller", "OpenGaps"]

log = logging.getLogger("tradingd.marketdata.feed")


class OpenGaps:
    """Recorded OPEN gaps waiting for the repair task.

    ``(symbol, from_id, to_id)`` → reason. Survives a restart of the feed
    child; reloaded from the store on the first start (a crash forgets
    nothing: the store has them).
    """

    def __init__(self) -> None:
        self.pending: dict[tuple[str, int, int], str] = {}
        self._wanted = trio.Event()

    def add(self, symbol: str, from_id: int, to_id: int, reason: str) -> None:
        """Queue one gap and wake the repair task."""
        self.pending[(symbol, from_id, to_id)] = reason
        self._wanted.set()

    def wake(self) -> None:
        """Wake the repair task (after gaps were queued)."""
        self._wanted.set()

    async def wait(self) -> None:
        """Wait until :meth:`add` or :meth:`wake` was called since the last wait."""
        await self._wanted.wait()
        self._wanted = trio.Event()


class Backfiller:
    """Fetches missing trades over REST and queues them, in order, with their gap records."""

    def __init__(self, io: FeedIO, open_gaps: OpenGaps) -> None:
        self._io = io
        self._open_gaps = open_gaps
        self.venue = io.venue

    async def catch_up(self, ctx: ChildContext, symbol: str, reason: str) -> None:
        """Fetch what the venue has after the resume point (after a (re)connect)."""
        io = self._io
        stats = io.symbols[symbol]
        client = io.require_client()
        if stats.last_enqueued_id is None:
            # Nothing captured yet: start after the venue's latest trade, so
            # trades missed by a later disconnect are still found.
            recent = await io.rest(
                ctx, lambda: client.recent_trades(symbol, 1), what=f"recent trades of {symbol}"
            )
            if recent is not None and recent and stats.last_enqueued_id is None:
                stats.last_enqueued_id = recent[-1].trade_id
                log.info(
                    "marketdata %s %s: capture starts after venue trade %d",
                    self.venue,
                    symbol,
                    stats.last_enqueued_id,
                )
            return
        # Bounded by the venue's latest trade *now*: while the venue outpaces the
        # writer a catch-up "until a short page" would never end and the stream
        # would never be read again. Later trades come from the stream, whose
        # own gap detection fills any hole.
        latest = await io.rest(
            ctx, lambda: client.recent_trades(symbol, 1), what=f"recent trades of {symbol}"
        )
        stop_at = latest[-1].trade_id if latest else None
        if stop_at is not None and stop_at <= stats.last_enqueued_id:
            return
        await self.backfill(
            ctx, symbol, stats.last_enqueued_id + 1, None, reason=reason, stop_at=stop_at
        )

    async def backfill(
        self,
        ctx: ChildContext,
        symbol: str,
        from_id: int,
        to_id: int | None,
        *,
        reason: str,
        stop_at: int | None = None,
    ) -> None:
        """Queue trades ``from_id..to_id`` (``None``: up to the venue's latest) from REST.

        Pages of ``backfill_limit`` with ``fromId``; ids the venue no longer
        has are recorded as an unrecoverable gap; the fetched range as a
        backfilled one. Advances the resume point as trades are queued. With
        ``to_id=None``, ``stop_at`` (the venue's latest id when the catch-up
        began) bounds the work.

        A fetch that fails (after the client's own retries) while the range's
        upper bound is known never leaves a silent hole and never holds up the
        live stream: the rest of the range is recorded as an OPEN gap in the
        store at once (durable: a crash does not forget it), the resume point
        moves past it, and the repair task
        (:meth:`~daemon.marketdata.repair.GapRepair.run`) backfills it with
        retries. Only without a bound (the venue's latest id is unknown) are
        failures retried here.
        """
        io = self._io
        stats = io.symbols[symbol]
        client = io.require_client()
        limit = io.settings.backfill_limit
        bound = to_id if to_id is not None else stop_at
        next_id = from_id
        fetched_first: int | None = None
        fetched_last: int | None = None
        fetched = 0
        if to_id is not None:
            stats.gaps_detected += 1
            log.warning(
                "marketdata %s %s: trades %d..%d missing (%s); backfilling",
                self.venue,
                symbol,
                from_id,
                to_id,
                reason,
            )
        stats.gaps_open += 1
        try:
            while to_id is None or next_id <= to_id:
                if to_id is None and stop_at is not None and next_id > stop_at:
                    break  # caught up with where the venue was when we started
                want = limit if to_id is None else min(limit, to_id - next_id + 1)
                stats.backfill_requests += 1

                async def fetch(start: int = next_id, size: int = want) -> list[Trade]:
                    return await client.historical_trades(symbol, from_id=start, limit=size)

                what = f"historical trades of {symbol} from {next_id}"
                page: list[Trade] | None
                if bound is None:
                    page = await io.rest(ctx, fetch, what=what, backfill=True)
                    if page is None:  # refused for good, no bound to record
                        log.error(
                            "marketdata %s %s: catch-up from %d refused and the venue's latest "
                            "trade is unknown; the next trade or tail check bounds the gap",
                            self.venue,
                            symbol,
                            next_id,
                        )
                        return
                else:
                    try:
                        page = await io.bounded(fetch)
                    except FETCH_ERRORS as exc:
                        io.backfill_failed(exc, what)
                        if fetched_first is not None and fetched_last is not None:
                            if to_id is None:
                                stats.gaps_detected += 1
                            await self.record_backfilled(
                                ctx,
                                symbol,
                                fetched_first,
                                fetched_last,
                                fetched=fetched,
                                reason=reason,
                            )
                        if to_id is None:
                            stats.gaps_detected += 1
                        await self._record_open_gap(
                            ctx, symbol, next_id, bound, reason=reason, error=exc
                        )
                        return
                    io.backfill_ok()
                page = sorted(
                    (
                        t
                        for t in page
                        if t.trade_id >= next_id and (to_id is None or t.trade_id <= to_id)
                    ),
                    key=lambda t: t.trade_id,
                )
                if not page:
                    break
                for trade in page:
                    if trade.trade_id > next_id:
                        await self.lost(ctx, symbol, next_id, trade.trade_id - 1, reason)
                    if fetched_first is None:
                        fetched_first = trade.trade_id
                    fetched_last = trade.trade_id
                    await io.put(ctx, trade)
                    stats.last_enqueued_id = trade.trade_id
                    stats.trades_backfill += 1
                    fetched += 1
                    next_id = trade.trade_id + 1
                if to_id is None and len(page) < want:
                    break  # caught up with the venue
            if to_id is not None and next_id <= to_id:
                # The venue has later trades (the live one) but not these.
                await self.lost(ctx, symbol, next_id, to_id, reason)
                next_id = to_id + 1
            if fetched_first is not None and fetched_last is not None:
                if to_id is None:
                    stats.gaps_detected += 1
                await self.record_backfilled(
                    ctx, symbol, fetched_first, fetched_last, fetched=fetched, reason=reason
                )
        finally:
            stats.gaps_open -= 1

    # ------------------------------------------------------------------ gap records

    async def record_backfilled(
        self, ctx: ChildContext, symbol: str, first: int, last: int, *, fetched: int, reason: str
    ) -> None:
        """Queue the BACKFILLED record of ``first..last`` behind its trades."""
        await self._io.put(
            ctx,
            GapRecord(
                self.venue,
                symbol,
                first,
                last,
                GapState.BACKFILLED,
                reason,
                f"{fetched} trade(s) fetched via REST historicalTrades",
            ),
        )
        log.info(
            "marketdata %s %s: backfilled %d..%d (%s)", self.venue, symbol, first, last, reason
        )

    async def lost(
        self, ctx: ChildContext, symbol: str, from_id: int, to_id: int, reason: str
    ) -> None:
        """Record ``from_id..to_id`` as unrecoverable (the venue no longer has them)."""
        stats = self._io.symbols[symbol]
        count = to_id - from_id + 1
        stats.trades_unrecoverable += count
        log.error(
            "marketdata %s %s: trades %d..%d (%d) are no longer available from the venue; "
            "recording an unrecoverable gap",
            self.venue,
            symbol,
            from_id,
            to_id,
            count,
        )
        await self._io.put(
            ctx,
            GapRecord(
                self.venue,
                symbol,
                from_id,
                to_id,
                GapState.UNRECOVERABLE,
                reason,
                f"the venue's history starts after these {count} trade(s)",
            ),
        )
        stats.last_enqueued_id = max(stats.last_enqueued_id or to_id, to_id)

    async def _record_open_gap(
        self,
        ctx: ChildContext,
        symbol: str,
        from_id: int,
        to_id: int,
        *,
        reason: str,
        error: BaseException,
    ) -> None:
        """Record ``from_id..to_id`` OPEN in the store now, move past it, hand it to the repair.

        Written straight to the store (not through the trades queue) and
        awaited *before* the resume point moves: no trade after the gap can be
        committed — advancing the checkpoint past it — before the gap is durable.
        """
        io = self._io
        stats = io.symbols[symbol]
        count = to_id - from_id + 1
        log.error(
            "marketdata %s %s: trades %d..%d (%d) could not be fetched (%s: %s); "
            "recorded as an open gap, backfilled when the venue serves them",
            self.venue,
            symbol,
            from_id,
            to_id,
            count,
            type(error).__name__,
            error,
        )

        async def write() -> Any:
            return await io.market.record_gap(
                self.venue, symbol, CHECKPOINT_STREAM, from_id, to_id, reason=reason
            )

        await io.store_call(ctx, write, what=f"recording the open gap {from_id}..{to_id}")
        stats.gaps_left_open += 1
        stats.open_gaps[(from_id, to_id)] = reason
        stats.last_enqueued_id = max(stats.last_enqueued_id or to_id, to_id)
        self._open_gaps.add(symbol, from_id, to_id, reason)
