"""The seeded synthetic market, its trade history and its depth-update batches.

:class:`MarketGenerator` is the rest of the world: a seeded random walk of a
fair price per symbol, with limit orders placed around it, withdrawn, and
market orders that take liquidity. It trades through the same
:class:`~daemon.venues.sim.matching.MatchingEngine` as the clients, so every
trade has the next trade id of its symbol, every book change the next update
id, and a client's resting order fills exactly when the market crosses it.
The same seed and the same client actions give the same market.

Timing is Trio time (``events_per_s`` events per second over all symbols, in
a drift-free schedule, or as fast as possible for benchmarks), so under
``autojump_clock`` a test knows exactly when each event happens; exchange
timestamps come from the injectable wall clock.

:class:`TradeLog` keeps the published trades: the last ``trade_retention``
serve ``/api/v3/historicalTrades`` (older ``fromId`` answers from the oldest
kept, as a real venue eventually does), a longer tail serves the audit
endpoint ``/sim/trades``.

:class:`DepthBatcher` turns engine book changes into ``depthUpdate`` events
(``U`` = first update id in the batch, ``u`` = last), flushed every 100 ms or
1000 ms, so consecutive events chain (``U == previous u + 1``) and the first
event after a ``GET /api/v3/depth`` snapshot straddles its ``lastUpdateId``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, Final

import trio

from daemon.venues.sim.config import MarketConfig, SymbolConfig
from daemon.venues.sim.matching import MatchingEngine
from daemon.venues.sim.orderbook import BookChange, Side, Trade
from daemon.venues.sim.protocol import fmt

__all__ = ["DepthBatcher", "MarketGenerator", "TradeLog", "WallClock"]

log = logging.getLogger("tradingd.sim.market")

#: Milliseconds since the epoch, for exchange timestamps (injectable for tests).
WallClock = Callable[[], int]

_SIDES: Final[tuple[Side, Side]] = ("BUY", "SELL")


class TradeLog:
    """Published trades of one symbol, by sequential id, with two retentions.

    ``retention`` trades are public (``trades``/``historicalTrades``);
    ``audit_retention`` (>= ``retention``) are kept for the audit endpoint.
    """

    def __init__(self, symbol: str, *, retention: int, audit_retention: int) -> None:
        if audit_retention < retention:
            raise ValueError("audit_retention must be >= retention")
        self.symbol = symbol
        self.retention = retention
        self.audit_retention = audit_retention
        self._items: list[Trade] = []
        self._start = 0  # index of the oldest kept item in _items

    def __len__(self) -> int:
        return len(self._items) - self._start

    def append(self, trade: Trade) -> None:
        """Record the next trade; ids must be consecutive."""
        if len(self) and trade.id != self._items[-1].id + 1:
            raise ValueError(f"{self.symbol}: trade id {trade.id} after {self._items[-1].id}")
        self._items.append(trade)
        if len(self) > self.audit_retention:
            self._start += 1
            if self._start > self.audit_retention:  # compact now and then, not every time
                del self._items[: self._start]
                self._start = 0

    def _view(self, audit: bool) -> list[Trade]:
        kept = len(self)
        size = kept if audit else min(kept, self.retention)
        return self._items[len(self._items) - size :]

    def recent(self, limit: int) -> list[Trade]:
        """The last ``limit`` public trades, oldest first."""
        view = self._view(audit=False)
        return view[-limit:] if limit else []

    def oldest_id(self, *, audit: bool = False) -> int | None:
        """Id of the oldest trade still served (public or audit view)."""
        view = self._view(audit)
        return view[0].id if view else None

    def from_id(self, from_id: int, limit: int, *, audit: bool = False) -> list[Trade]:
        """Up to ``limit`` trades with id >= ``from_id``; from the oldest kept if it is older."""
        view = self._view(audit)
        if not view:
            return []
        index = max(0, from_id - view[0].id)
        return view[index : index + limit]


class DepthBatcher:
    """Accumulates book changes of one symbol between two stream flushes."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self._first: int | None = None
        self._last: int | None = None
        self._bids: dict[Decimal, Decimal] = {}
        self._asks: dict[Decimal, Decimal] = {}

    def record(self, change: BookChange) -> None:
        """Fold one committed engine operation into the batch."""
        if self._last is not None and change.update_id != self._last + 1:
            raise ValueError(f"{self.symbol}: update id {change.update_id} after {self._last}")
        if self._first is None:
            self._first = change.update_id
        self._last = change.update_id
        self._bids.update(change.bids)
        self._asks.update(change.asks)

    def flush(self, event_time_ms: int) -> dict[str, Any] | None:
        """The ``depthUpdate`` payload for the batch (``None`` when nothing changed)."""
        if self._first is None or self._last is None:
            return None
        payload = {
            "e": "depthUpdate",
            "E": event_time_ms,
            "s": self.symbol,
            "U": self._first,
            "u": self._last,
            "b": [[fmt(px), fmt(q)] for px, q in sorted(self._bids.items(), reverse=True)],
            "a": [[fmt(px), fmt(q)] for px, q in sorted(self._asks.items())],
        }
        self._first = None
        self._bids = {}
        self._asks = {}
        return payload


