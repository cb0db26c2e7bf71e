"""The daemon's status documents: what ``tradingd status``, ``/status`` and ``STATUS=`` say.

Three views of one running :class:`~daemon.app.Daemon`, read at the moment
they are asked for (nothing here is cached):

* :func:`status_line` — the one-line systemd ``STATUS=``: lifecycle state,
  health, children up, restarts, loop lag, a rejected reload, the first
  health reason.
* :func:`status_summary` — ``GET /status`` (no token): health, lifecycle,
  supervision, loop lag, queues, market-data capture and the sd_notify
  channel. Nothing in it tells what an account holds or intends.
* :func:`full_status` — ``GET /status/full`` (with the token) and
  ``tradingd status``: the summary plus slow steps, venues, the store, orders,
  strategies, the admin listener, the last reload and recent supervisor
  events.

Every document goes through :func:`daemon.secrets.redact_document` (the line
through :func:`~daemon.secrets.redact_urls_in_text`): credentials in URLs are
masked. :class:`EventLog` keeps the recent supervisor events the full status
shows.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, cast

import attrs

from daemon import __version__
from daemon.health import HealthLevel
from daemon.secrets import redact_document, redact_urls_in_text
from daemon.supervise import SupervisorEvent

if TYPE_CHECKING:
    from daemon.app import Daemon, ReloadResult

__all__ = ["EventLog", "describe", "full_status", "status_line", "status_summary"]

#: Supervisor events kept in memory; the full status shows the last :data:`EVENTS_SHOWN`.
EVENTS_KEPT = 50
EVENTS_SHOWN = 20


def describe(exc: BaseException) -> str:
    """``"Type: message"``: how a failure reads in events, logs and ``STATUS=``."""
    return f"{type(exc).__name__}: {exc}"


class EventLog:
    """The last :data:`EVENTS_KEPT` supervisor events, as JSON-ready dicts."""

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []

    def record(self, event: SupervisorEvent) -> None:
        self._events.append(
            {
                "kind": event.kind,
                "supervisor": event.supervisor,
                "child": event.child,
                "error": describe(event.error) if event.error is not None else None,
                "at": round(event.at, 3),
            }
        )
        del self._events[:-EVENTS_KEPT]

    def recent(self, count: int = EVENTS_SHOWN) -> list[dict[str, Any]]:
        """The last ``count`` events, oldest first (a copy)."""
        return list(self._events[-count:])


def status_line(daemon: Daemon, reload: ReloadResult | None = None) -> str:
    """The one-line systemd ``STATUS=`` (``reload``: the outcome just decided, if any)."""
    report = daemon.health.evaluate()
    tree = daemon.root.status()
    running = sum(1 for c in tree.children if c.state.value == "running")
    stats = daemon.lag_probe.stats()
    line = (
        f"{daemon.state}, {report.level.value}; children {running}/{len(tree.children)} up; "
        f"restarts {tree.total_restarts}; loop lag p99 {stats.p99_ms:.0f}ms"
    )
    last = reload or daemon.last_reload
    if last is not None and not last.ok:
        line += f"; reload REJECTED ({len(last.errors)} errors), running on previous config"
    if report.level is not HealthLevel.HEALTHY and report.reasons:
        line += f"; {report.reasons[0]}"
    return redact_urls_in_text(line)


def status_summary(daemon: Daemon) -> dict[str, Any]:
    """``GET /status`` (no token): health, lifecycle, supervision, lag and queues.

    Also market-data capture (public data: counts, lag, gaps) and the Redis
    intake (its connection and counters). Nothing here
    tells what an account holds or intends: orders, positions, switches,
    venues and the rest are in :func:`full_status` (``GET /status/full`` with
    the token, and ``tradingd status``). Credentials in URLs are masked.
    """
    summary = {
        **_common(daemon),
        "queues": daemon.queues.snapshot(),
        "marketdata": _marketdata_status(daemon),
        "intake": daemon.intake.status() if daemon.intake is not None else None,
        "notify": _notify_status(daemon),
        "full": "GET /status/full with the bearer token",
    }
    return cast(dict[str, Any], redact_document(summary))


def full_status(daemon: Daemon) -> dict[str, Any]:
    """The whole status document: ``GET /status/full`` (token) and ``tradingd status``.

    Every URL in it has its credentials masked (:func:`daemon.secrets.redact_document`).
    """
    doc = {
        **_common(daemon),
        "slow_steps": daemon.instrument.report(),
        "queues": daemon.queues.snapshot(),
        "venues": {name: link.status() for name, link in daemon.venue_links.items()},
        "store": daemon.store_service.status(),
        "marketdata": _marketdata_status(daemon),
        "orders": daemon.orders.status() if daemon.orders is not None else None,
        "strategies": daemon.strategies.status() if daemon.strategies is not None else None,
        "intake": daemon.intake.status() if daemon.intake is not None else None,
        "admin": {"listen": daemon.config.admin.listen, "bound": daemon.admin_address},
        "last_reload": daemon.last_reload.to_dict() if daemon.last_reload else None,
        "recent_events": daemon.events.recent(),
        "notify": _notify_status(daemon),
    }
    return cast(dict[str, Any], redact_document(doc))


def _common(daemon: Daemon) -> dict[str, Any]:
    """What both documents open with: identity, lifecycle, health, tree, lag."""
    return {
        "version": __version__,
        "pid": os.getpid(),
        "state": daemon.state,
        "uptime_s": round(time.time() - daemon.started_wall, 3),
        "config": daemon.config.source,
        "health": daemon.health.evaluate().to_dict(),
        "supervision": daemon.root.status().to_dict(),
        "loop_lag": attrs.asdict(daemon.lag_probe.stats()),
    }


def _notify_status(daemon: Daemon) -> dict[str, Any]:
    return {
        "enabled": daemon.notifier.enabled,
        "watchdog_interval_s": daemon.notifier.watchdog_interval_s,
        "watchdog": attrs.asdict(daemon.watchdog_stats),
    }


def _marketdata_status(daemon: Daemon) -> dict[str, Any] | None:
    if daemon.marketdata is None:
        return None
    service, sup = daemon.marketdata
    return {service.venue: {**service.status(), "supervision": sup.status().to_dict()}}
