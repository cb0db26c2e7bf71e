"""The systemd watchdog, fed from the event loop only while health is not unhealthy.

:func:`run_watchdog` evaluates the :class:`~daemon.health.model.HealthModel`
before every ``WATCHDOG=1`` and sends it *only while not unhealthy*, so
systemd restarts a daemon that is alive but broken, not only one that is
dead; the pings are sent from the event loop, so a blocked loop stops them
too. An unhealthy state that no restart can cure (every reason of the
unhealthy checks a :class:`~daemon.health.model.LastingReason`: the disk is
full) does not stop the pings (:attr:`~daemon.health.model.HealthReport.restart_level`),
and is logged once. It also sends the one-line ``STATUS=``. The notifier is anything shaped
like :class:`daemon.notify.Notifier` (:class:`WatchdogNotifier`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

import attrs
import trio

from daemon.health.model import HealthLevel, HealthModel, reasons_suffix

__all__ = ["WatchdogNotifier", "WatchdogStats", "run_watchdog"]

log = logging.getLogger("tradingd.health")


class WatchdogNotifier(Protocol):
    """What :func:`run_watchdog` needs from :class:`daemon.notify.Notifier`."""

    @property
    def watchdog_interval_s(self) -> float | None: ...

    def watchdog(self) -> bool: ...

    def status(self, text: str) -> bool: ...


@attrs.define
class WatchdogStats:
    """Counters of :func:`run_watchdog` (pass one in to read them).

    ``last_ping_at`` is the wall-clock time (epoch seconds) of the last
    ``WATCHDOG=1`` systemd accepted (``None`` before the first); ``/metrics``
    exposes it so that an alert can see pings stop while the daemon still
    answers. It is left out of comparisons, which are about the counts.
    """

    pings_sent: int = 0
    pings_failed: int = 0
    pings_suppressed: int = 0
    status_sent: int = 0
    suppressing: bool = False
    #: Pinging on while unhealthy for a lasting reason only (a full disk).
    lasting: bool = False
    last_ping_at: float | None = attrs.field(default=None, eq=False)


def _next_deadline(previous: float, interval_s: float, now: float) -> float:
    """Drift-free schedule; after a late wake-up, restart the schedule from now."""
    deadline = previous + interval_s
    return deadline if deadline > now else now + interval_s


async def run_watchdog(
    notifier: WatchdogNotifier,
    health: HealthModel,
    *,
    interval_s: float | None = None,
    status_fn: Callable[[], str] | None = None,
    status_interval_s: float | Callable[[], float] = 5.0,
    stats: WatchdogStats | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Feed systemd's watchdog from the event loop, only while not unhealthy.

    When the notifier's watchdog is enabled, every ``interval_s`` (default and
    maximum: ``notifier.watchdog_interval_s``, i.e. half of ``WATCHDOG_USEC``)
    this evaluates ``health`` and sends ``WATCHDOG=1`` unless the level is
    unhealthy. Pings are sent from this task, so a blocked loop stops them too.
    Suppression and resumption are logged once per transition, with reasons.

    With ``status_fn``, ``STATUS=<status_fn()>`` is sent every
    ``status_interval_s``. Both schedules start immediately. Runs forever (idle
    when there is nothing to do, so a supervisor does not see it exit).

    Args:
        notifier: the sd_notify sender.
        health: the model to evaluate before each ping.
        interval_s: ping more often than ``watchdog_interval_s``.
        status_fn: the one-line status text.
        status_interval_s: how often to send the status; a callable is read
            again for every period, so a reloaded setting applies at once.
        stats: counters to update (``pings_sent``, ``pings_suppressed``, …).
        task_status: reports ready once the schedules are set up.
    """
    counters = stats if stats is not None else WatchdogStats()
    ping_interval_s = notifier.watchdog_interval_s
    if ping_interval_s is not None and interval_s is not None:
        if interval_s > ping_interval_s:
            log.warning(
                "watchdog interval %.3f s is longer than WATCHDOG_USEC/2 (%.3f s); "
                "using the latter",
                interval_s,
                ping_interval_s,
            )
        ping_interval_s = min(interval_s, ping_interval_s)

    def status_period_s() -> float:
        return status_interval_s() if callable(status_interval_s) else status_interval_s

    if status_fn is not None and status_period_s() <= 0:
        raise ValueError(f"status_interval_s must be positive, got {status_period_s()}")
    if ping_interval_s is None and status_fn is None:
        log.info("systemd watchdog not enabled and no status to send; watchdog task idle")
        task_status.started()
        await trio.sleep_forever()

    now = trio.current_time()
    next_ping = now if ping_interval_s is not None else math.inf
    next_status = now if status_fn is not None else math.inf
    suppressed_in_episode = 0
    status_failing = False
    task_status.started()
    while True:
        await trio.sleep_until(min(next_ping, next_status))
        now = trio.current_time()
        if ping_interval_s is not None and now >= next_ping:
            report = health.evaluate()
            lasting = (
                report.level is HealthLevel.UNHEALTHY
                and report.restart_level is not HealthLevel.UNHEALTHY
            )
            if lasting and not counters.lasting:
                log.warning(
                    "health is unhealthy, but no restart would cure it: systemd "
                    "watchdog pings go on%s",
                    reasons_suffix(report.reasons),
                )
            counters.lasting = lasting
            if report.restart_level is HealthLevel.UNHEALTHY:
                counters.pings_suppressed += 1
                suppressed_in_episode += 1
                if not counters.suppressing:
                    counters.suppressing = True
                    log.warning(
                        "health is unhealthy: suppressing systemd watchdog pings, systemd "
                        "will restart the service unless health recovers%s",
                        reasons_suffix(report.reasons),
                    )
            else:
                if counters.suppressing:
                    counters.suppressing = False
                    log.warning(
                        "health is %s again: resuming systemd watchdog pings after %d suppressed",
                        report.level.value,
                        suppressed_in_episode,
                    )
                    suppressed_in_episode = 0
                if notifier.watchdog():
                    counters.pings_sent += 1
                    counters.last_ping_at = time.time()
                else:
                    counters.pings_failed += 1
            next_ping = _next_deadline(next_ping, ping_interval_s, now)
        if status_fn is not None and now >= next_status:
            try:
                text = status_fn()
            except Exception:
                if not status_failing:
                    status_failing = True
                    log.exception("status_fn failed; STATUS= not updated")
            else:
                status_failing = False
                if notifier.status(text):
                    counters.status_sent += 1
            next_status = _next_deadline(next_status, status_period_s(), now)
