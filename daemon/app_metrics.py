"""The daemon's own metrics on ``/metrics``: process, health, supervision, watchdog, queues.

The services register their own collectors (orders, market data); this
module adds what belongs to the process as a whole, read at scrape time
from the running :class:`~daemon.app.Daemon`:

==================================  =======  ========================================
``tradingd_up``                     gauge    1 while the daemon runs
``tradingd_uptime_seconds``         gauge    seconds since the process started
``tradingd_health``                 gauge    0 healthy, 1 degraded, 2 unhealthy
``tradingd_loop_lag_milliseconds``  gauge    loop lag, ``quantile`` 0.5 / 0.99 / 1
``tradingd_child_restarts``         counter  restarts per supervised ``child`` path
``tradingd_child_state``            gauge    1 for each ``child``'s current ``state``
``tradingd_watchdog_pings``         counter  pings by ``outcome``: sent, failed, suppressed
``tradingd_queue_depth``            gauge    items queued, per ``queue``
``tradingd_queue_capacity``         gauge    capacity, per ``queue``
``tradingd_supervisor_events``      counter  supervisor events by ``kind`` and ``child``
==================================  =======  ========================================
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from daemon.health import HealthLevel
from daemon.metrics import MetricFamily
from daemon.supervise import SupervisorEvent

if TYPE_CHECKING:
    from daemon.app import Daemon

__all__ = ["collect", "register"]

_LEVEL_VALUE = {HealthLevel.HEALTHY: 0, HealthLevel.DEGRADED: 1, HealthLevel.UNHEALTHY: 2}

_Samples = list[tuple[tuple[tuple[str, str], ...], float]]


def register(daemon: Daemon) -> Callable[[SupervisorEvent], None]:
    """Register the daemon's metrics in ``daemon.metrics``; returns the event counter's hook.

    The hook counts one supervisor event (``tradingd_supervisor_events``).
    """
    events = daemon.metrics.counter(
        "tradingd_supervisor_events", "Supervisor events by kind and child.", ("kind", "child")
    )
    daemon.metrics.register_collector(lambda: collect(daemon))

    def count(event: SupervisorEvent) -> None:
        events.inc(kind=event.kind, child=event.child or "")

    return count


def collect(daemon: Daemon) -> list[MetricFamily]:
    """The families read at scrape time (everything above but the event counter)."""
    report = daemon.health.evaluate()
    stats = daemon.lag_probe.stats()
    families = [
        MetricFamily.gauge("tradingd_up", "1 while the daemon runs.", [((), 1.0)]),
        MetricFamily.gauge(
            "tradingd_uptime_seconds",
            "Seconds since the process started.",
            [((), time.time() - daemon.started_wall)],
        ),
        MetricFamily.gauge(
            "tradingd_health",
            "Health level: 0 healthy, 1 degraded, 2 unhealthy.",
            [((), float(_LEVEL_VALUE[report.level]))],
        ),
        MetricFamily.gauge(
            "tradingd_loop_lag_milliseconds",
            "Event-loop lag (sleep drift) over the probe window.",
            [
                ((("quantile", "0.5"),), stats.p50_ms),
                ((("quantile", "0.99"),), stats.p99_ms),
                ((("quantile", "1"),), stats.max_ms),
            ],
        ),
    ]
    restarts: _Samples = []
    states: _Samples = []
    for path, child in daemon.root.status().walk():
        restarts.append(((("child", path),), float(child.restarts)))
        states.append(((("child", path), ("state", child.state.value)), 1.0))
    families.append(
        MetricFamily.counter(
            "tradingd_child_restarts", "Restarts of each supervised child.", restarts
        )
    )
    families.append(
        MetricFamily.gauge("tradingd_child_state", "Current state of each child.", states)
    )
    wd = daemon.watchdog_stats
    families.append(
        MetricFamily.counter(
            "tradingd_watchdog_pings",
            "systemd watchdog pings by outcome (suppressed while unhealthy).",
            [
                ((("outcome", "sent"),), float(wd.pings_sent)),
                ((("outcome", "failed"),), float(wd.pings_failed)),
                ((("outcome", "suppressed"),), float(wd.pings_suppressed)),
            ],
        )
    )
    queues = daemon.queues.snapshot()
    depth: _Samples = [((("queue", q["name"]),), float(q["depth"])) for q in queues]
    cap: _Samples = [((("queue", q["name"]),), float(q["capacity"])) for q in queues]
    families.append(MetricFamily.gauge("tradingd_queue_depth", "Items queued.", depth))
    families.append(MetricFamily.gauge("tradingd_queue_capacity", "Queue capacity.", cap))
    return families
