"""The REST side: Binance's ``/api/v3`` paths and the simulator-only ``/sim`` control API.

Every ``/api/v3`` request goes through the same pipeline, in Binance's order:

1. request weight charged to the client IP (``429``/``418`` when over; every
   answer carries ``X-MBX-USED-WEIGHT-*``);
2. REST faults of phase ``before`` (not processed);
3. parameters (query string, plus the form body for POST/DELETE; the query
   wins when both have one), authentication for SIGNED endpoints (TRADE and
   USER_DATA in Binance's docs; every other endpoint is security type NONE: no
   key needed, an ``X-MBX-APIKEY`` header is ignored);
4. the endpoint itself (errors are ``{"code": …, "msg": …}`` with Binance's
   HTTP status);
5. REST faults of phase ``after`` (processed: an order placed here exists
   even though the client sees a 5xx, a stall or ``-1007``).

``/sim/...`` is the control API (JSON in, JSON out, errors ``{"error": …}``),
uncharged and unauthenticated: it listens on loopback, for tests and operators.

=========================== =====================================================
``GET /sim/status``         counters, connections, market state
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
=========================== =====================================================
"""

from __future__ import annotations

import json
import logging
import urllib.parse
import zlib
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any, Final, Literal

import attrs
import trio

from daemon.decode import DecodeError, json_loads
from daemon.http import HTTPError, Request, Response, Router
from daemon.venues.sim import auth
from daemon.venues.sim import protocol as p
from daemon.venues.sim.accounts import Ledger
from daemon.venues.sim.audit import AuditLog
from daemon.venues.sim.config import PercentPriceBySideConfig, SimConfig
from daemon.venues.sim.faults import FaultInjector, FaultSpec
from daemon.venues.sim.limits import RateLimiter
from daemon.venues.sim.market import MarketGenerator, TradeLog, WallClock
from daemon.venues.sim.matching import AccountTrade, MatchingEngine, NewOrder, Order, Trade
from daemon.venues.sim.protocol import ApiError, fmt
from daemon.venues.sim.streams import StreamHub

__all__ = ["RestApi"]

log = logging.getLogger("tradingd.sim.rest")

Headers = tuple[tuple[str, str], ...]
JSON_TYPE: Final = "application/json;charset=UTF-8"
_ORDER_TYPES: Final = ("LIMIT", "MARKET", "LIMIT_MAKER")
_UNSUPPORTED_TYPES: Final = {
    "STOP_LOSS": "Stop loss orders are not supported for this symbol.",
    "STOP_LOSS_LIMIT": "Stop loss limit orders are not supported for this symbol.",
    "TAKE_PROFIT": "Take profit orders are not supported for this symbol.",
    "TAKE_PROFIT_LIMIT": "Take profit limit orders are not supported for this symbol.",
}
_SIGNED: Final = frozenset({"timestamp", "recvWindow", "signature"})


def _json(obj: Any, status: int = 200, headers: Headers = ()) -> Response:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return Response(status, body, (("Content-Type", JSON_TYPE), *headers))


def _error(exc: ApiError, headers: Headers = ()) -> Response:
    return _json(exc.body(), exc.status, (*exc.headers, *headers))


