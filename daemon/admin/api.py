"""The admin API's routes: health, status, metrics, the OpenAPI document, and the order pipeline.

Every route is declared once, in :func:`operations` (an
:class:`~daemon.admin.spec.Operation` each): the router is built from the
declarations and so is ``GET /openapi.json``, so the document cannot drift
from the routes. Query parameters are checked against the declaration
(unknown, repeated or malformed: ``400`` listing every problem).

``/health``, ``/status`` (a summary), ``/metrics`` and ``/openapi.json`` need
no token and only read in-memory state, so a scrape never blocks the event
loop and never waits on the store or a venue. ``GET /status/full`` (the whole
document, with positions, switches and venues) and the order routes need the
bearer token from ``[admin] token`` (:meth:`AdminAPI.require_token`) *even on
loopback*: order data tells what an account holds and intends, and entry and
the trading switches change state.

The order routes are the HTTP face of :class:`~daemon.orders.service.OrdersService`
(the daemon's ``orders``; ``None`` without ``[accounts]``, answered with 503).

=========================================  ===================================================
``GET /health``                            200 healthy/degraded and running, else 503 (reasons)
``GET /status``                            summary: state, health, supervision, lag, queues
``GET /status/full``                       the whole status document (token)
``GET /metrics``                           Prometheus text
``GET /openapi.json``                      this API as an OpenAPI 3.1 document
``POST /orders``                           submit an intent: 202 new, 200 same ``message_id``;
                                           400 every problem, 409 conflict, 422 risk reasons,
                                           503 + ``Retry-After`` (saturated, unavailable), 413
``GET /orders?account=&state=&limit=``     newest first; ``state`` repeatable or comma-separated,
                                           ``open`` = every non-terminal state
``GET /orders/{client_order_id}``          the intent, its state history and fills; 404 unknown
``POST /orders/{client_order_id}/cancel``  202 cancel requested; 200 already terminal (unchanged)
``GET /positions?account=``                signed positions per account and symbol, from fills
``GET /trading``                           the switches and each account's effective state
``POST /trading/halt|resume|reduce-only``  optional body ``{"account", "reason"}`` (none: all)
=========================================  ===================================================

``/health``, ``/status``, ``/status/full`` and ``POST /trading/*`` are
*priority* routes: when the connection pool is full they are still served from
a reserve of connections (:func:`daemon.admin.server.serve_admin_http`).

Errors are ``{"error": "..."}`` like every other error of the server, with
the extra fields :func:`daemon.orders.control.error_answer` documents
(``problems``, ``reasons``, ``client_order_id``/``fields``, ``retry_after_s``).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from daemon import __version__
from daemon.admin.spec import (
    Operation,
    Param,
    int_param,
    openapi_document,
    query_params,
    text_param,
)
from daemon.health import HealthLevel, HealthModel
from daemon.http import HTTPError, Request, Response, Router, error_response
from daemon.metrics import CONTENT_TYPE, Registry
from daemon.orders.control import (
    MAX_LIST_LIMIT,
    MAX_REASON_CHARS,
    NO_ACCOUNTS,
    TRADING_ACTIONS,
    cancel_answer,
    error_answer,
    orders_view,
    parse_client_order_id,
    parse_limit,
    parse_states,
    parse_switch,
    positions_view,
    set_trading,
    trading_view,
)
from daemon.secrets import Secret

if TYPE_CHECKING:
    from daemon.orders.service import OrdersService

__all__ = ["MAX_ORDER_BODY_BYTES", "AdminAPI", "AdminHost", "operations"]

log = logging.getLogger("tradingd.admin")

#: Largest body an order route accepts (an intent is a few hundred bytes); more is 413.
MAX_ORDER_BODY_BYTES: Final = 64 * 1024


class AdminHost(Protocol):
    """What the admin API reads from the daemon (:class:`daemon.app.Daemon` is one)."""

    @property
    def state(self) -> str: ...

    @property
    def health(self) -> HealthModel: ...

    @property
    def metrics(self) -> Registry: ...

    @property
    def admin_token(self) -> Secret | None: ...

    @property
    def orders(self) -> OrdersService | None: ...

    def status(self) -> dict[str, Any]:
        """The whole status document (guarded: positions, switches, venues)."""
        ...

    def status_summary(self) -> dict[str, Any]:
        """What anyone on the host may see: health, lifecycle, supervision, lag, queues."""
        ...


_OrdersHandler = Callable[[Request, "OrdersService"], Awaitable[Response]]

_ACCOUNT = text_param("account", "Only this account (a name from [accounts]).")
_JSON: Final = {"type": "object"}
_ORDER_ANSWERS: Final = {
    404: "No such order.",
    409: "Conflicts with a stored intent of the same message_id or id.",
    422: "Refused by risk limits; the reasons are listed.",
}
_INTENT_SCHEMA: Final = {
    "type": "object",
    "description": "An order intent; every problem of an invalid one is listed in the 400.",
    "required": ["message_id", "account", "symbol", "side", "type", "quantity"],
    "properties": {
        "message_id": {"type": "string"},
        "account": {"type": "string"},
        "symbol": {"type": "string"},
        "side": {"type": "string", "enum": ["BUY", "SELL"]},
        "type": {"type": "string"},
        "quantity": {"type": "string", "description": "A decimal, as a string."},
        "price": {"type": ["string", "null"], "description": "A decimal, as a string."},
        "time_in_force": {"type": ["string", "null"], "enum": ["GTC", "IOC", "FOK", None]},
    },
}
_SWITCH_SCHEMA: Final = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "account": {"type": "string", "minLength": 1, "description": "Only this account."},
        "reason": {"type": "string", "maxLength": MAX_REASON_CHARS},
    },
}


def operations() -> tuple[Operation, ...]:
    """Every route of the admin API, declared once (router and OpenAPI document)."""
    coid = Param(
        "client_order_id",
        "path",
        "The order's client order id.",
        max_chars=36,
        pattern="^[A-Za-z0-9_-]{1,36}$",  # CLIENT_ORDER_ID_PATTERN, as ECMA-262
    )
    ops = [
        Operation(
            "GET",
            "/health",
            "health",
            "Health: 200 while running and healthy or degraded, else 503, with reasons.",
            {200: "Healthy or degraded, and running.", 503: "Unhealthy, or not running."},
            priority=True,
            schemas={503: _JSON},
        ),
        Operation(
            "GET",
            "/status",
            "status",
            "Status summary: lifecycle, health, supervision, loop lag, queues (no token).",
            {200: "The summary."},
            priority=True,
        ),
        Operation(
            "GET",
            "/status/full",
            "status_full",
            "The whole status document: also orders, positions, switches, venues, store.",
            {200: "The whole document; URLs have their credentials redacted."},
            token=True,
            priority=True,
        ),
        Operation(
            "GET",
            "/metrics",
            "metrics",
            "Prometheus metrics (text exposition format).",
            {200: "The metrics."},
            content_type="text/plain",
        ),
        Operation(
            "GET",
            "/openapi.json",
            "openapi",
            "This API as an OpenAPI 3.1 document.",
            {200: "The document."},
        ),
        Operation(
            "POST",
            "/orders",
            "submit_order",
            "Submit an order intent (answered once it is durably committed).",
            {
                202: "A new intent, committed.",
                200: "An intent with this message_id was submitted before; it is returned.",
                **_ORDER_ANSWERS,
            },
            token=True,
            body=_INTENT_SCHEMA,
            body_required=True,
        ),
        Operation(
            "GET",
            "/orders",
            "list_orders",
            "Orders, newest first.",
            {200: "The orders."},
            token=True,
            params=(
                _ACCOUNT,
                text_param(
                    "state",
                    "Order states (repeatable, or comma-separated); 'open': every "
                    "non-terminal state.",
                    max_chars=256,
                    repeatable=True,
                ),
                int_param("limit", "Most orders returned.", minimum=1, maximum=MAX_LIST_LIMIT),
            ),
        ),
        Operation(
            "GET",
            "/orders/{client_order_id}",
            "get_order",
            "One order: the intent, its state history and its fills.",
            {200: "The order.", 404: "No such order."},
            token=True,
            params=(coid,),
        ),
        Operation(
            "POST",
            "/orders/{client_order_id}/cancel",
            "cancel_order",
            "Request the cancel of an order (idempotent).",
            {
                202: "The cancel is durably requested.",
                200: "The order is already finished; returned unchanged.",
                404: "No such order.",
            },
            token=True,
            params=(coid,),
        ),
        Operation(
            "GET",
            "/positions",
            "positions",
            "Signed positions per account and symbol, from fills.",
            {200: "The positions."},
            token=True,
            params=(_ACCOUNT,),
        ),
        Operation(
            "GET",
            "/trading",
            "trading",
            "The trading switches and each account's effective state.",
            {200: "The switches."},
            token=True,
        ),
    ]
    for action in TRADING_ACTIONS:
        ops.append(
            Operation(
                "POST",
                f"/trading/{action}",
                f"trading_{action.replace('-', '_')}",
                f"Set trading to {action} for one account or all (an operator switch).",
                {200: "The switches after the change."},
                token=True,
                body=_SWITCH_SCHEMA,
                priority=True,
            )
        )
    return tuple(ops)


class AdminAPI:
    """Routes of the admin API for one daemon."""

    def __init__(self, daemon: AdminHost) -> None:
        self.daemon = daemon
        self.router = Router()
        self.operations = operations()
        handlers: dict[str, Callable[[Request], Awaitable[Response]]] = {
            "health": self.health,
            "status": self.status,
            "status_full": self.status_full,
            "metrics": self.metrics,
            "openapi": self.openapi,
        }
        orders = self._orders_route
        order_handlers: dict[str, _OrdersHandler] = {
            "submit_order": self.submit_order,
            "list_orders": self.list_orders,
            "get_order": self.get_order,
            "cancel_order": self.cancel_order,
            "positions": self.positions,
            "trading": self.trading,
        }
        for action in TRADING_ACTIONS:
            order_handlers[f"trading_{action.replace('-', '_')}"] = self._switch(action)
        for op in self.operations:
            if op.operation_id in order_handlers:
                handler = orders(order_handlers[op.operation_id])
            else:
                handler = handlers[op.operation_id]
            self.router.add(op.method, op.path, self._checked(op, handler))
        self._priority = {(op.method, op.path) for op in self.operations if op.priority}
        self._document: dict[str, Any] | None = None

    def is_priority(self, method: str, path: str) -> bool:
        """Whether ``method path`` is served from the reserve when connections run short."""
        return (("GET" if method == "HEAD" else method), path) in self._priority

    def _checked(
        self, op: Operation, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """The token (first: an unauthenticated client learns nothing), then the query."""

        async def route(request: Request) -> Response:
            if op.token:
                self.require_token(request)
            query_params(request, op)
            return await handler(request)

        return route

    async def handle(self, request: Request) -> Response:
        return await self.router.dispatch(request)

    async def health(self, request: Request) -> Response:
        """200 while healthy or degraded and running; 503 otherwise (JSON reasons)."""
        report = self.daemon.health.evaluate()
        body: dict[str, Any] = {"state": self.daemon.state, **report.to_dict()}
        ok = report.level is not HealthLevel.UNHEALTHY and self.daemon.state == "running"
        return Response.json(body, status=200 if ok else 503)

    async def status(self, request: Request) -> Response:
        """The public summary (no positions, switches, venues or URLs)."""
        return Response.json(self.daemon.status_summary())

    async def status_full(self, request: Request) -> Response:
        """The whole status document (behind the token)."""
        return Response.json(self.daemon.status())

    async def metrics(self, request: Request) -> Response:
        return Response.text(self.daemon.metrics.render(), content_type=CONTENT_TYPE)

    async def openapi(self, request: Request) -> Response:
        """``GET /openapi.json``: built from the same declarations as the router."""
        if self._document is None:
            self._document = self.openapi_document()
        return Response.json(self._document)

    def openapi_document(self) -> dict[str, Any]:
        """The OpenAPI document of these routes."""
        return openapi_document(
            self.operations,
            title="tradingd admin API",
            version=__version__,
            description="The operator's HTTP API of tradingd, on loopback. "
            "Routes with a security requirement need `Authorization: Bearer <token>`.",
        )

    def require_token(self, request: Request) -> None:
        """Check ``Authorization: Bearer <token>`` in constant time.

        Raises:
            HTTPError: 401 without a valid token; 403 when no token is configured
                (state-changing endpoints are disabled then).
        """
        token = self.daemon.admin_token
        if token is None:
            raise HTTPError(403, "this endpoint needs [admin] token to be configured")
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.reveal().encode()
        ):
            raise HTTPError(
                401, "missing or invalid bearer token", headers=(("WWW-Authenticate", "Bearer"),)
            )

    # ------------------------------------------------------------------ orders

    def _orders_route(self, handler: _OrdersHandler) -> Callable[[Request], Awaitable[Response]]:
        """Wrap an order route: token, pipeline configured, body bound, errors mapped.

        The token is checked before anything else, so an unauthenticated
        client learns nothing (not even whether accounts are configured).
        """

        async def route(request: Request) -> Response:
            self.require_token(request)
            service = self.daemon.orders
            if service is None:
                return error_response(503, NO_ACCOUNTS)
            if len(request.body) > MAX_ORDER_BODY_BYTES:
                raise HTTPError(413, f"request body larger than {MAX_ORDER_BODY_BYTES} bytes")
            try:
                return await handler(request, service)
            except Exception as exc:
                answer = error_answer(exc)
                if answer is None:
                    raise  # HTTPError, or a bug: the server answers (a generic 500 for bugs)
                return Response.json(answer.body, status=answer.status, headers=answer.headers())

        return route

    async def submit_order(self, request: Request, service: OrdersService) -> Response:
        """``POST /orders``: 202 for a new intent, 200 for a ``message_id`` seen before.

        Answered only once the intent is durably committed (the gateway waits
        for its group commit).
        """
        try:
            payload = request.json()
        except HTTPError as exc:
            # Same shape as an invalid intent, so a client reads one kind of 400.
            problem = {"code": "INVALID_JSON", "field": None, "message": exc.message}
            return Response.json({"error": exc.message, "problems": [problem]}, status=400)
        result = await service.submit(payload)
        return Response.json(result.to_json(), status=202 if result.created else 200)

    async def list_orders(self, request: Request, service: OrdersService) -> Response:
        """``GET /orders``: newest first, filtered by account and state."""
        states = parse_states(request.query.get("state", ()))
        raw_limit = request.query_value("limit")  # ASCII digits in range: checked
        limit = parse_limit(None if raw_limit is None else int(raw_limit))
        records = await service.list_orders(
            account=request.query_value("account") or None,
            states=None if states is None else list(states),
            limit=limit,
        )
        return Response.json({"orders": orders_view(records)})

    async def get_order(self, request: Request, service: OrdersService) -> Response:
        """``GET /orders/{client_order_id}``: the intent, its history and its fills."""
        coid = parse_client_order_id(request.path_params["client_order_id"])
        return Response.json(await service.details(coid))

    async def cancel_order(self, request: Request, service: OrdersService) -> Response:
        """``POST /orders/{id}/cancel``: 202 once the cancel is durably requested.

        An order that is already finished is returned unchanged with 200: the
        request is idempotent, and "nothing to cancel" is not an error. A
        PENDING intent is canceled at once, before anything is sent: 200 with
        ``canceled_before_sending``.
        """
        coid = parse_client_order_id(request.path_params["client_order_id"])
        before = await service.get(coid)
        record = await service.cancel(coid)
        body = cancel_answer(before, record)
        if body["cancel_requested"]:
            log.info("cancel of %s requested via the admin API", coid)
        return Response.json(body, status=202 if not record.is_terminal else 200)

    async def positions(self, request: Request, service: OrdersService) -> Response:
        """``GET /positions``: signed positions derived from fills."""
        positions = await service.positions(request.query_value("account") or None)
        return Response.json({"positions": positions_view(positions)})

    async def trading(self, request: Request, service: OrdersService) -> Response:
        """``GET /trading``: the switches and what applies to each account."""
        return Response.json(trading_view(service))

    def _switch(self, action: str) -> _OrdersHandler:
        async def switch(request: Request, service: OrdersService) -> Response:
            account, reason = parse_switch(request.json() if request.body.strip() else None)
            answer = await set_trading(service, action, account, reason)
            log.info(
                "trading %s for %s via the admin API",
                action,
                "all accounts" if account is None else f"account {account!r}",
            )
            return Response.json(answer)

        return switch