def _nothing() -> None:
    pass


class _SymbolState:
    def __init__(self, config: SymbolConfig, seed: int, depth_levels: int) -> None:
        self.config = config
        self.rng = random.Random(f"market:{seed}:{config.symbol}")
        self.tick = config.tick_size
        self.lot = config.min_qty * config.lot_multiple
        steps_to_max = int((config.max_price - config.min_price) / config.tick_size)
        self.low = depth_levels + 1
        self.high = max(self.low, steps_to_max - depth_levels - 1)
        start = int((config.start_price - config.min_price) / config.tick_size)
        self.fair = min(max(start, self.low), self.high)

    def price(self, ticks: int) -> Decimal:
        return self.config.min_price + self.tick * ticks


class MarketGenerator:
    """Drives the synthetic market: seeded, paced in Trio time, pausable."""

    def __init__(
        self,
        engine: MatchingEngine,
        symbols: Iterable[SymbolConfig],
        config: MarketConfig,
        wall_clock: WallClock,
    ) -> None:
        self.engine = engine
        self.config = config
        self._clock = wall_clock
        self._states = [_SymbolState(s, config.seed, config.depth_levels) for s in symbols]
        self._next = 0
        self.events = 0
        #: Called at the end of every :meth:`step` (the state file's write), before any checkpoint.
        self.committed: Callable[[], None] = _nothing
        self._paused = config.paused
        self._resumed = trio.Event()
        if not self._paused:
            self._resumed.set()

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Stop generating events until :meth:`resume` (steps can still be forced)."""
        if not self._paused:
            self._paused = True
            self._resumed = trio.Event()

    def resume(self) -> None:
        """Generate events again."""
        if self._paused:
            self._paused = False
            self._resumed.set()

    def seed_books(self) -> None:
        """Give every symbol ``depth_levels`` synthetic levels on each side."""
        now = self._clock()
        for st in self._states:
            for k in range(1, self.config.depth_levels + 1):
                for side in _SIDES:
                    ticks = st.fair - k if side == "BUY" else st.fair + k
                    qty = st.lot * st.rng.randint(1, self.config.max_lots)
                    self.engine.place_synthetic(
                        st.config.symbol, side, qty, price=st.price(ticks), now_ms=now
                    )

    def step(self, count: int = 1) -> None:
        """Run ``count`` market events now (round robin over the symbols)."""
        for _ in range(count):
            st = self._states[self._next]
            self._next = (self._next + 1) % len(self._states)
            self._event(st)
            self.events += 1
        self.committed()

    def _event(self, st: _SymbolState) -> None:
        rng = st.rng
        now = self._clock()
        symbol = st.config.symbol
        move = rng.random()
        if move < 0.3:
            st.fair = max(st.low, st.fair - 1)
        elif move < 0.6:
            st.fair = min(st.high, st.fair + 1)
        side = rng.choice(_SIDES)
        if rng.random() < self.config.trade_probability:
            qty = st.lot * rng.randint(1, self.config.max_lots)
            opposite = self.engine.best_ask if side == "BUY" else self.engine.best_bid
            if opposite(symbol) is not None:
                self.engine.place_synthetic(symbol, side, qty, now_ms=now)
                return
            # Nothing to take: the market posts liquidity on the empty side instead.
            side = "SELL" if side == "BUY" else "BUY"
        if rng.random() < 0.2:
            mine = self.engine.synthetic_orders(symbol, side)
            if mine:
                victim = mine[rng.randrange(len(mine))]
                self.engine.cancel_synthetic(symbol, victim.order_id, now_ms=now)
                return
        k = rng.randint(1, self.config.depth_levels)
        ticks = st.fair - k if side == "BUY" else st.fair + k
        qty = st.lot * rng.randint(1, self.config.max_lots)
        self.engine.place_synthetic(symbol, side, qty, price=st.price(ticks), now_ms=now)
        # Keep the book bounded: withdraw the worst synthetic orders beyond 2 x depth.
        mine = self.engine.synthetic_orders(symbol, side)
        for order in mine[2 * self.config.depth_levels :]:
            self.engine.cancel_synthetic(symbol, order.order_id, now_ms=now)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Generate events until cancelled (``events_per_s`` paced, or flat out when 0)."""
        task_status.started()
        rate = self.config.events_per_s
        if rate == 0:
            while True:
                await self._resumed.wait()
                self.step(self.config.batch)
                await trio.lowlevel.checkpoint()
        interval = 1.0 / rate
        deadline = trio.current_time()
        while True:
            if self._paused:
                await self._resumed.wait()
                deadline = trio.current_time()
            deadline += interval
            await trio.sleep_until(deadline)
            if not self._paused:
                self.step()