class Params:
    """The merged parameters of one request, read the way Binance validates them."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def text(self, name: str, *, required: bool = False) -> str | None:
        value = self.values.get(name)
        if value is None or value == "":
            if required:
                raise p.mandatory(name)
            if value == "":
                raise ApiError(p.PARAM_EMPTY, f"Parameter '{name}' was empty.")
            return None
        return value

    def decimal(self, name: str, *, required: bool = False) -> Decimal | None:
        raw = self.text(name, required=required)
        if raw is None:
            return None
        value = p.parse_decimal(name, raw)
        if p.decimals_of(value) > p.WIRE_DECIMALS:
            raise ApiError(p.BAD_PRECISION, f"Parameter '{name}' has too much precision.")
        return value

    def integer(self, name: str, *, required: bool = False) -> int | None:
        raw = self.text(name, required=required)
        return None if raw is None else p.parse_int(name, raw)

    def limit(self, default: int, maximum: int) -> int:
        value = self.integer("limit")
        if value is None:
            return default
        if value < 1 or value > maximum:
            raise ApiError(p.INVALID_PARAMETER, "Data sent for parameter 'limit' is not valid.")
        return value

    def only(self, accepted: frozenset[str]) -> None:
        """-1104 when the request sent parameters the endpoint does not read."""
        read = sum(1 for name in self.values if name in accepted)
        if read != len(self.values):
            raise ApiError(
                p.UNREAD_PARAMETERS,
                f"Not all sent parameters were read; read '{read}' parameter(s) but was sent "
                f"'{len(self.values)}'.",
            )


def _merge_params(request: Request) -> tuple[Params, bool]:
    """Query string plus form body (query wins). Returns ``(params, duplicates_seen)``."""
    values: dict[str, str] = {}
    duplicate = False
    for name, items in request.query.items():
        values[name] = items[0]
        duplicate = duplicate or len(items) > 1
    if request.method in ("POST", "PUT", "DELETE") and request.body:
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(p.ILLEGAL_CHARS, "Illegal characters found in a parameter.") from None
        seen: set[str] = set()
        for name, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
            duplicate = duplicate or name in seen
            seen.add(name)
            values.setdefault(name, value)
    return Params(values), duplicate


@attrs.frozen
class _Endpoint:
    handler: Callable[[Request, Params, str], Awaitable[tuple[Any, Headers]]]
    #: Binance's security type, as ``rest-api.md`` lists it today: ``NONE`` (public
    #: market data: no key, any key header ignored) or ``SIGNED`` (TRADE and
    #: USER_DATA: key and signature). ``historicalTrades`` was MARKET_DATA (key
    #: required) until Binance made it NONE in 2023.
    security: Literal["NONE", "SIGNED"]


class RestApi:
    """The request handler served by :func:`daemon.http.serve_http`."""

    def __init__(
        self,
        *,
        config: SimConfig,
        engine: MatchingEngine,
        ledger: Ledger,
        trade_logs: Mapping[str, TradeLog],
        limiter: RateLimiter,
        faults: FaultInjector,
        audit: AuditLog,
        market: MarketGenerator,
        hub: StreamHub,
        clock: WallClock,
    ) -> None:
        self.config = config
        self.engine = engine
        self.ledger = ledger
        self.trade_logs = trade_logs
        self.limiter = limiter
        self.faults = faults
        self.audit = audit
        self.market = market
        self.hub = hub
        self.clock = clock
        self.requests = 0
        self._endpoints: dict[tuple[str, str], _Endpoint] = {
            ("GET", "/api/v3/ping"): _Endpoint(self._ping, "NONE"),
            ("GET", "/api/v3/time"): _Endpoint(self._time, "NONE"),
            ("GET", "/api/v3/exchangeInfo"): _Endpoint(self._exchange_info, "NONE"),
            ("GET", "/api/v3/depth"): _Endpoint(self._depth, "NONE"),
            ("GET", "/api/v3/trades"): _Endpoint(self._trades, "NONE"),
            ("GET", "/api/v3/historicalTrades"): _Endpoint(self._historical_trades, "NONE"),
            ("POST", "/api/v3/order"): _Endpoint(self._new_order, "SIGNED"),
            ("GET", "/api/v3/order"): _Endpoint(self._query_order, "SIGNED"),
            ("DELETE", "/api/v3/order"): _Endpoint(self._cancel_order, "SIGNED"),
            ("GET", "/api/v3/openOrders"): _Endpoint(self._open_orders, "SIGNED"),
            ("GET", "/api/v3/myTrades"): _Endpoint(self._my_trades, "SIGNED"),
            ("GET", "/api/v3/account"): _Endpoint(self._account, "SIGNED"),
        }
        self._control = self._control_router()

    # -- pipeline -----------------------------------------------------------------

    async def __call__(self, request: Request) -> Response:
        if request.path.startswith("/sim/"):
            return await self._control(request)
        return await self.handle_api(request)

    async def handle_api(self, request: Request) -> Response:
        """One ``/api/v3`` request through the whole pipeline."""
        self.requests += 1
        method, path = request.method, request.path
        endpoint = self._endpoints.get((method, path))
        if endpoint is None:
            if any(path == known for _m, known in self._endpoints):
                return _json({"code": p.UNKNOWN, "msg": "Method not allowed."}, 405)
            return _json({"code": -1099, "msg": "Not found, authenticated, or authorized."}, 404)
        ip = request.client[0] if request.client else "unknown"
        now = self.clock()
        try:
            usage = self.limiter.admit(ip, self._weight(method, path, request), now)
        except ApiError as exc:
            return _error(exc)
        fault = self.faults.take_rest("before", method, path, trio.current_time())
        if fault is not None:
            return await self._fault_before(fault, ip, usage)
        try:
            params, duplicate = _merge_params(request)
            if duplicate:
                raise ApiError(p.TOO_MANY_PARAMETERS, "Duplicate values for a parameter detected.")
            account = self._authenticate(endpoint.security, request, params)
            body, extra = await endpoint.handler(request, params, account)
            response = _json(body, 200, (*usage, *extra))
        except ApiError as exc:
            response = _error(exc, usage)
        fault = self.faults.take_rest("after", method, path, trio.current_time())
        if fault is not None:
            return await self._fault_after(fault, response, usage)
        return response

    def _weight(self, method: str, path: str, request: Request) -> int:
        if path == "/api/v3/depth":
            raw = request.query_value("limit")
            limit = int(raw) if raw and raw.isdigit() else 100
            return p.depth_weight(min(limit, p.MAX_DEPTH_LIMIT))
        if path == "/api/v3/openOrders":
            with_symbol, without = p.OPEN_ORDERS_WEIGHT
            return with_symbol if request.query_value("symbol") else without
        if path == "/api/v3/myTrades":
            without, with_order = p.MY_TRADES_WEIGHT
            return with_order if request.query_value("orderId") else without
        return p.WEIGHTS.get((method, path), 1)

    def _authenticate(self, security: str, request: Request, params: Params) -> str:
        if security == "NONE":
            return ""
        key = auth.check_api_key(request.headers.get("x-mbx-apikey"), self.ledger)
        signature = params.get("signature")
        if not signature:
            raise p.mandatory("signature")
        secret = self.ledger.secret(key)
        assert secret is not None
        if not auth.verify_signature(
            secret,
            auth.signature_payloads(request.query, request.body, request.raw_query),
            signature,
        ):
            raise ApiError(p.INVALID_SIGNATURE, p.MSG_BAD_SIGNATURE)
        auth.check_timestamp(params.get("timestamp"), params.get("recvWindow"), self.clock())
        return key

    async def _fault_before(self, fault: FaultSpec, ip: str, usage: Headers) -> Response:
        log.info("fault %s before processing", fault.kind)
        if fault.kind == "rate_limit_burst":
            retry_after = fault.retry_after_s if fault.retry_after_s is not None else 1
            self.limiter.impose(ip, self.clock() + retry_after * 1000)
            return _json(
                {
                    "code": p.TOO_MANY_REQUESTS,
                    "msg": "Too many requests queued.",
                },
                429,
                (("Retry-After", str(retry_after)), *usage),
            )
        if fault.kind == "rest_timeout":
            await trio.sleep(fault.delay_s or 0.0)
            return Response(
                504,
                b"<html><body><h1>504 Gateway Time-out</h1></body></html>",
                (("Content-Type", "text/html"),),
            )
        return self._fault_error(
            fault,
            usage,
            default_code=p.DISCONNECTED,
            default_msg="Internal error; unable to process your request. Please try again.",
        )

    async def _fault_after(self, fault: FaultSpec, response: Response, usage: Headers) -> Response:
        log.info("fault %s after processing (real answer was %d)", fault.kind, response.status)
        if fault.kind == "rest_timeout":
            await trio.sleep(fault.delay_s or 0.0)
            return response
        if fault.kind == "rest_unknown":
            return _json({"code": p.TIMEOUT, "msg": p.MSG_TIMEOUT}, fault.status or 408, usage)
        return self._fault_error(
            fault, usage, default_code=p.UNKNOWN, default_msg=p.MSG_UNKNOWN_5XX
        )

    @staticmethod
    def _fault_error(
        fault: FaultSpec, usage: Headers, *, default_code: int, default_msg: str
    ) -> Response:
        status = fault.status or 503
        if fault.body is not None:
            return Response(status, fault.body.encode(), (("Content-Type", "text/html"), *usage))
        body = {
            "code": fault.code if fault.code is not None else default_code,
            "msg": fault.msg if fault.msg is not None else default_msg,
        }
        return _json(body, status, usage)

    # -- market data ------------------------------------------------------------------

    async def _ping(self, request: Request, params: Params, account: str) -> tuple[Any, Headers]:
        params.only(frozenset())
        return {}, ()

    async def _time(self, request: Request, params: Params, account: str) -> tuple[Any, Headers]:
        params.only(frozenset())
        return {"serverTime": self.clock()}, ()

    async def _exchange_info(
        self, request: Request, params: Params, account: str
    ) -> tuple[Any, Headers]:
        params.only(
            frozenset({"symbol", "symbols", "permissions", "showPermissionSets", "symbolStatus"})
        )
        wanted: list[str] | None = None
        symbol = params.text("symbol")
        symbols = params.text("symbols")
        if symbol is not None:
            wanted = [symbol]
        elif symbols is not None:
            try:
                decoded = json_loads(symbols, what="symbols", max_depth=2)
            except DecodeError:
                raise ApiError(-1135, "JSON sent for parameter 'symbols' is not valid") from None
            if not isinstance(decoded, list) or not all(isinstance(s, str) for s in decoded):
                raise ApiError(-1135, "JSON sent for parameter 'symbols' is not valid")
            wanted = decoded
        configs = list(self.config.symbols)
        if wanted is not None:
            configs = [self.engine.symbol_config(name) for name in wanted]
        return {
            "timezone": "UTC",
            "serverTime": self.clock(),
            "rateLimits": self.limiter.exchange_info(),
            "exchangeFilters": [],
            "symbols": [_symbol_info(s) for s in configs],
        }, ()

    async def _depth(self, request: Request, params: Params, account: str) -> tuple[Any, Headers]:
        params.only(frozenset({"symbol", "limit"}))
        symbol = params.text("symbol", required=True)
        assert symbol is not None
        limit = params.integer("limit")
        limit = 100 if limit is None else limit
        if limit < 1:
            raise ApiError(p.INVALID_PARAMETER, "Data sent for parameter 'limit' is not valid.")
        last_update_id, bids, asks = self.engine.depth(symbol, min(limit, p.MAX_DEPTH_LIMIT))
        return {
            "lastUpdateId": last_update_id,
            "bids": [[fmt(px), fmt(q)] for px, q in bids],
            "asks": [[fmt(px), fmt(q)] for px, q in asks],
        }, ()

    async def _trades(self, request: Request, params: Params, account: str) -> tuple[Any, Headers]:
        params.only(frozenset({"symbol", "limit"}))
        symbol = params.text("symbol", required=True)
        assert symbol is not None
        self.engine.symbol_config(symbol)
        limit = params.limit(500, 1000)
        return [_trade_json(t) for t in self.trade_logs[symbol].recent(limit)], ()

    async def _historical_trades(
        self, request: Request, params: Params, account: str
    ) -> tuple[Any, Headers]:
        params.only(frozenset({"symbol", "limit", "fromId"}))
        symbol = params.text("symbol", required=True)
        assert symbol is not None
        self.engine.symbol_config(symbol)
        limit = params.limit(500, 1000)
        from_id = params.integer("fromId")
        trades = self.trade_logs[symbol]
        chosen = trades.recent(limit) if from_id is None else trades.from_id(from_id, limit)
        return [_trade_json(t) for t in chosen], ()

    # -- trading ------------------------------------------------------------------------

    async def _new_order(
        self, request: Request, params: Params, account: str
    ) -> tuple[Any, Headers]:
        params.only(
            frozenset(
                {
                    "symbol",
                    "side",
                    "type",
                    "timeInForce",
                    "quantity",
                    "quoteOrderQty",
                    "price",
                    "newClientOrderId",
                    "newOrderRespType",
                    "stopPrice",
                    "icebergQty",
                    "trailingDelta",
                    "strategyId",
                    "strategyType",
                    "selfTradePreventionMode",
                    *_SIGNED,
                }
            )
        )
        new_order, resp_type = _parse_new_order(params)
        self.engine.symbol_config(new_order.symbol)
        now = self.clock()
        counts = self.limiter.count_order(account, now)
        delay_s = max(
            self.config.order_visibility_delay_s, self.faults.take_invisibility(trio.current_time())
        )
        try:
            order = self.engine.place(
                account, new_order, now_ms=now, visible_at_ms=now + int(delay_s * 1000)
            )
        except ApiError as exc:
            raise ApiError(exc.code, exc.msg, exc.status, (*exc.headers, *counts)) from None
        self.audit.record(
            time_ms=now,
            api_key=account,
            symbol=order.symbol,
            order_id=order.order_id,
            client_order_id=order.client_order_id,
            status=order.status,
            params=params.values,
        )
        return _new_order_json(order, resp_type, now), counts

    async def _query_order(
        self, request: Request, params: Params, account: str
    ) -> tuple[Any, Headers]:
        params.only(frozenset({"symbol", "orderId", "origClientOrderId", *_SIGNED}))
        symbol, order_id, client_id = _order_ref(params)
        order = self.engine.order(
            account, symbol, order_id=order_id, client_order_id=client_id, now_ms=self.clock()
        )
        return _order_json(order), ()

    async def _cancel_order(
        self, request: Request, params: Params, account: str
    ) -> tuple[Any, Headers]:
        params.only(
            frozenset(
                {
                    "symbol",
                    "orderId",
                    "origClientOrderId",
                    "newClientOrderId",
                    "cancelRestrictions",
                    *_SIGNED,
                }
            )
        )
        symbol, order_id, client_id = _order_ref(params)
        cancel_id = params.text("newClientOrderId")
        if cancel_id is not None and not p.CLIENT_ORDER_ID_RE.fullmatch(cancel_id):
            raise p.illegal_chars("newClientOrderId", p.CLIENT_ORDER_ID_RE.pattern)
        now = self.clock()
        order = self.engine.cancel(
            account, symbol, order_id=order_id, client_order_id=client_id, now_ms=now
        )
        body = _order_json(order, cancel=True)
        body["origClientOrderId"] = order.client_order_id
        body["clientOrderId"] = cancel_id or f"cancel{order.order_id}"
        body["transactTime"] = now
        return body, ()

    async def _open_orders(
        self, request: Request, params: Params, account: str
    ) -> tuple[Any, Headers]:
        params.only(frozenset({"symbol", *_SIGNED}))
        symbol = params.text("symbol")
        if symbol is not None:
            self.engine.symbol_config(symbol)
        orders = self.engine.open_orders(account, symbol, now_ms=self.clock())
        return [_order_json(o) for o in orders], ()

    async def _my_trades(
        self, request: Request, params: Params, account: str
    ) -> tuple[Any, Headers]:
        params.only(
            frozenset({"symbol", "orderId", "startTime", "endTime", "fromId", "limit", *_SIGNED})
        )
        symbol = params.text("symbol", required=True)
        assert symbol is not None
        order_id = params.integer("orderId")
        start = params.integer("startTime")
        end = params.integer("endTime")
        from_id = params.integer("fromId")
        limit = params.limit(500, 1000)
        if from_id is not None and (start is not None or end is not None):
            raise ApiError(-1128, "Combination of optional parameters invalid.")
        trades = self.engine.account_trades(account, symbol)
        now = self.clock()
        hidden = {
            o.order_id
            for o in self.engine.all_orders(account)
            if o.symbol == symbol and not o.visible(now)
        }
        selected = [
            t
            for t in trades
            if t.order_id not in hidden
            and (order_id is None or t.order_id == order_id)
            and (from_id is None or t.id >= from_id)
            and (start is None or t.time_ms >= start)
            and (end is None or t.time_ms <= end)
        ]
        selected = (
            selected[:limit] if from_id is not None or start is not None else selected[-limit:]
        )
        return [_account_trade_json(t) for t in selected], ()

    async def _account(self, request: Request, params: Params, account: str) -> tuple[Any, Headers]:
        params.only(frozenset({"omitZeroBalances", *_SIGNED}))
        omit_zero = params.text("omitZeroBalances") == "true"
        balances = [
            {"asset": asset, "free": fmt(b.free), "locked": fmt(b.locked)}
            for asset, b in sorted(self.ledger.balances(account).items())
            if not (omit_zero and b.total == 0)
        ]
        maker_bps = int(self.config.maker_commission * 10000)
        taker_bps = int(self.config.taker_commission * 10000)
        return {
            "makerCommission": maker_bps,
            "takerCommission": taker_bps,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": fmt(self.config.maker_commission),
                "taker": fmt(self.config.taker_commission),
                "buyer": fmt(Decimal(0)),
                "seller": fmt(Decimal(0)),
            },
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": self.clock(),
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
            "uid": zlib.crc32(account.encode()) % 10**9,
        }, ()

    # -- control API -----------------------------------------------------------------------

    def _control_router(self) -> Router:
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
        return router

    async def _sim_status(self, request: Request) -> Response:
        return Response.json(
            {
                "requests": self.requests,
                "streamConnections": self.hub.connection_count,
                "streamMessages": self.hub.published,
                "auditRecords": len(self.audit),
                **self._market_state(),
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
        return {"paused": self.market.paused, "events": self.market.events, "symbols": symbols}

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
                "trades": [_trade_json(t) for t in trades],
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


# ----------------------------------------------------------------------------- helpers


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


def _parse_new_order(params: Params) -> tuple[NewOrder, str]:
    symbol = params.text("symbol", required=True)
    side = params.text("side", required=True)
    order_type = params.text("type", required=True)
    assert symbol is not None and side is not None and order_type is not None
    if side not in ("BUY", "SELL"):
        raise ApiError(p.INVALID_SIDE, "Invalid side.")
    if order_type in _UNSUPPORTED_TYPES:
        raise p.order_rejected(_UNSUPPORTED_TYPES[order_type])
    if order_type not in _ORDER_TYPES:
        raise ApiError(p.INVALID_ORDER_TYPE, "Invalid orderType.")
    for unsupported in ("stopPrice", "icebergQty", "trailingDelta"):
        if params.get(unsupported) is not None:
            raise p.not_required(unsupported)
    stp = params.text("selfTradePreventionMode")
    if stp is not None and stp != "NONE":
        raise ApiError(
            p.INVALID_PARAMETER, "Data sent for parameter 'selfTradePreventionMode' is not valid."
        )
    tif = params.text("timeInForce")
    if order_type == "LIMIT":
        if tif is None:
            raise p.mandatory("timeInForce")
        if tif not in ("GTC", "IOC", "FOK"):
            raise ApiError(p.INVALID_TIF, "Invalid timeInForce.")
    elif tif is not None:
        raise p.not_required("timeInForce")
    price = params.decimal("price", required=order_type != "MARKET")
    if order_type == "MARKET" and price is not None:
        raise p.not_required("price")
    quantity = params.decimal("quantity", required=order_type != "MARKET")
    quote_qty = params.decimal("quoteOrderQty")
    if order_type == "MARKET":
        if quantity is None and quote_qty is None:
            raise p.either_mandatory("quantity", "quoteOrderQty")
        if quantity is not None and quote_qty is not None:
            raise p.not_required("quoteOrderQty")
    elif quote_qty is not None:
        raise p.not_required("quoteOrderQty")
    client_id = params.get("newClientOrderId")
    if client_id is not None:
        if client_id == "":
            raise ApiError(-1118, "New client order ID was empty.")
        if not p.CLIENT_ORDER_ID_RE.fullmatch(client_id):
            raise p.illegal_chars("newClientOrderId", p.CLIENT_ORDER_ID_RE.pattern)
    resp_type = params.text("newOrderRespType") or (
        "FULL" if order_type in ("LIMIT", "MARKET") else "ACK"
    )
    if resp_type not in ("ACK", "RESULT", "FULL"):
        raise ApiError(
            p.INVALID_PARAMETER, "Data sent for parameter 'newOrderRespType' is not valid."
        )
    return (
        NewOrder(
            symbol=symbol,
            side=side,  # type: ignore[arg-type]  # checked above
            type=order_type,  # type: ignore[arg-type]  # checked above
            quantity=quantity,
            quote_order_qty=quote_qty,
            price=price,
            time_in_force=tif,  # type: ignore[arg-type]  # checked above
            client_order_id=client_id,
        ),
        resp_type,
    )


def _order_ref(params: Params) -> tuple[str, int | None, str | None]:
    symbol = params.text("symbol", required=True)
    assert symbol is not None
    order_id = params.integer("orderId")
    client_id = params.get("origClientOrderId")
    if client_id == "":
        raise ApiError(-1119, "Original client order ID was empty.")
    if order_id is None and client_id is None:
        raise p.either_mandatory("origClientOrderId", "orderId")
    return symbol, order_id, client_id


def _symbol_info(s: Any) -> dict[str, Any]:
    return {
        "symbol": s.symbol,
        "status": "TRADING",
        "baseAsset": s.base_asset,
        "baseAssetPrecision": p.WIRE_DECIMALS,
        "quoteAsset": s.quote_asset,
        "quotePrecision": p.WIRE_DECIMALS,
        "quoteAssetPrecision": p.WIRE_DECIMALS,
        "baseCommissionPrecision": p.WIRE_DECIMALS,
        "quoteCommissionPrecision": p.WIRE_DECIMALS,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
        "icebergAllowed": False,
        "ocoAllowed": False,
        "otoAllowed": False,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": fmt(s.min_price),
                "maxPrice": fmt(s.max_price),
                "tickSize": fmt(s.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": fmt(s.min_qty),
                "maxQty": fmt(s.max_qty),
                "stepSize": fmt(s.step_size),
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": fmt(s.min_notional),
                "applyMinToMarket": s.apply_min_to_market,
                "maxNotional": fmt(s.max_notional),
                "applyMaxToMarket": s.apply_max_to_market,
                "avgPriceMins": s.avg_price_mins,
            },
            _percent_price_by_side(s.percent_price_by_side),
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "NONE",
        "allowedSelfTradePreventionModes": ["NONE"],
    }


def _percent_price_by_side(band: PercentPriceBySideConfig) -> dict[str, Any]:
    """The filter as Binance writes it: plain decimal strings, a disabled bound as "0"."""
    return {
        "filterType": "PERCENT_PRICE_BY_SIDE",
        "bidMultiplierUp": f"{band.bid_multiplier_up:f}",
        "bidMultiplierDown": f"{band.bid_multiplier_down:f}",
        "askMultiplierUp": f"{band.ask_multiplier_up:f}",
        "askMultiplierDown": f"{band.ask_multiplier_down:f}",
        "avgPriceMins": band.avg_price_mins,
    }


def _trade_json(t: Trade) -> dict[str, Any]:
    return {
        "id": t.id,
        "price": fmt(t.price),
        "qty": fmt(t.qty),
        "quoteQty": fmt(t.quote_qty),
        "time": t.time_ms,
        "isBuyerMaker": t.buyer_is_maker,
        "isBestMatch": True,
    }


def _account_trade_json(t: AccountTrade) -> dict[str, Any]:
    return {
        "symbol": t.symbol,
        "id": t.id,
        "orderId": t.order_id,
        "orderListId": -1,
        "price": fmt(t.price),
        "qty": fmt(t.qty),
        "quoteQty": fmt(t.quote_qty),
        "commission": fmt(t.commission),
        "commissionAsset": t.commission_asset,
        "time": t.time_ms,
        "isBuyer": t.is_buyer,
        "isMaker": t.is_maker,
        "isBestMatch": True,
    }


def _order_json(o: Order, *, cancel: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "symbol": o.symbol,
        "orderId": o.order_id,
        "orderListId": -1,
        "clientOrderId": o.client_order_id,
        "price": fmt(o.price),
        "origQty": fmt(o.orig_qty),
        "executedQty": fmt(o.executed_qty),
        "cummulativeQuoteQty": fmt(o.cumm_quote_qty),
        "status": o.status,
        "timeInForce": o.time_in_force,
        "type": o.type,
        "side": o.side,
    }
    if cancel:
        body["origQuoteOrderQty"] = fmt(o.orig_quote_order_qty)
        body["selfTradePreventionMode"] = "NONE"
        return body
    body.update(
        {
            "stopPrice": fmt(Decimal(0)),
            "icebergQty": fmt(Decimal(0)),
            "time": o.time_ms,
            "updateTime": o.update_time_ms,
            "isWorking": True,
            "workingTime": o.time_ms,
            "origQuoteOrderQty": fmt(o.orig_quote_order_qty),
            "selfTradePreventionMode": "NONE",
        }
    )
    return body


def _new_order_json(o: Order, resp_type: str, now_ms: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "symbol": o.symbol,
        "orderId": o.order_id,
        "orderListId": -1,
        "clientOrderId": o.client_order_id,
        "transactTime": now_ms,
    }
    if resp_type == "ACK":
        return body
    body.update(
        {
            "price": fmt(o.price),
            "origQty": fmt(o.orig_qty),
            "executedQty": fmt(o.executed_qty),
            "origQuoteOrderQty": fmt(o.orig_quote_order_qty),
            "cummulativeQuoteQty": fmt(o.cumm_quote_qty),
            "status": o.status,
            "timeInForce": o.time_in_force,
            "type": o.type,
            "side": o.side,
            "workingTime": o.time_ms,
            "selfTradePreventionMode": "NONE",
        }
    )
    if resp_type == "FULL":
        body["fills"] = [
            {
                "price": fmt(f.price),
                "qty": fmt(f.qty),
                "commission": fmt(f.commission),
                "commissionAsset": f.commission_asset,
                "tradeId": f.trade_id,
            }
            for f in o.fills
        ]
    return body
