"""The admin API's routes: ``/health``, ``/status``, ``/metrics``.

Every handler only reads in-memory state the daemon already keeps, so a scrape
never blocks the event loop and never waits on the store or a venue. Later
issues add ``/orders`` here; state-changing endpoints require the bearer token
from ``[admin] token`` (see :meth:`AdminAPI.require_token`).
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from daemon.admin.http import HTTPError, Request, Response, Router
from daemon.health import HealthLevel
from daemon.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from daemon.app import Daemon


class AdminAPI:
    """Routes of the admin API for one daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.router = Router()
        self.router.add("GET", "/health", self.health)
        self.router.add("GET", "/status", self.status)
        self.router.add("GET", "/metrics", self.metrics)

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
