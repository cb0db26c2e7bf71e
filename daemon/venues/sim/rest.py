"""The REST side: Binance's ``/api/v3`` paths over HTTP, and the ``/sim`` control API.

A thin HTTP layer over the transport-neutral API (:mod:`daemon.venues.sim.api`):
it routes ``(method, path)`` to an :class:`~daemon.venues.sim.api.Operation`,
reads the parameters from the request, injects the REST faults and encodes
answers and errors. Every ``/api/v3`` request goes through the same pipeline,
in Binance's order:

1. request weight charged to the client IP (``429``/``418`` when over; every
   answer carries ``X-MBX-USED-WEIGHT-*``); the weight reads the query string;
2. REST faults of phase ``before`` (not processed);
3. parameters (query string, plus the form body for POST/DELETE; the query
   wins when both have one), authentication for SIGNED endpoints (TRADE and
   USER_DATA in Binance's docs; every other endpoint is security type NONE: no
   key needed, an ``X-MBX-APIKEY`` header is ignored); the signed payload is
   the query string followed by the body;
4. the endpoint itself (errors are ``{"code": …, "msg": …}`` with Binance's
   HTTP status);
5. REST faults of phase ``after`` (processed: an order placed here exists
   even though the client sees a 5xx, a stall or ``-1007``).

``/sim/...`` is the control API (:mod:`daemon.venues.sim.control`), uncharged
and unauthenticated: it listens on loopback, for tests and operators.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Mapping
from typing import Any, Final

import trio

from daemon.http import Request, Response
from daemon.venues.sim import auth
from daemon.venues.sim import protocol as p
from daemon.venues.sim.accounts import Ledger
from daemon.venues.sim.api import Headers, Operation, SimApi
from daemon.venues.sim.audit import AuditLog
from daemon.venues.sim.benchfeed import BenchFeed
from daemon.venues.sim.config import SimConfig
from daemon.venues.sim.control import ControlApi
from daemon.venues.sim.faults import FaultInjector, FaultSpec
from daemon.venues.sim.limits import RateLimiter
from daemon.venues.sim.market import MarketGenerator, TradeLog, WallClock
from daemon.venues.sim.matching import MatchingEngine
from daemon.venues.sim.params import Params
from daemon.venues.sim.protocol import ApiError
from daemon.venues.sim.streams import StreamHub

__all__ = ["RestApi"]

log = logging.getLogger("tradingd.sim.rest")

JSON_TYPE: Final = "application/json;charset=UTF-8"


def _json(obj: Any, status: int = 200, headers: Headers = ()) -> Response:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return Response(status, body, (("Content-Type", JSON_TYPE), *headers))


def _error(exc: ApiError, headers: Headers = ()) -> Response:
    return _json(exc.body(), exc.status, (*exc.headers, *headers))


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
        bench: BenchFeed | None = None,
    ) -> None:
        self.api = SimApi(
            config=config,
            engine=engine,
            ledger=ledger,
            trade_logs=trade_logs,
            limiter=limiter,
            faults=faults,
            audit=audit,
            clock=clock,
        )
        self.limiter = limiter
        self.faults = faults
        self.clock = clock
        self.requests = 0
        #: ``(method, path)`` → the operation served there.
        self._endpoints: dict[tuple[str, str], Operation] = {
            op.route: op for op in self.api.operations.values()
        }
        self.control = ControlApi(
            engine=engine,
            ledger=ledger,
            trade_logs=trade_logs,
            faults=faults,
            audit=audit,
            market=market,
            hub=hub,
            clock=clock,
            requests=lambda: self.requests,
            bench=bench,
        )
        self._control = self.control.router()

    # -- pipeline -----------------------------------------------------------------

    async def __call__(self, request: Request) -> Response:
        if request.path.startswith("/sim/"):
            try:
                return await self._control(request)
            finally:
                self.api.commit()  # a control request may have moved the market
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
        try:
            usage = self.api.admit(ip, endpoint, request.query_value)
        except ApiError as exc:
            return _error(exc)
        fault = self.faults.take_rest("before", method, path, trio.current_time())
        if fault is not None:
            return await self._fault_before(fault, ip, usage)
        try:
            params, duplicate = _merge_params(request)
            if duplicate:
                raise ApiError(p.TOO_MANY_PARAMETERS, "Duplicate values for a parameter detected.")
            answer = await self.api.call(
                endpoint,
                params,
                api_key=request.headers.get("x-mbx-apikey"),
                payloads=lambda: auth.signature_payloads(
                    request.query, request.body, request.raw_query
                ),
            )
            response = _json(answer.body, 200, (*usage, *answer.headers))
        except ApiError as exc:
            response = _error(exc, usage)
        fault = self.faults.take_rest("after", method, path, trio.current_time())
        if fault is not None:
            return await self._fault_after(fault, response, usage)
        return response

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
        log.info(
            "fault %s after processing (real answer was %d)",
            fault.kind,
            response.status,
        )
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
