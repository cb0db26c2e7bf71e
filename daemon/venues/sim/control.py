"""The simulator-only control API: ``/sim/...`` on the REST port, for tests and operators.

JSON in, JSON out, errors ``{"error": …}``; uncharged and unauthenticated (it
listens on loopback). :class:`ControlApi` holds the handlers;
:mod:`daemon.venues.sim.rest` sends every ``/sim/`` request to its router.

=========================== =====================================================
``GET /sim/status``         counters, connections, market state (and ``stateFile``:
                            writes, snapshots, bytes, CPU seconds, with a state file)
``GET /sim/faults``         ``{"faults": [...]}`` armed faults with ids and hits
``POST /sim/faults``        arm one fault object, or ``{"faults": [...]}``
``DELETE /sim/faults``      disarm all; ``DELETE /sim/faults/{id}`` one
``GET /sim/audit``          accepted orders; filters ``apiKey``, ``symbol``,
                            ``clientOrderId``, ``fromSeq``, ``limit``
``GET /sim/trades``         published trades: ``symbol``, ``fromId``, ``limit``
``GET /sim/balances``       every account's balances (fees and market included)
``GET /sim/market``         ``POST /sim/market`` ``{"paused": bool, "steps": n}``
``POST /sim/market/order``  a synthetic order: ``symbol``, ``side``, ``quantity``,
                            optional ``price`` (LIMIT) and ``timeInForce``
``POST /sim/market/clear``  withdraw all synthetic orders of ``symbol``
``POST /sim/streams/drop``  drop every stream connection (``mode``)
``POST /sim/streams/shutdown`` ``serverShutdown`` to all, close after ``grace_s``
``POST /sim/bench/trades``  bench run: ``symbol``, ``count``, ``rate`` → ``202``
``GET /sim/bench``          the bench run: phase, ids, frames ``sent``, timings
``DELETE /sim/bench``       stop the bench run's delivery
``GET /sim/clock``          ``{"offset_ms", "now_ms", "base_ms"}``: the wall clock's skew
``POST /sim/clock``         ``{"offset_ms": int}`` within ±86,400,000 → the same answer
=========================== =====================================================

The clock offset (:class:`~daemon.venues.sim.clock.SkewedClock`) moves every
wall-clock reading of the simulator at once — exchange times, the
``timestamp``/``recvWindow`` check, the rate-limit windows, ``serverTime``;
``now_ms`` is the skewed clock, ``base_ms`` the clock without the offset.

Bench mode (:mod:`daemon.venues.sim.benchfeed`): ``POST /sim/bench/trades``
``{"symbol": "BTCUSDT", "count": N, "rate": R}`` (``count`` 1 … 10,000,000;
``rate`` trades/s, 0 or absent = as fast as each connection takes them)
needs the market paused and no run going (else ``409``). It answers ``202``
``{"symbol", "first_id", "last_id", "count", "rate", "connections"}`` at once,
then generates the trades (recorded like any other) and sends them, pre-encoded,
to the connections subscribed to ``<symbol>@trade`` at that moment, waiting for
slow ones instead of dropping them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import trio

from daemon.http import HTTPError, Request, Response, Router
from daemon.venues.sim.accounts import Ledger
from daemon.venues.sim.answers import trade_json
from daemon.venues.sim.audit import AuditLog
from daemon.venues.sim.benchfeed import MAX_COUNT, BenchFeed, BenchRefused
from daemon.venues.sim.clock import SkewedClock, clock_routes
from daemon.venues.sim.faults import FaultInjector, FaultSpec
from daemon.venues.sim.market import MarketGenerator, TradeLog, WallClock
from daemon.venues.sim.matching import MatchingEngine
from daemon.venues.sim.protocol import fmt
from daemon.venues.sim.streams import StreamHub

__all__ = ["ControlApi"]


class ControlApi:
    """The ``/sim/...`` handlers of one simulator.

    Args:
        requests: How many ``/api/v3`` requests the REST side has seen (for ``/sim/status``).
    """

    def __init__(
        self,
        *,
        engine: MatchingEngine,
        ledger: Ledger,
        trade_logs: Mapping[str, TradeLog],
        faults: FaultInjector,
        audit: AuditLog,
        market: MarketGenerator,
        hub: StreamHub,
        clock: WallClock,
        requests: Callable[[], int],
        bench: BenchFeed | None = None,
    ) -> None:
        self.engine = engine
        self.ledger = ledger
        self.trade_logs = trade_logs
        self.faults = faults
        self.audit = audit
        self.market = market
        self.hub = hub
        self.clock = clock
        self._requests = requests
        self.bench = bench
        #: The state file's counters (``/sim/status`` ``stateFile``), when there is one.
        self.state_stats: Callable[[], dict[str, Any]] | None = None

    def router(self) -> Router:
        """The ``/sim/...`` routes."""
        router = Router()
        router.add("GET", "/sim/status", self._sim_status)
        router.add("GET", "/sim/faults", self._sim_faults)
        router.add("POST", "/sim/faults", self._sim_arm)
        router.add("DELETE", "/sim/faults", self._sim_clear)
        router.add("DELETE", "/sim/faults/{fault_id}", self._sim_disarm)
        router.add("GET", "/sim/audit", self._sim_audit)
        router.add("GET", "/sim/trades", self._sim_trades)
        router.add("GET", "/sim/balances", self._sim_balances)
        router.add("GET", "/sim/market", self._sim_market)
        router.add("POST", "/sim/market", self._sim_market_set)
        router.add("POST", "/sim/market/order", self._sim_market_order)
        router.add("POST", "/sim/market/clear", self._sim_market_clear)
        router.add("POST", "/sim/streams/drop", self._sim_drop)
        router.add("POST", "/sim/streams/shutdown", self._sim_shutdown)
        router.add("POST", "/sim/bench/trades", self._sim_bench_start)
        router.add("GET", "/sim/bench", self._sim_bench)
        router.add("DELETE", "/sim/bench", self._sim_bench_stop)
        if isinstance(self.clock, SkewedClock):
            clock_routes(router, self.clock)
        return router

    async def _sim_status(self, request: Request) -> Response:
        bench = self.bench
        return Response.json(
            {
                "requests": self._requests(),
                "streamConnections": self.hub.connection_count,
                "streamMessages": self.hub.published,
                "auditRecords": len(self.audit),
                "benchRunning": bench is not None
                and bench.current is not None
                and bench.current.running,
                "benchFramesSent": 0 if bench is None else bench.frames_sent(),
                **self._market_state(),
                **({} if self.state_stats is None else {"stateFile": self.state_stats()}),
            }
        )

    def _market_state(self) -> dict[str, Any]:
        symbols = {}
        for name in self.engine.symbols:
            bid, ask = self.engine.best_bid(name), self.engine.best_ask(name)
            symbols[name] = {
                "bestBid": None if bid is None else fmt(bid),
                "bestAsk": None if ask is None else fmt(ask),
                "lastTradeId": self.engine.last_trade_id(name),
                "lastUpdateId": self.engine.update_id(name),
            }
        return {
            "paused": self.market.paused,
            "events": self.market.events,
            "symbols": symbols,
        }

    async def _sim_faults(self, request: Request) -> Response:
        return Response.json({"faults": self.faults.snapshot(trio.current_time())})

    async def _sim_arm(self, request: Request) -> Response:
        data = request.json()
        items = data.get("faults") if isinstance(data, dict) and "faults" in data else [data]
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise HTTPError(400, 'expected a fault object or {"faults": [objects]}')
        try:
            specs = [FaultSpec.from_mapping(item) for item in items]
        except (ValueError, TypeError) as exc:
            raise HTTPError(400, f"invalid fault: {exc}") from None
        now = trio.current_time()
        armed = [self.faults.arm(spec, now) for spec in specs]
        return Response.json({"armed": [f.to_json(now) for f in armed]}, status=201)

    async def _sim_clear(self, request: Request) -> Response:
        return Response.json({"cleared": self.faults.clear()})

    async def _sim_disarm(self, request: Request) -> Response:
        raw = request.path_params["fault_id"]
        if not raw.isdigit() or not self.faults.disarm(int(raw)):
            raise HTTPError(404, f"no armed fault {raw}")
        return Response.json({"disarmed": int(raw)})

    async def _sim_audit(self, request: Request) -> Response:
        from_seq = _query_int(request, "fromSeq", 0)
        limit = _query_int(request, "limit", None)
        records = self.audit.query(
            api_key=request.query_value("apiKey"),
            symbol=request.query_value("symbol"),
            client_order_id=request.query_value("clientOrderId"),
            from_seq=from_seq or 0,
            limit=limit,
        )
        return Response.json({"orders": [r.to_json() for r in records]})

    async def _sim_trades(self, request: Request) -> Response:
        symbol = request.query_value("symbol")
        if symbol is None or symbol not in self.trade_logs:
            raise HTTPError(400, f"unknown or missing symbol {symbol!r}")
        log_ = self.trade_logs[symbol]
        from_id = _query_int(request, "fromId", None)
        limit = _query_int(request, "limit", 1000) or 1000
        oldest = log_.oldest_id(audit=True)
        if from_id is None:
            from_id = oldest if oldest is not None else 0
        trades = log_.from_id(from_id, min(limit, 100_000), audit=True)
        return Response.json(
            {
                "symbol": symbol,
                "oldestId": oldest,
                "lastId": self.engine.last_trade_id(symbol),
                "trades": [trade_json(t) for t in trades],
            }
        )

    async def _sim_balances(self, request: Request) -> Response:
        out = {
            account: {
                asset: {"free": fmt(b.free), "locked": fmt(b.locked)}
                for asset, b in sorted(self.ledger.balances(account).items())
            }
            for account in self.ledger.accounts()
        }
        return Response.json({"accounts": out})

    async def _sim_market(self, request: Request) -> Response:
        return Response.json(self._market_state())

    async def _sim_market_set(self, request: Request) -> Response:
        data = _object(request)
        unknown = set(data) - {"paused", "steps"}
        if unknown:
            raise HTTPError(400, f"unknown key(s) {sorted(unknown)}")
        paused = data.get("paused")
        if paused is not None:
            if not isinstance(paused, bool):
                raise HTTPError(400, "paused must be true or false")
            if paused:
                self.market.pause()
            else:
                self.market.resume()
        steps = data.get("steps", 0)
        if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= 1_000_000:
            raise HTTPError(400, "steps must be an integer in [0, 1000000]")
        self.market.step(steps)
        return Response.json(self._market_state())

    async def _sim_market_order(self, request: Request) -> Response:
        data = _object(request)
        unknown = set(data) - {"symbol", "side", "quantity", "price", "timeInForce"}
        if unknown:
            raise HTTPError(400, f"unknown key(s) {sorted(unknown)}")
        symbol, side = data.get("symbol"), data.get("side")
        if not isinstance(symbol, str) or symbol not in self.trade_logs:
            raise HTTPError(400, f"unknown symbol {symbol!r}")
        if side not in ("BUY", "SELL"):
            raise HTTPError(400, "side must be BUY or SELL")
        tif = data.get("timeInForce", "GTC")
        if tif not in ("GTC", "IOC"):
            raise HTTPError(400, "timeInForce must be GTC or IOC")
        try:
            qty = Decimal(str(data["quantity"]))
            price = None if data.get("price") is None else Decimal(str(data["price"]))
        except (KeyError, ArithmeticError, ValueError):
            raise HTTPError(400, "quantity (and price, if given) must be decimal strings") from None
        if (
            not qty.is_finite()
            or qty <= 0
            or (price is not None and (not price.is_finite() or price <= 0))
        ):
            raise HTTPError(400, "quantity and price must be positive")
        first = self.engine.last_trade_id(symbol) + 1
        order = self.engine.place_synthetic(
            symbol, side, qty, price=price, time_in_force=tif, now_ms=self.clock()
        )
        return Response.json(
            {
                "orderId": order.order_id,
                "status": order.status,
                "executedQty": fmt(order.executed_qty),
                "tradeIds": list(range(first, self.engine.last_trade_id(symbol) + 1)),
            }
        )

    async def _sim_market_clear(self, request: Request) -> Response:
        data = _object(request)
        symbol = data.get("symbol")
        if not isinstance(symbol, str) or symbol not in self.trade_logs:
            raise HTTPError(400, f"unknown symbol {symbol!r}")
        now = self.clock()
        withdrawn = 0
        for side in ("BUY", "SELL"):
            for order in self.engine.synthetic_orders(symbol, side):
                self.engine.cancel_synthetic(symbol, order.order_id, now_ms=now)
                withdrawn += 1
        return Response.json({"withdrawn": withdrawn})

    async def _sim_drop(self, request: Request) -> Response:
        data = _object(request) if request.body else {}
        mode = data.get("mode", "abort")
        if mode not in ("abort", "close"):
            raise HTTPError(400, "mode must be 'abort' or 'close'")
        return Response.json({"dropped": self.hub.drop_all(mode)})

    async def _sim_shutdown(self, request: Request) -> Response:
        data = _object(request) if request.body else {}
        grace = data.get("grace_s", 0)
        if isinstance(grace, bool) or not isinstance(grace, int | float) or grace < 0:
            raise HTTPError(400, "grace_s must be a number >= 0")
        return Response.json({"notified": self.hub.shutdown_all(float(grace))})

    # -- bench mode ---------------------------------------------------------------------

    def _bench(self) -> BenchFeed:
        if self.bench is None:
            raise HTTPError(404, "bench mode is not available in this simulator")
        return self.bench

    async def _sim_bench_start(self, request: Request) -> Response:
        bench = self._bench()
        data = _object(request)
        unknown = set(data) - {"symbol", "count", "rate"}
        if unknown:
            raise HTTPError(400, f"unknown key(s) {sorted(unknown)}")
        symbol, count, rate = data.get("symbol"), data.get("count"), data.get("rate", 0)
        if not isinstance(symbol, str) or symbol not in self.trade_logs:
            raise HTTPError(400, f"unknown or missing symbol {symbol!r}")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
            raise HTTPError(400, f"count must be an integer in [1, {MAX_COUNT}]")
        if (
            isinstance(rate, bool)
            or not isinstance(rate, int | float)
            or not 0 <= rate < math.inf  # 1e400 decodes as inf
        ):
            raise HTTPError(400, "rate must be a finite number >= 0 (per second; 0 = unpaced)")
        try:
            run = bench.start(symbol, count, rate)
        except BenchRefused as exc:
            raise HTTPError(409, str(exc)) from None
        except ValueError as exc:
            raise HTTPError(400, str(exc)) from None
        return Response.json(run.accepted_json(), status=202)

    async def _sim_bench(self, request: Request) -> Response:
        return Response.json(self._bench().snapshot())

    async def _sim_bench_stop(self, request: Request) -> Response:
        bench = self._bench()
        await bench.stop()
        return Response.json(bench.snapshot())


def _object(request: Request) -> dict[str, Any]:
    data = request.json()
    if not isinstance(data, dict):
        raise HTTPError(400, "expected a JSON object")
    return data


def _query_int(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_value(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise HTTPError(400, f"{name} must be a non-negative integer")
    return int(raw)
