"""Bench mode: pre-encoded trade frames, sent faster than any client can receive them.

``tradingd bench ingest`` measures the *client*: how many trade messages it
receives, decodes and stores per second. The normal market cannot feed it: each
event goes through the matching engine and is JSON-encoded as it is published,
so the simulator saturates a CPU first, and a client slower than its queue is
dropped as a slow consumer. A bench run (``POST /sim/bench/trades``, see
:mod:`daemon.venues.sim.control`) instead

1. reserves the next ``count`` trade ids of the symbol (the market must be
   paused, so nothing else is trading);
2. generates the trades in the background, in batches (the event loop stays
   responsive): prices within a few ticks of the symbol's reference price,
   quantities lot multiples, random buyer-maker, ``E`` = ``T`` = the wall clock
   of the batch; each is appended to the symbol's :class:`TradeLog` (so
   ``historicalTrades`` and ``/sim/trades`` serve it) and encoded once, as a
   complete server-to-client WebSocket frame, in the raw and/or combined form
   its subscribers need (byte for byte what the normal stream sends);
3. writes those frames, in id order, to every connection that was subscribed
   to ``<symbol>@trade`` when the run was requested, many frames per write
   (:data:`CHUNK_BYTES`), *waiting* for a slow socket (backpressure) instead of
   dropping the connection. ``rate`` > 0 releases frame ``k`` (1-based) at
   ``start + (k - 1) / rate``, in :data:`TICK_S` ticks, drift-free; a
   connection that cannot keep up falls behind, nothing is dropped.

The writes go through :meth:`~daemon.venues.sim.streams.StreamHub.subscribers`'
``write_frames``, which holds the connection's own write lock for each chunk,
so pings, pongs, other streams and the close handshake interleave between
chunks, never inside a frame.

Trades of the symbol made by anything else while a run is generating (a
``/sim/market/order``, a crossing user order) have ids after the run's and are
held back, then recorded and published as soon as generation ends, on the
normal path: a client sees them out of order (usually before the bench frames).

A connection's write lock is held for one chunk at a time: a client reading
fewer than about ``CHUNK_BYTES / 135 / pong_timeout_s`` frames per second
(~30/s with the defaults) would miss its pong deadline and be dropped.
"""

from __future__ import annotations

import enum
import logging
import math
import random
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Final, Protocol

import attrs
import trio

from daemon.venues.sim.market import MarketGenerator, TradeLog, WallClock
from daemon.venues.sim.matching import MatchingEngine
from daemon.venues.sim.orderbook import Trade, mul
from daemon.venues.sim.protocol import fmt

__all__ = [
    "CHUNK_BYTES",
    "MAX_COUNT",
    "BenchFeed",
    "BenchRefused",
    "BenchRun",
    "FrameBuffer",
    "Phase",
    "TradeFrames",
    "frame_header",
]

log = logging.getLogger("tradingd.sim.bench")

#: Most trades in one run (about 0.3 KB of frames per trade and form, plus the TradeLog's share).
MAX_COUNT: Final = 10_000_000
#: Bytes of frames per write to one connection (many frames per ``send_all``).
CHUNK_BYTES: Final = 256 * 1024
#: Trades generated between two checkpoints (a few milliseconds of CPU).
GENERATE_BATCH: Final = 2048
#: Pacing granularity of ``rate`` > 0.
TICK_S: Final = 0.01
#: How long ``stop`` lets a writer finish the chunk it is in before aborting its connection.
STOP_GRACE_S: Final = 2.0
#: Bench prices walk within this many ticks either side of the reference price.
PRICE_BAND_TICKS: Final = 10
#: Tolerance of the pacing arithmetic (in frames and in ticks).
_EPS: Final = 1e-6


class BenchRefused(Exception):
    """A run cannot start now (market running, or another run going): HTTP 409."""


class Phase(enum.Enum):
    """Where a run is: ``GENERATING`` → ``SENDING`` → ``DONE`` or ``STOPPED``."""

    GENERATING = "generating"
    SENDING = "sending"
    DONE = "done"
    STOPPED = "stopped"


class BenchTarget(Protocol):
    """What a run needs of a stream connection (``streams._Connection`` is one)."""

    @property
    def combined(self) -> bool: ...

    @property
    def streams(self) -> AbstractSet[str]: ...

    def is_open(self) -> bool: ...

    async def write_frames(self, frames: memoryview) -> bool: ...


class SubscriberSource(Protocol):
    """Where the subscribed connections are (:class:`~daemon.venues.sim.streams.StreamHub`)."""

    def subscribers(self, stream: str) -> Sequence[BenchTarget]: ...


# ------------------------------------------------------------------------------ encoding


