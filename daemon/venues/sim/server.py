"""Wiring: one simulator = engine + market + REST + streams + WebSocket API, one Trio service.

``serve_sim(config, task_status=...)`` binds both listeners on
``config.host`` (loopback), seeds the books, starts the market, and only then
reports ``(rest_url, ws_url)``, e.g. ``("http://127.0.0.1:8900",
"ws://127.0.0.1:8901")``; a client appends ``/api/v3/...`` to the first and
``/ws/<stream>``, ``/stream?streams=...`` or, for the WebSocket API and its
user data stream, ``/ws-api/v3`` to the second. Cancelling it stops
everything.

Time has two sources, on purpose: Trio time paces the market, the depth
flushes, pings and fault timers (so a test under ``autojump_clock`` controls
all of it), and an injectable wall clock (milliseconds since the epoch)
stamps exchange times, checks ``timestamp``/``recvWindow`` and drives the
rate-limit windows. :func:`trio_clock_ms` makes the wall clock follow Trio's
clock for fully virtual tests. The wall clock is wrapped in a
:class:`~daemon.venues.sim.clock.SkewedClock` (``clock_offset_ms``,
``POST /sim/clock``), so a test can skew every exchange time at once.

With ``state_file`` set, a :class:`~daemon.venues.sim.persist.StateStore`
restores the venue's state at construction (the books are then not seeded)
and writes every change before it can be observed: the API calls, the
market steps and the control requests end with its ``commit``.

Bench mode (:class:`~daemon.venues.sim.benchfeed.BenchFeed`, ``/sim/bench``)
runs beside the market: the server hands it the engine, the trade logs and the
hub, runs its tasks in :meth:`SimServer.run_market`, and lets it hold back the
engine's trades while a run is generating (:meth:`SimServer._on_trade`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

import trio

from daemon.http import serve_http
from daemon.venues.sim.accounts import Ledger
from daemon.venues.sim.audit import AuditLog
from daemon.venues.sim.benchfeed import BenchFeed
from daemon.venues.sim.clock import SkewedClock
from daemon.venues.sim.config import SimConfig
from daemon.venues.sim.faults import FaultInjector
from daemon.venues.sim.limits import RateLimiter
from daemon.venues.sim.market import DepthBatcher, MarketGenerator, TradeLog, WallClock
from daemon.venues.sim.matching import MatchingEngine
from daemon.venues.sim.orderbook import BookChange, Trade
from daemon.venues.sim.persist import StateStore
from daemon.venues.sim.protocol import fmt
from daemon.venues.sim.rest import RestApi
from daemon.venues.sim.simstate import Parts
from daemon.venues.sim.streams import StreamHub
from daemon.venues.sim.userstream import UserStreamHub
from daemon.venues.sim.wsapi import PATH as WS_API_PATH
from daemon.venues.sim.wsapi import WsApi

__all__ = ["SimServer", "serve_sim", "system_clock_ms", "trio_clock_ms"]

log = logging.getLogger("tradingd.sim")

#: Depth stream speeds: stream-name suffix and flush interval.
DEPTH_SPEEDS: tuple[tuple[str, float], ...] = (("@depth@100ms", 0.1), ("@depth", 1.0))


def system_clock_ms() -> int:
    """The real wall clock, in milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def trio_clock_ms(epoch_ms: int) -> Callable[[], int]:
    """A wall clock that reads ``epoch_ms`` plus Trio's clock (virtual under ``MockClock``)."""

    def now_ms() -> int:
        return epoch_ms + int(round(trio.current_time() * 1000, 6))

    return now_ms


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


