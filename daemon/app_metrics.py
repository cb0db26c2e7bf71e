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

and, for the alert rules and the dashboard under ``config/`` (computed from
state the daemon already keeps: ``WatchdogStats``, each ``VenueLink`` and its
client's limiter, ``StoreStats``), the ``tradingd_`` families:

=======================================  =======  =================================
``watchdog_interval_seconds``            gauge    ``WATCHDOG_USEC/2`` (0: none)
``watchdog_last_ping_timestamp_seconds`` gauge    epoch time of the last
                                                  ``WATCHDOG=1`` sent (absent
                                                  before the first)
``watchdog_suppressing``                 gauge    1 while pings are held back
``venue_up``                             gauge    1 while the ``venue`` link is up
``venue_failures``                       counter  failed refreshes of the link
``venue_rate_limit_used``                gauge    units used per rate-limit
                                                  ``window`` (``REQUEST_WEIGHT:1M``)
``venue_rate_limit_limit``               gauge    each window's limit
``venue_rate_limit_frozen_seconds``      gauge    time left frozen by a 429/418
                                                  ``Retry-After`` (nothing sent)
``venue_rate_limit_freezes``             counter  freezes the venue imposed
``store_commits``                        counter  write transactions committed
``store_commit_seconds``                 counter  time spent committing them
``store_write_errors``                   counter  failed write transactions
``store_healthy``                        gauge    1 while the store is open and
                                                  healthy
=======================================  =======  =================================
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

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
    families += _watchdog_families(daemon)
    families += _venue_families(daemon)
    families += _store_families(daemon)
    return families


def _watchdog_families(daemon: Daemon) -> list[MetricFamily]:
    wd = daemon.watchdog_stats
    interval = daemon.notifier.watchdog_interval_s
    last: _Samples = [((), wd.last_ping_at)] if wd.last_ping_at is not None else []
    return [
        MetricFamily.gauge(
            "tradingd_watchdog_interval_seconds",
            "Interval of the systemd watchdog pings (WATCHDOG_USEC/2); 0 without a watchdog.",
            [((), float(interval or 0.0))],
        ),
        MetricFamily.gauge(
            "tradingd_watchdog_last_ping_timestamp_seconds",
            "Wall-clock time of the last WATCHDOG=1 systemd accepted (absent before the first).",
            last,
        ),
        MetricFamily.gauge(
            "tradingd_watchdog_suppressing",
            "1 while watchdog pings are held back because health is unhealthy.",
            [((), 1.0 if wd.suppressing else 0.0)],
        ),
    ]


def _venue_families(daemon: Daemon) -> list[MetricFamily]:
    up: _Samples = []
    failures: _Samples = []
    used: _Samples = []
    limit: _Samples = []
    frozen: _Samples = []
    freezes: _Samples = []
    for name, link in sorted(daemon.venue_links.items()):
        venue = (("venue", name),)
        up.append((venue, 1.0 if link.state.value == "up" else 0.0))
        failures.append((venue, float(link.failures)))
        client = link.client
        if client is None:
            continue
        snapshot = client.snapshot()
        freezes.append((venue, float(snapshot.get("freezes") or 0)))
        limiter: Mapping[str, Any] = snapshot.get("limiter") or {}
        if not limiter:
            continue
        frozen.append((venue, float(limiter.get("frozen_for_s") or 0.0)))
        windows: Mapping[str, Mapping[str, Any]] = limiter.get("windows") or {}
        for window, state in sorted(windows.items()):
            labels = (*venue, ("window", window))
            used.append((labels, float(state["used"])))
            limit.append((labels, float(state["limit"])))
    return [
        MetricFamily.gauge("tradingd_venue_up", "1 while the venue link is up.", up),
        MetricFamily.counter(
            "tradingd_venue_failures",
            "Failed refreshes of the venue link (time sync, exchangeInfo).",
            failures,
        ),
        MetricFamily.gauge(
            "tradingd_venue_rate_limit_used",
            "Units used in each of the venue's rate-limit windows (tradingd's own count).",
            used,
        ),
        MetricFamily.gauge(
            "tradingd_venue_rate_limit_limit", "Limit of each venue rate-limit window.", limit
        ),
        MetricFamily.gauge(
            "tradingd_venue_rate_limit_frozen_seconds",
            "Seconds the venue's limiter stays frozen by a 429/418 Retry-After (0: not frozen).",
            frozen,
        ),
        MetricFamily.counter(
            "tradingd_venue_rate_limit_freezes",
            "Freezes of the venue's limiter by a 429/418 Retry-After.",
            freezes,
        ),
    ]


def _store_families(daemon: Daemon) -> list[MetricFamily]:
    store = daemon.store_service.owner
    healthy = store is not None and store.health().level is HealthLevel.HEALTHY
    families = [
        MetricFamily.gauge(
            "tradingd_store_healthy",
            "1 while the store is open and healthy.",
            [((), 1.0 if healthy else 0.0)],
        )
    ]
    if store is None:
        return families
    stats = store.stats
    return [
        *families,
        MetricFamily.counter(
            "tradingd_store_commits", "Write transactions committed.", [((), stats.commits)]
        ),
        MetricFamily.counter(
            "tradingd_store_commit_seconds",
            "Time spent committing write transactions.",
            [((), stats.total_commit_s)],
        ),
        MetricFamily.counter(
            "tradingd_store_write_errors", "Failed write transactions.", [((), stats.write_errors)]
        ),
    ]
