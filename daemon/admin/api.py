"""The admin API's routes: ``/health``, ``/status``, ``/metrics``, and the order pipeline.

Health, status and metrics only read in-memory state the daemon already
keeps, so a scrape never blocks the event loop and never waits on the store
or a venue; they need no token.

The order routes are the HTTP face of :class:`~daemon.orders.service.OrdersService`
(the daemon's ``orders``; ``None`` without ``[accounts]``, answered with 503).
Every one of them needs the bearer token from ``[admin] token``
(:meth:`AdminAPI.require_token`) *even on loopback*: order data tells what an
account holds and intends, and entry and the trading switches change state.

=========================================  ===================================================
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

Errors are ``{"error": "..."}`` like every other error of the server, with
the extra fields :func:`daemon.orders.control.error_answer` documents
(``problems``, ``reasons``, ``client_order_id``/``fields``, ``retry_after_s``).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any, Final, Protocol

from daemon.admin.http import HTTPError, Request, Response, Router, error_response
from daemon.health import HealthLevel, HealthModel
from daemon.metrics import CONTENT_TYPE, Registry
from daemon.orders.control import (
    NO_ACCOUNTS,
    TRADING_ACTIONS,
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

__all__ = ["MAX_ORDER_BODY_BYTES", "AdminAPI", "AdminHost"]

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

    def status(self) -> dict[str, Any]: ...


_OrdersHandler = Callable[[Request, "OrdersService"], Awaitable[Response]]


class AdminAPI:
    """Routes of the admin API for one daemon."""

    def __init__(self, daemon: AdminHost) -> None:
        self.daemon = daemon
        self.router = Router()
        self.router.add("GET", "/health", self.health)
        self.router.add("GET", "/status", self.status)
        self.router.add("GET", "/metrics", self.metrics)
        orders = self._orders_route
        self.router.add("POST", "/orders", orders(self.submit_order))
        self.router.add("GET", "/orders", orders(self.list_orders))
        self.router.add("GET", "/orders/{client_order_id}", orders(self.get_order))
        self.router.add("POST", "/orders/{client_order_id}/cancel", orders(self.cancel_order))
        self.router.add("GET", "/positions", orders(self.positions))
        self.router.add("GET", "/trading", orders(self.trading))
        for action in TRADING_ACTIONS:
            self.router.add("POST", f"/trading/{action}", orders(self._switch(action)))

    async def handle(self, request: Request) -> Response:
        return await self.router.dispatch(request)

    async def health(self, request: Request) -> Response:
        """200 while healthy or degraded and running; 503 otherwise (JSON reasons)."""
        report = self.daemon.health.evaluate()
        body: dict[str, Any] = {"state": self.daemon.state, **report.to_dict()}
        ok = report.level is not HealthLevel.UNHEALTHY and self.daemon.state == "running"
        return Response.json(body, status=200 if ok else 503)

    async def status(self, request: Request) -> Response:
        return Response.json(self.daemon.status())

    async def metrics(self, request: Request) -> Response:
        return Response.text(self.daemon.metrics.render(), content_type=CONTENT_TYPE)

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
        _only_params(request, {"account", "state", "limit"})
        states = parse_states(request.query.get("state", ()))
        limit = parse_limit(request.query_value("limit"))
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
        request is idempotent, and "nothing to cancel" is not an error.
        """
        coid = parse_client_order_id(request.path_params["client_order_id"])
        record = await service.cancel(coid)
        requested = not record.is_terminal
        if requested:
            log.info("cancel of %s requested via the admin API", coid)
        body = {
            "client_order_id": record.client_order_id,
            "state": record.state.value,
            "cancel_requested": requested,
            "order": record.to_json(),
        }
        return Response.json(body, status=202 if requested else 200)

    async def positions(self, request: Request, service: OrdersService) -> Response:
        """``GET /positions``: signed positions derived from fills."""
        _only_params(request, {"account"})
        positions = await service.positions(request.query_value("account") or None)
        return Response.json({"positions": positions_view(positions)})

    async def trading(self, request: Request, service: OrdersService) -> Response:
        """``GET /trading``: the switches and what applies to each account."""
        _only_params(request, set())
        return Response.json(trading_view(service))

    def _switch(self, action: str) -> _OrdersHandler:
        async def switch(request: Request, service: OrdersService) -> Response:
            _only_params(request, set())
            account, reason = parse_switch(request.json() if request.body.strip() else None)
            answer = await set_trading(service, action, account, reason)
            log.info(
                "trading %s for %s via the admin API",
                action,
                "all accounts" if account is None else f"account {account!r}",
            )
            return Response.json(answer)

        return switch


def _only_params(request: Request, allowed: Collection[str]) -> None:
    """Refuse query parameters a route does not know (a typo must not widen a filter)."""
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise HTTPError(
            400, f"unknown query parameter(s) {', '.join(map(repr, unknown))} (known: {known})"
        )