def frame_header(length: int) -> bytes:
    """The header of an unmasked, final text frame (server to client, RFC 6455 5.2)."""
    if length < 126:
        return bytes((0x81, length))
    if length < 1 << 16:
        return b"\x81\x7e" + length.to_bytes(2, "big")
    return b"\x81\x7f" + length.to_bytes(8, "big")


class FrameBuffer:
    """Complete WebSocket frames back to back, with the offset where each one ends."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._ends = array("Q", [0])
        self._headers: dict[int, bytes] = {}
        self._view: memoryview | None = None

    def __len__(self) -> int:
        return len(self._ends) - 1

    @property
    def nbytes(self) -> int:
        return len(self._buf)

    def append(self, payload: bytes) -> None:
        """Add one text frame carrying ``payload`` (UTF-8 JSON)."""
        size = len(payload)
        header = self._headers.get(size)
        if header is None:
            header = self._headers[size] = frame_header(size)
        buf = self._buf
        buf += header
        buf += payload
        self._ends.append(len(buf))

    def span(self, first: int, end: int) -> memoryview:
        """Frames ``first`` .. ``end - 1`` as one byte string (no copy; no appends after this)."""
        if self._view is None:
            self._view = memoryview(self._buf)
        return self._view[self._ends[first] : self._ends[end]]

    def frames_per_chunk(self, chunk_bytes: int = CHUNK_BYTES) -> int:
        """How many frames make about ``chunk_bytes`` (at least one)."""
        if not len(self):
            return 1
        return max(1, chunk_bytes * len(self) // max(1, self.nbytes))


class TradeFrames:
    """The trades of one run and their frames, made batch by batch (synchronous, seeded)."""

    def __init__(
        self,
        *,
        symbol: str,
        first_id: int,
        engine: MatchingEngine,
        max_lots: int,
        seed: int,
        raw: bool,
        combined: bool,
    ) -> None:
        config = engine.symbol_config(symbol)
        self.symbol = symbol
        self.next_id = first_id
        self.rng = random.Random(f"bench:{seed}:{symbol}:{first_id}")
        tick = config.tick_size
        steps = int((engine.reference_price(symbol) - config.min_price) / tick)
        low, high = config.min_price, config.max_price
        band = range(-PRICE_BAND_TICKS, PRICE_BAND_TICKS + 1)
        prices = [p for k in band if low <= (p := low + tick * (steps + k)) <= high] or [low]
        lot = config.min_qty * config.lot_multiple
        qtys = [q for k in range(1, max_lots + 1) if (q := lot * k) <= config.max_qty] or [lot]
        self._prices = prices
        self._qtys = qtys
        self._quotes = [[mul(p, q) for q in qtys] for p in prices]
        self._price_text = [fmt(p).encode() for p in prices]
        self._qty_text = [fmt(q).encode() for q in qtys]
        self._index = len(prices) // 2
        # Field order and separators exactly as json.dumps(payload, separators=(",", ":"))
        # of the normal stream (daemon.venues.sim.server._on_trade).
        self._template = (
            b'{"e":"trade","E":%d,"s":"' + symbol.encode() + b'","t":%d,"p":"%s","q":"%s",'
            b'"T":%d,"m":%s,"M":true}'
        )
        self._envelope = b'{"stream":"' + f"{symbol.lower()}@trade".encode() + b'","data":'
        self.raw = FrameBuffer() if raw else None
        self.combined = FrameBuffer() if combined else None

    def make(self, count: int, now_ms: int) -> list[Trade]:
        """The next ``count`` trades (their frames appended to the buffers)."""
        rng, prices, qtys, quotes = self.rng, self._prices, self._qtys, self._quotes
        price_text, qty_text = self._price_text, self._qty_text
        template, envelope = self._template, self._envelope
        raw, combined = self.raw, self.combined
        encode = raw is not None or combined is not None
        top, nqty = len(prices) - 1, len(qtys)
        index, trade_id, symbol = self._index, self.next_id, self.symbol
        trades = []
        for _ in range(count):
            bits = rng.getrandbits(32)
            step = bits & 3  # 0 down, 1 up, 2 and 3 stay
            if step == 0 and index > 0:
                index -= 1
            elif step == 1 and index < top:
                index += 1
            q = (bits >> 2) % nqty
            maker = bool((bits >> 20) & 1)
            trades.append(
                Trade(
                    symbol=symbol,
                    id=trade_id,
                    price=prices[index],
                    qty=qtys[q],
                    quote_qty=quotes[index][q],
                    time_ms=now_ms,
                    buyer_is_maker=maker,
                )
            )
            if not encode:
                trade_id += 1
                continue
            payload = template % (
                now_ms,
                trade_id,
                price_text[index],
                qty_text[q],
                now_ms,
                b"true" if maker else b"false",
            )
            if raw is not None:
                raw.append(payload)
            if combined is not None:
                combined.append(envelope + payload + b"}")
            trade_id += 1
        self._index, self.next_id = index, trade_id
        return trades


# ------------------------------------------------------------------------------ a run


@attrs.define(eq=False)
class BenchRun:
    """One bench run: what was asked, its targets and its progress."""

    symbol: str
    first_id: int
    count: int
    rate: float
    targets: list[BenchTarget]
    forms: list[bool]  # combined form per target, as at the request
    phase: Phase = Phase.GENERATING
    connections: int = 0
    sent: list[int] = attrs.Factory(list)
    error: str | None = None
    generated_s: float | None = None
    started_at_s: float | None = None
    finished_at_s: float | None = None
    stopping: bool = False
    held: list[Trade] = attrs.Factory(list)
    stop_requested: trio.Event = attrs.Factory(trio.Event)
    done: trio.Event = attrs.Factory(trio.Event)
    cancel_scope: trio.CancelScope = attrs.Factory(trio.CancelScope)

    @property
    def last_id(self) -> int:
        return self.first_id + self.count - 1

    @property
    def running(self) -> bool:
        return self.phase in (Phase.GENERATING, Phase.SENDING)

    @property
    def stream(self) -> str:
        return f"{self.symbol.lower()}@trade"

    def allowed(self, elapsed_s: float) -> int:
        """Frames released ``elapsed_s`` after the delivery started (all when ``rate`` is 0)."""
        if not self.rate:
            return self.count
        ticks = math.floor(elapsed_s / TICK_S + _EPS)
        return min(self.count, math.floor(self.rate * ticks * TICK_S + _EPS) + 1)

    def release_s(self, index: int) -> float:
        """Seconds after the start at which frame ``index`` (0-based) is released."""
        return math.ceil((index - _EPS) / (self.rate * TICK_S)) * TICK_S

    def accepted_json(self) -> dict[str, Any]:
        """The ``202`` answer."""
        return {
            "symbol": self.symbol,
            "first_id": self.first_id,
            "last_id": self.last_id,
            "count": self.count,
            "rate": self.rate,
            "connections": self.connections,
        }

    def to_json(self) -> dict[str, Any]:
        """``GET /sim/bench``."""
        started, finished = self.started_at_s, self.finished_at_s
        return {
            "running": self.running,
            "phase": self.phase.value,
            "stopping": self.stopping,
            **self.accepted_json(),
            "sent": list(self.sent),
            "generated_s": self.generated_s,
            "started_at_s": started,
            "finished_at_s": finished,
            "send_s": None if started is None or finished is None else finished - started,
            "error": self.error,
        }


IDLE_JSON: Final[Mapping[str, Any]] = {
    "running": False,
    "phase": "idle",
    "stopping": False,
    "symbol": None,
    "first_id": None,
    "last_id": None,
    "count": 0,
    "rate": 0,
    "connections": 0,
    "sent": [],
    "generated_s": None,
    "started_at_s": None,
    "finished_at_s": None,
    "send_s": None,
    "error": None,
}


class BenchFeed:
    """Bench runs of one simulator: at most one at a time; :meth:`run` hosts their tasks.

    Args:
        release: records and publishes a trade the normal way (the server's
            trade listener); called for trades held back during generation.
    """

    def __init__(
        self,
        *,
        engine: MatchingEngine,
        trade_logs: Mapping[str, TradeLog],
        hub: SubscriberSource,
        market: MarketGenerator,
        clock: WallClock,
        release: Callable[[Trade], None],
    ) -> None:
        self.engine = engine
        self.trade_logs = trade_logs
        self.hub = hub
        self.market = market
        self.clock = clock
        self.release = release
        self.current: BenchRun | None = None
        #: Why runs are refused (``409``), if they are: with a state file, a run's
        #: millions of trades would all be written, and its reserved ids with them.
        self.refusal: str | None = None
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the runs' tasks until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # -- control -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return dict(IDLE_JSON) if self.current is None else self.current.to_json()

    def frames_sent(self) -> int:
        return 0 if self.current is None else sum(self.current.sent)

    def start(self, symbol: str, count: int, rate: float) -> BenchRun:
        """Reserve the ids, take the subscribers and start generating (then sending).

        Raises:
            BenchRefused: the market is not paused, or a run is going.
            ValueError: unknown symbol or out-of-range ``count``/``rate``.
        """
        if symbol not in self.trade_logs:
            raise ValueError(f"unknown symbol {symbol!r}")
        if not 1 <= count <= MAX_COUNT:
            raise ValueError(f"count must be in [1, {MAX_COUNT}]")
        if not (math.isfinite(rate) and rate >= 0):
            raise ValueError("rate must be a finite number >= 0")
        if self._nursery is None:
            raise BenchRefused("the simulator is not running")
        if self.refusal is not None:
            raise BenchRefused(self.refusal)
        if self.current is not None and self.current.running:
            raise BenchRefused("a bench run is going; DELETE /sim/bench stops it")
        if not self.market.paused:
            raise BenchRefused(
                'bench mode needs the market paused: POST /sim/market {"paused": true}'
            )
        targets = list(self.hub.subscribers(f"{symbol.lower()}@trade"))
        run = BenchRun(
            symbol=symbol,
            first_id=self.engine.reserve_trade_ids(symbol, count),
            count=count,
            rate=rate,
            targets=targets,
            forms=[t.combined for t in targets],
            connections=len(targets),
            sent=[0] * len(targets),
        )
        self.current = run
        self._nursery.start_soon(self._execute, run)
        log.info(
            "bench run: %d %s trades (ids %d..%d) to %d connection(s), rate %s",
            count,
            symbol,
            run.first_id,
            run.last_id,
            len(targets),
            rate or "unlimited",
        )
        return run

    async def stop(self) -> BenchRun | None:
        """Stop the current run's delivery (generation, if still going, completes unsent)."""
        run = self.current
        if run is None or not run.running:
            return run
        run.stopping = True
        run.stop_requested.set()
        if run.phase is Phase.SENDING:
            with trio.move_on_after(STOP_GRACE_S):
                await run.done.wait()
            if not run.done.is_set():
                run.cancel_scope.cancel()  # writers still in a chunk: their connections abort
                await run.done.wait()
        return run

    def holds(self, trade: Trade) -> bool:
        """Hold back ``trade`` if a run of its symbol is generating (its ids come first)."""
        run = self.current
        if run is None or run.phase is not Phase.GENERATING or trade.symbol != run.symbol:
            return False
        run.held.append(trade)
        return True

    # -- the run's tasks ---------------------------------------------------------------

    async def _execute(self, run: BenchRun) -> None:
        try:
            frames = await self._generate(run)
            if run.stopping:
                run.phase = Phase.STOPPED
                return
            run.phase = Phase.SENDING
            with run.cancel_scope:
                async with trio.open_nursery() as nursery:
                    start = trio.current_time()
                    for index, target in enumerate(run.targets):
                        buffer = frames.combined if run.forms[index] else frames.raw
                        assert buffer is not None
                        nursery.start_soon(self._write, run, index, target, buffer, start)
            run.phase = Phase.STOPPED if run.stopping else Phase.DONE
            log.info("bench run ends (%s): sent %s", run.phase.value, run.sent)
        except Exception as exc:
            # A bug here costs the run, not the simulator (and its other clients).
            log.exception("bench run failed")
            run.error = repr(exc)
        finally:
            if run.running:  # an error, or the simulator is stopping
                run.phase = Phase.STOPPED
            run.targets = []  # keep no closed connection alive
            run.done.set()

    async def _generate(self, run: BenchRun) -> TradeFrames:
        """Make, record and encode every trade of ``run``, a batch per checkpoint."""
        began = time.perf_counter()
        maker = TradeFrames(
            symbol=run.symbol,
            first_id=run.first_id,
            engine=self.engine,
            max_lots=self.market.config.max_lots,
            seed=self.market.config.seed,
            raw=not all(run.forms),
            combined=any(run.forms),
        )
        trade_log = self.trade_logs[run.symbol]
        try:
            left = run.count
            while left:
                batch = min(left, GENERATE_BATCH)
                for trade in maker.make(batch, self.clock()):
                    trade_log.append(trade)
                left -= batch
                await trio.lowlevel.checkpoint()
        finally:
            # Even when cancelled: whatever the engine traded meanwhile is recorded
            # (TradeLog ids must stay consecutive, so only after a complete run).
            run.generated_s = time.perf_counter() - began
            held, run.held = run.held, []
            if maker.next_id == run.last_id + 1:
                for trade in held:
                    self.release(trade)
        return maker

    async def _write(
        self,
        run: BenchRun,
        index: int,
        target: BenchTarget,
        frames: FrameBuffer,
        start: float,
    ) -> None:
        """Send every frame to one connection, paced by ``run.rate``, waiting for its socket."""
        per_chunk = frames.frames_per_chunk()
        sent, count, stream = 0, run.count, run.stream
        while sent < count and not run.stopping:
            if not target.is_open() or stream not in target.streams:
                return
            allowed = run.allowed(trio.current_time() - start)
            if allowed <= sent:
                with trio.move_on_at(start + run.release_s(sent)):
                    await run.stop_requested.wait()
                continue
            end = min(allowed, sent + per_chunk)
            if run.started_at_s is None:
                run.started_at_s = trio.current_time()
            if not await target.write_frames(frames.span(sent, end)):
                return
            sent = run.sent[index] = end
            run.finished_at_s = trio.current_time()
