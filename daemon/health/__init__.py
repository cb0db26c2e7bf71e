"""Health: loop lag, slow task steps, the health model and the systemd watchdog.

tradingd promises never to hang silently (promise 3,
docs/ARCHITECTURE.md §1 and §7). Three layers make that
true, from the inside out:

* :class:`LagProbe` (:mod:`.lag`) measures how late the event loop wakes a
  sleeping task (sleep drift). A healthy loop wakes it within a millisecond; a
  loop starved by a CPU-bound or blocking call wakes it late by exactly the
  time it was starved.
* :class:`SlowStepInstrument` (:mod:`.steps`) times every task step, so a block
  can be *blamed* on a task by name. While the loop is blocked nothing in it
  can log, so a separate OS thread, :class:`BlockedLoopReporter`, reads the
  instrument's current step and logs "event loop blocked for X s in task NAME"
  as it happens.
* :class:`HealthModel` (:mod:`.model`) folds loop lag, the supervision tree
  (:func:`supervisor_check`, :mod:`.supervision`) and any other checks into one
  :class:`HealthReport` (healthy / degraded / unhealthy, with reasons), and
  :func:`run_watchdog` (:mod:`.watchdog`) turns it into systemd's watchdog:
  ``WATCHDOG=1`` is sent from the event loop, and *only while not unhealthy*,
  so systemd restarts a daemon that is alive but broken, not only one that is
  dead.

Every name of those modules that the rest of the daemon uses is re-exported
here: import them from :mod:`daemon.health`.
"""

from __future__ import annotations

from daemon.health.lag import LagProbe, LagStats, nearest_rank
from daemon.health.model import (
    CheckFn,
    CheckOutcome,
    CheckResult,
    HealthLevel,
    HealthModel,
    HealthReport,
    HealthThresholds,
    LastingReason,
)
from daemon.health.steps import BlockedLoopReporter, SlowStep, SlowStepInstrument
from daemon.health.supervision import ChildStatusLike, SupervisorStatusLike, supervisor_check
from daemon.health.watchdog import WatchdogNotifier, WatchdogStats, run_watchdog

__all__ = [
    "BlockedLoopReporter",
    "CheckFn",
    "CheckOutcome",
    "CheckResult",
    "ChildStatusLike",
    "HealthLevel",
    "HealthModel",
    "HealthReport",
    "HealthThresholds",
    "LagProbe",
    "LagStats",
    "LastingReason",
    "SlowStep",
    "SlowStepInstrument",
    "SupervisorStatusLike",
    "WatchdogNotifier",
    "WatchdogStats",
    "nearest_rank",
    "run_watchdog",
    "supervisor_check",
]