class SimServer:
    """A whole simulator; its parts stay reachable for in-process tests and the demo."""

    def __init__(self, config: SimConfig, *, wall_clock: WallClock | None = None) -> None:
        """Build the simulator; with ``config.state_file``, restore what the file holds.

        Raises:
            StateFileError: the state file exists but cannot be used.
        """
        self.config = config
        self.clock = SkewedClock(wall_clock or system_clock_ms, config.clock_offset_ms)
        self.ledger = Ledger()
        for account in config.accounts:
            self.ledger.open_account(account.api_key, account.secret_key, account.balances)
        market = config.market
        self.engine = MatchingEngine(
            config.symbols,
            self.ledger,
            maker_rate=config.maker_commission,
            taker_rate=config.taker_commission,
            first_trade_id=market.first_trade_id,
            first_update_id=market.first_update_id,
            seed=market.seed,
        )
        self.trade_logs = {
            s.symbol: TradeLog(
                s.symbol,
                retention=market.trade_retention,
                audit_retention=config.audit_trade_retention,
            )
            for s in config.symbols
        }
        self.faults = FaultInjector(seed=market.seed)
        self.limiter = RateLimiter(config.rate_limits, config.limits)
        self.audit = AuditLog(config.audit_retention)
        self.hub = StreamHub(
            (s.symbol for s in config.symbols), config.streams, self.faults, self.clock
        )
        self.market = MarketGenerator(self.engine, config.symbols, market, self.clock)
        self.batchers = {
            suffix: {s.symbol: DepthBatcher(s.symbol) for s in config.symbols}
            for suffix, _interval in DEPTH_SPEEDS
        }
        self.bench = BenchFeed(
            engine=self.engine,
            trade_logs=self.trade_logs,
            hub=self.hub,
            market=self.market,
            clock=self.clock,
            release=self._record_trade,
        )
        self.engine.trade_listeners.append(self._on_trade)
        self.engine.book_listeners.append(self._on_book)
        self.rest = RestApi(
            config=config,
            engine=self.engine,
            ledger=self.ledger,
            trade_logs=self.trade_logs,
            limiter=self.limiter,
            faults=self.faults,
            audit=self.audit,
            market=self.market,
            hub=self.hub,
            clock=self.clock,
            bench=self.bench,
        )
        self.users = UserStreamHub(self.ledger, self.clock)
        self.engine.changes.order_listeners.append(self.users.on_order)
        self.engine.changes.balance_listeners.append(self.users.on_balances)
        self.ws_api = WsApi(
            api=self.rest.api,
            limiter=self.limiter,
            faults=self.faults,
            users=self.users,
            streams=config.streams,
            rate_limits=config.rate_limits,
            clock=self.clock,
        )
        self.hub.mount(WS_API_PATH, self.ws_api.open)
        self.rest_url: str | None = None
        self.ws_url: str | None = None
        self.store: StateStore | None = None
        self._restored = False
        if config.state_file:
            self._open_store(config.state_file)

    def _open_store(self, path: str) -> None:
        parts = Parts(
            config=self.config,
            engine=self.engine,
            ledger=self.ledger,
            audit=self.audit,
            trade_logs=self.trade_logs,
            market=self.market,
            users=self.users,
        )
        store = self.store = StateStore(path, parts, fsync=self.config.state_fsync)
        self._restored = store.restore()
        self.rest.api.commit = store.commit
        self.market.committed = store.commit
        self.rest.control.state_stats = store.stats
        self.bench.refusal = "bench mode is not available with a state file (--state-file)"

    # -- engine listeners ---------------------------------------------------------

    def _on_trade(self, trade: Trade) -> None:
        if not self.bench.holds(trade):  # a bench run of the symbol records its ids first
            self._record_trade(trade)

    def _record_trade(self, trade: Trade) -> None:
        """Keep ``trade`` in its log and publish it on ``<symbol>@trade``."""
        self.trade_logs[trade.symbol].append(trade)
        stream = f"{trade.symbol.lower()}@trade"
        if self.hub.has_subscribers(stream):
            self.hub.publish(
                stream,
                {
                    "e": "trade",
                    "E": self.clock(),
                    "s": trade.symbol,
                    "t": trade.id,
                    "p": fmt(trade.price),
                    "q": fmt(trade.qty),
                    "T": trade.time_ms,
                    "m": trade.buyer_is_maker,
                    "M": True,
                },
            )

    def _on_book(self, change: BookChange) -> None:
        for batchers in self.batchers.values():
            batchers[change.symbol].record(change)

    async def _flush_depth(self, suffix: str, interval_s: float) -> None:
        """Publish each symbol's batched book changes every ``interval_s`` (drift-free)."""
        batchers = self.batchers[suffix]
        deadline = trio.current_time()
        while True:
            deadline += interval_s
            await trio.sleep_until(deadline)
            now_ms = self.clock()
            for symbol, batcher in batchers.items():
                payload = batcher.flush(now_ms)
                if payload is not None:
                    self.hub.publish(f"{symbol.lower()}{suffix}", payload)

    # -- running --------------------------------------------------------------------

    async def run_market(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The simulator without listeners: faults armed, books seeded, market and depth flushes.

        :meth:`run` uses it; tests drive :meth:`StreamHub.handle_tcp` over in-memory
        streams with it, so that everything runs in virtual time.
        """
        now = trio.current_time()
        for spec in self.config.faults:
            self.faults.arm(spec, now)
        if not self._restored:
            self.market.seed_books()
        if self.store is not None:
            self.store.start()
        try:
            async with trio.open_nursery() as nursery:
                for suffix, interval_s in DEPTH_SPEEDS:
                    nursery.start_soon(self._flush_depth, suffix, interval_s)
                await nursery.start(self.bench.run)
                await nursery.start(self.market.run)
                task_status.started()
        finally:
            if self.store is not None:
                self.store.close()

    async def run(
        self, *, task_status: trio.TaskStatus[tuple[str, str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; reports ``(rest_url, ws_url)`` once both listen."""
        config = self.config
        async with trio.open_nursery() as nursery:
            rest_host, rest_port = await nursery.start(
                functools.partial(
                    serve_http,
                    self.rest,
                    config.host,
                    config.rest_port,
                    request_timeout_s=config.rest_request_timeout_s,
                    max_connections=config.rest_max_connections,
                )
            )
            ws_host, ws_port = await nursery.start(self.hub.serve, config.host, config.ws_port)
            await nursery.start(self.run_market)
            self.rest_url = _url("http", rest_host, rest_port)
            self.ws_url = _url("ws", ws_host, ws_port)
            log.info("simulator ready: REST %s, streams %s", self.rest_url, self.ws_url)
            task_status.started((self.rest_url, self.ws_url))


async def serve_sim(
    config: SimConfig,
    *,
    wall_clock: WallClock | None = None,
    task_status: trio.TaskStatus[tuple[str, str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a simulator until cancelled; ``task_status.started((rest_url, ws_url))`` when ready.

    Args:
        config: what to simulate (ports may be 0 for any free port).
        wall_clock: milliseconds-since-epoch source for exchange timestamps;
            the system clock by default, :func:`trio_clock_ms` for virtual time.
        task_status: receives the two base URLs.

    Raises:
        OSError: a port cannot be bound (before ``started`` is reported).
    """
    await SimServer(config, wall_clock=wall_clock).run(task_status=task_status)
