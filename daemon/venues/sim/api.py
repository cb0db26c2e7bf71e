"""The simulator's API, transport-neutral: what each request may do and what it answers.

Everything between "a request arrived" and "here is the answer" that does not
depend on how the request travelled lives here, so that REST
(:mod:`daemon.venues.sim.rest`) and any other transport serve the same
operations with the same checks, error codes and limits:

* the operations (:class:`Operation`), named as Binance's WebSocket API names
  them (``order.place``, ``order.cancel``, ``order.status``,
  ``openOrders.status``, …), each with its REST route and its security type;
* request weight (:meth:`SimApi.weight`, :meth:`SimApi.admit`: 429/418 and the
  ``X-MBX-USED-WEIGHT-*`` headers) and, for new orders, the ORDERS count
  (``-1015``, ``X-MBX-ORDER-COUNT-*``);
* authentication of SIGNED operations (:meth:`SimApi.authenticate`): the API
  key (``-2014``/``-2015``), the HMAC-SHA256 signature over what the transport
  says was signed (``-1022``), ``timestamp``/``recvWindow`` (``-1021``);
* the handlers: parameters (:mod:`daemon.venues.sim.params`), the matching
  engine, the audit log, the answer's JSON shape
  (:mod:`daemon.venues.sim.answers`).

A handler returns an :class:`Answer` (body and headers) or raises
:class:`~daemon.venues.sim.protocol.ApiError` (``code``, ``msg``, HTTP
``status``, headers); the transport encodes either.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any, Literal

import attrs
import trio

from daemon.decode import DecodeError, json_loads
from daemon.venues.sim import auth
from daemon.venues.sim import protocol as p
from daemon.venues.sim.accounts import Ledger
from daemon.venues.sim.answers import (
    account_trade_json,
    new_order_json,
    order_json,
    symbol_info,
    trade_json,
)
from daemon.venues.sim.audit import AuditLog
from daemon.venues.sim.config import SimConfig
from daemon.venues.sim.faults import FaultInjector
from daemon.venues.sim.limits import RateLimiter
from daemon.venues.sim.market import TradeLog, WallClock
from daemon.venues.sim.matching import MatchingEngine
from daemon.venues.sim.orderchanges import cancel_request_id
from daemon.venues.sim.params import SIGNED, Params, order_ref, parse_new_order
from daemon.venues.sim.protocol import ApiError, fmt

__all__ = ["Answer", "Headers", "Lookup", "Operation", "SimApi"]

Headers = tuple[tuple[str, str], ...]
#: Reads one parameter as the request sent it (``None`` when absent), for weights.
Lookup = Callable[[str], str | None]
#: Binance's security type, as ``rest-api.md`` lists it today: ``NONE`` (public
#: market data: no key, any key header ignored) or ``SIGNED`` (TRADE and
#: USER_DATA: key and signature). ``historicalTrades`` was MARKET_DATA (key
#: required) until Binance made it NONE in 2023.
Security = Literal["NONE", "SIGNED"]


@attrs.frozen
class Answer:
    """A successful answer: the JSON-able body and the headers that go with it."""

    body: Any
    #: ``X-MBX-ORDER-COUNT-*`` of a new order (the weight headers are the transport's).
    headers: Headers = ()


@attrs.frozen
class Operation:
    """One thing a client may ask, whatever the transport."""

    #: Binance's WebSocket API method name (``"order.place"``).
    name: str
    #: ``(method, path)`` of the REST endpoint; also the key of its weight in
    #: :data:`daemon.venues.sim.protocol.WEIGHTS`.
    route: tuple[str, str]
    handler: Callable[[Params, str], Awaitable[Answer]]
    security: Security


class SimApi:
    """The operations of one simulator, with their admission and authentication."""

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
        clock: WallClock,
    ) -> None:
        self.ledger = ledger
        self.limiter = limiter
        self.clock = clock
        #: Called after every call, before anything is awaited: the state file's
        #: write (:meth:`~daemon.venues.sim.persist.StateStore.commit`), or nothing.
        self.commit: Callable[[], None] = _no_commit
        market = MarketData(
            config=config,
            engine=engine,
            trade_logs=trade_logs,
            limiter=limiter,
            clock=clock,
        )
        trading = Trading(
            config=config,
            engine=engine,
            ledger=ledger,
            limiter=limiter,
            faults=faults,
            audit=audit,
            clock=clock,
        )
        operations = (
            Operation("ping", ("GET", "/api/v3/ping"), market.ping, "NONE"),
            Operation("time", ("GET", "/api/v3/time"), market.server_time, "NONE"),
            Operation(
                "exchangeInfo",
                ("GET", "/api/v3/exchangeInfo"),
                market.exchange_info,
                "NONE",
            ),
            Operation("depth", ("GET", "/api/v3/depth"), market.depth, "NONE"),
            Operation("trades.recent", ("GET", "/api/v3/trades"), market.trades, "NONE"),
            Operation(
                "trades.historical",
                ("GET", "/api/v3/historicalTrades"),
                market.historical_trades,
                "NONE",
            ),
            Operation("order.place", ("POST", "/api/v3/order"), trading.new_order, "SIGNED"),
            Operation("order.status", ("GET", "/api/v3/order"), trading.query_order, "SIGNED"),
            Operation(
                "order.cancel",
                ("DELETE", "/api/v3/order"),
                trading.cancel_order,
                "SIGNED",
            ),
            Operation(
                "openOrders.status",
                ("GET", "/api/v3/openOrders"),
                trading.open_orders,
                "SIGNED",
            ),
            Operation("myTrades", ("GET", "/api/v3/myTrades"), trading.my_trades, "SIGNED"),
            Operation("account.status", ("GET", "/api/v3/account"), trading.account, "SIGNED"),
        )
        #: The operations by name.
        self.operations: dict[str, Operation] = {op.name: op for op in operations}

    # -- admission ----------------------------------------------------------------

    def weight(self, op: Operation, get: Lookup) -> int:
        """The request weight of one call of ``op``; ``get`` reads the parameters it depends on."""
        if op.name == "depth":
            raw = get("limit")
            limit = int(raw) if raw and raw.isdigit() else 100
            return p.depth_weight(min(limit, p.MAX_DEPTH_LIMIT))
        if op.name == "openOrders.status":
            with_symbol, without = p.OPEN_ORDERS_WEIGHT
            return with_symbol if get("symbol") else without
        if op.name == "myTrades":
            without, with_order = p.MY_TRADES_WEIGHT
            return with_order if get("orderId") else without
        return p.WEIGHTS.get(op.route, 1)

    def admit(self, ip: str, op: Operation, get: Lookup) -> Headers:
        """Charge one call of ``op`` to ``ip``; returns the ``X-MBX-USED-WEIGHT-*`` headers.

        Raises:
            ApiError: 429 over a limit (or sent while told to wait), 418 banned.
        """
        now = self.clock()
        return self.limiter.admit(ip, self.weight(op, get), now)

    def authenticate(
        self,
        security: Security,
        api_key: str | None,
        params: Params,
        payloads: Callable[[], list[bytes]],
    ) -> str:
        """The account a call acts for (``""`` for security type NONE).

        ``payloads`` gives the candidate byte strings the client may have
        signed (REST: query string plus body, without the signature); it is
        only called once the key is known and a signature was sent.

        Raises:
            ApiError: -2014/-2015 (HTTP 401) bad or unknown key, -1102 no
                signature or timestamp, -1022 bad signature, -1021 outside
                ``recvWindow``.
        """
        if security == "NONE":
            return ""
        key = auth.check_api_key(api_key, self.ledger)
        signature = params.get("signature")
        if not signature:
            raise p.mandatory("signature")
        secret = self.ledger.secret(key)
        assert secret is not None
        if not auth.verify_signature(secret, payloads(), signature):
            raise ApiError(p.INVALID_SIGNATURE, p.MSG_BAD_SIGNATURE)
        auth.check_timestamp(params.get("timestamp"), params.get("recvWindow"), self.clock())
        return key

    async def call(
        self,
        op: Operation,
        params: Params,
        *,
        api_key: str | None,
        payloads: Callable[[], list[bytes]],
    ) -> Answer:
        """Authenticate (see :meth:`authenticate`) and run one admitted call of ``op``.

        Raises:
            ApiError: the answer is an error.
        """
        try:
            account = self.authenticate(op.security, api_key, params, payloads)
            return await op.handler(params, account)  # handlers never checkpoint
        finally:
            self.commit()


def _no_commit() -> None:
    pass


class MarketData:
    """The public market-data operations (security type NONE)."""

    def __init__(
        self,
        *,
        config: SimConfig,
        engine: MatchingEngine,
        trade_logs: Mapping[str, TradeLog],
        limiter: RateLimiter,
        clock: WallClock,
    ) -> None:
        self._config = config
        self._engine = engine
        self._trade_logs = trade_logs
        self._limiter = limiter
        self._clock = clock

    async def ping(self, params: Params, account: str) -> Answer:
        """``ping`` (``GET /api/v3/ping``): ``{}``."""
        params.only(frozenset())
        return Answer({})

    async def server_time(self, params: Params, account: str) -> Answer:
        """``time`` (``GET /api/v3/time``): the server's wall clock."""
        params.only(frozenset())
        return Answer({"serverTime": self._clock()})

    async def exchange_info(self, params: Params, account: str) -> Answer:
        """``exchangeInfo``: rate limits and symbols (all, ``symbol`` or ``symbols``)."""
        params.only(
            frozenset(
                {
                    "symbol",
                    "symbols",
                    "permissions",
                    "showPermissionSets",
                    "symbolStatus",
                }
            )
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
        configs = list(self._config.symbols)
        if wanted is not None:
            configs = [self._engine.symbol_config(name) for name in wanted]
        return Answer(
            {
                "timezone": "UTC",
                "serverTime": self._clock(),
                "rateLimits": self._limiter.exchange_info(),
                "exchangeFilters": [],
                "symbols": [symbol_info(s) for s in configs],
            }
        )

    async def depth(self, params: Params, account: str) -> Answer:
        """``depth``: the top ``limit`` levels of a book and its ``lastUpdateId``."""
        params.only(frozenset({"symbol", "limit"}))
        symbol = params.text("symbol", required=True)
        assert symbol is not None
        limit = params.integer("limit")
        limit = 100 if limit is None else limit
        if limit < 1:
            raise ApiError(p.INVALID_PARAMETER, "Data sent for parameter 'limit' is not valid.")
        last_update_id, bids, asks = self._engine.depth(symbol, min(limit, p.MAX_DEPTH_LIMIT))
        return Answer(
            {
                "lastUpdateId": last_update_id,
                "bids": [[fmt(px), fmt(q)] for px, q in bids],
                "asks": [[fmt(px), fmt(q)] for px, q in asks],
            }
        )

    async def trades(self, params: Params, account: str) -> Answer:
        """``trades.recent`` (``GET /api/v3/trades``): the latest trades."""
        params.only(frozenset({"symbol", "limit"}))
        symbol = params.text("symbol", required=True)
        assert symbol is not None
        self._engine.symbol_config(symbol)
        limit = params.limit(500, 1000)
        return Answer([trade_json(t) for t in self._trade_logs[symbol].recent(limit)])

    async def historical_trades(self, params: Params, account: str) -> Answer:
        """``trades.historical`` (``GET /api/v3/historicalTrades``): trades from ``fromId``."""
        params.only(frozenset({"symbol", "limit", "fromId"}))
        symbol = params.text("symbol", required=True)
        assert symbol is not None
        self._engine.symbol_config(symbol)
        limit = params.limit(500, 1000)
        from_id = params.integer("fromId")
        trades = self._trade_logs[symbol]
        chosen = trades.recent(limit) if from_id is None else trades.from_id(from_id, limit)
        return Answer([trade_json(t) for t in chosen])


class Trading:
    """The account's operations (SIGNED): orders, trades, balances."""

    def __init__(
        self,
        *,
        config: SimConfig,
        engine: MatchingEngine,
        ledger: Ledger,
        limiter: RateLimiter,
        faults: FaultInjector,
        audit: AuditLog,
        clock: WallClock,
    ) -> None:
        self._config = config
        self._engine = engine
        self._ledger = ledger
        self._limiter = limiter
        self._faults = faults
        self._audit = audit
        self._clock = clock

    def _visibility_now(self) -> int:
        """The time order visibility runs on: the venue's own clock, not its skewed one.

        An order stays invisible to queries for the visibility delay after it was
        created, measured on the unskewed base of the wall clock (a
        :class:`~daemon.venues.sim.clock.SkewedClock`): moving the clock back
        (``POST /sim/clock``) must not hide the orders created before, as a real
        venue's database does not forget an order when its clock is corrected.
        """
        base = getattr(self._clock, "base", None)
        return int(base()) if callable(base) else self._clock()

    async def new_order(self, params: Params, account: str) -> Answer:
        """``order.place`` (``POST /api/v3/order``): counted against ORDERS, matched, audited."""
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
                    *SIGNED,
                }
            )
        )
        new_order, resp_type = parse_new_order(params)
        self._engine.symbol_config(new_order.symbol)
        now = self._clock()
        counts = self._limiter.count_order(account, now)
        delay_s = max(
            self._config.order_visibility_delay_s,
            self._faults.take_invisibility(trio.current_time()),
        )
        try:
            order = self._engine.place(
                account,
                new_order,
                now_ms=now,
                visible_at_ms=self._visibility_now() + int(delay_s * 1000),
            )
        except ApiError as exc:
            raise ApiError(exc.code, exc.msg, exc.status, (*exc.headers, *counts)) from None
        self._audit.record(
            time_ms=now,
            api_key=account,
            symbol=order.symbol,
            order_id=order.order_id,
            client_order_id=order.client_order_id,
            status=order.status,
            params=params.values,
            transport=params.transport,
        )
        return Answer(new_order_json(order, resp_type, now), counts)

    async def query_order(self, params: Params, account: str) -> Answer:
        """``order.status`` (``GET /api/v3/order``): one order, by id or client id."""
        params.only(frozenset({"symbol", "orderId", "origClientOrderId", *SIGNED}))
        symbol, order_id, client_id = order_ref(params)
        order = self._engine.order(
            account,
            symbol,
            order_id=order_id,
            client_order_id=client_id,
            now_ms=self._visibility_now(),
        )
        return Answer(order_json(order))

    async def cancel_order(self, params: Params, account: str) -> Answer:
        """``order.cancel`` (``DELETE /api/v3/order``): cancel one open order."""
        params.only(
            frozenset(
                {
                    "symbol",
                    "orderId",
                    "origClientOrderId",
                    "newClientOrderId",
                    "cancelRestrictions",
                    *SIGNED,
                }
            )
        )
        symbol, order_id, client_id = order_ref(params)
        cancel_id = params.text("newClientOrderId")
        if cancel_id is not None and not p.CLIENT_ORDER_ID_RE.fullmatch(cancel_id):
            raise p.illegal_chars("newClientOrderId", p.CLIENT_ORDER_ID_RE.pattern)
        now = self._clock()
        order = self._engine.cancel(
            account,
            symbol,
            order_id=order_id,
            client_order_id=client_id,
            now_ms=now,
            cancel_client_order_id=cancel_id,
        )
        body = order_json(order, cancel=True)
        body["origClientOrderId"] = order.client_order_id
        body["clientOrderId"] = cancel_request_id(order, cancel_id)
        body["transactTime"] = now
        return Answer(body)

    async def open_orders(self, params: Params, account: str) -> Answer:
        """``openOrders.status`` (``GET /api/v3/openOrders``): open orders, oldest first."""
        params.only(frozenset({"symbol", *SIGNED}))
        symbol = params.text("symbol")
        if symbol is not None:
            self._engine.symbol_config(symbol)
        orders = self._engine.open_orders(account, symbol, now_ms=self._visibility_now())
        return Answer([order_json(o) for o in orders])

    async def my_trades(self, params: Params, account: str) -> Answer:
        """``myTrades``: the account's trades on one symbol, filtered."""
        params.only(
            frozenset(
                {
                    "symbol",
                    "orderId",
                    "startTime",
                    "endTime",
                    "fromId",
                    "limit",
                    *SIGNED,
                }
            )
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
        trades = self._engine.account_trades(account, symbol)
        now = self._visibility_now()
        hidden = {
            o.order_id
            for o in self._engine.all_orders(account)
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
        return Answer([account_trade_json(t) for t in selected])

    async def account(self, params: Params, account: str) -> Answer:
        """``account.status`` (``GET /api/v3/account``): balances and commission rates."""
        params.only(frozenset({"omitZeroBalances", *SIGNED}))
        omit_zero = params.text("omitZeroBalances") == "true"
        balances = [
            {"asset": asset, "free": fmt(b.free), "locked": fmt(b.locked)}
            for asset, b in sorted(self._ledger.balances(account).items())
            if not (omit_zero and b.total == 0)
        ]
        maker_bps = int(self._config.maker_commission * 10000)
        taker_bps = int(self._config.taker_commission * 10000)
        return Answer(
            {
                "makerCommission": maker_bps,
                "takerCommission": taker_bps,
                "buyerCommission": 0,
                "sellerCommission": 0,
                "commissionRates": {
                    "maker": fmt(self._config.maker_commission),
                    "taker": fmt(self._config.taker_commission),
                    "buyer": fmt(Decimal(0)),
                    "seller": fmt(Decimal(0)),
                },
                "canTrade": True,
                "canWithdraw": True,
                "canDeposit": True,
                "brokered": False,
                "requireSelfTradePrevention": False,
                "preventSor": False,
                "updateTime": self._clock(),
                "accountType": "SPOT",
                "balances": balances,
                "permissions": ["SPOT"],
                "uid": zlib.crc32(account.encode()) % 10**9,
            }
        )
