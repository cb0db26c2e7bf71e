"""The store owner's health: what each failed or successful call says about the store.

:class:`HealthTracker` keeps, on the event loop, the state behind
:meth:`~daemon.store.sqlite.SqliteStore.health`: UNHEALTHY while writes fail
(disk full, read-only, locked, I/O) and, sticky until restart, after
corruption was detected; DEGRADED while reads fail but writes work; the last
error kept after recovery. Data errors and bugs count in the error counters
but say nothing about the store's health. One log line marks each change
(writes failing, working again, corruption).

Backend-neutral: an owner calls :meth:`HealthTracker.failed` with the typed
:class:`~daemon.store.errors.StoreError` of a call, and
:meth:`~HealthTracker.write_ok` / :meth:`~HealthTracker.read_ok` after one
that worked.

**Recovery needs a write.** Only a write that commits clears UNHEALTHY, and
on a quiet daemon (orders only, no market data) nothing may write for a long
time after a full disk has been cleaned up. :func:`run_write_probe` closes
that gap: while :attr:`HealthTracker.writes_failing`, it asks the owner for
one small write of its own (``probe_write``) every
:data:`WRITE_PROBE_INTERVAL_S`, so health turns back on its own once the
store can write again, whether or not an intent arrives.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final, Literal, Protocol

import trio

from daemon.health import HealthLevel
from daemon.store.base import StoreHealth, StoreStats
from daemon.store.errors import StoreCorruptError, StoreError, StoreUnavailableError

__all__ = [
    "WRITE_PROBE_INTERVAL_S",
    "CallKind",
    "HealthTracker",
    "WriteProbed",
    "run_write_probe",
]

log = logging.getLogger("tradingd.store")

#: What an owner call did: a write transaction, a read, or a plain call.
CallKind = Literal["read", "write", "call"]

#: How often a store whose writes fail tries a write of its own (seconds).
WRITE_PROBE_INTERVAL_S: Final = 1.0


def _iso(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


class HealthTracker:
    """The health state of one store (event-loop side only).

    Args:
        path: The database, named in log lines and reasons.
        stats: The owner's counters (``errors_by_type``, ``write_errors``,
            ``read_errors`` are counted here).
        wall_clock: Epoch seconds, for ``last_error_at`` and ``failing_since``.
    """

    def __init__(self, path: str, stats: StoreStats, wall_clock: Callable[[], float]) -> None:
        self._path = path
        self._stats = stats
        self._wall_clock = wall_clock
        self._write_failure: StoreError | None = None
        self._read_failure: StoreError | None = None
        self._corruption: StoreError | None = None
        self._failing_since: float | None = None
        self._consecutive_write_failures = 0
        self._last_error: StoreError | None = None
        self._last_error_at: float | None = None

    def failed(self, exc: StoreError, kind: CallKind) -> None:
        """Count a failed call of ``kind`` and what it says about the store."""
        now = self._wall_clock()
        name = type(exc).__name__
        self._stats.errors_by_type[name] = self._stats.errors_by_type.get(name, 0) + 1
        self._last_error = exc
        self._last_error_at = now
        if isinstance(exc, StoreCorruptError):
            if self._corruption is None:
                log.error("store %s: corruption detected: %s", self._path, exc)
            self._corruption = exc
        if kind == "write":
            self._stats.write_errors += 1
        elif kind == "read":
            self._stats.read_errors += 1
        if not isinstance(exc, StoreUnavailableError | StoreCorruptError):
            return  # data errors and bugs say nothing about the store's health
        if kind == "write":
            if self._write_failure is None:
                self._failing_since = now
                log.error("store %s: writes failing: %s", self._path, exc)
            else:
                log.debug("store %s: write failed again: %s", self._path, exc)
            self._write_failure = exc
            self._consecutive_write_failures += 1
        elif kind == "read":
            self._read_failure = exc

    @property
    def write_failure(self) -> StoreError | None:
        """Why writes fail now: the last write failed for want of a writable store
        (full, read-only, locked, I/O) and none has committed since; ``None``
        otherwise, and once corruption was seen (a restore, not a retry, fixes that)."""
        return self._write_failure if self._corruption is None else None

    @property
    def writes_failing(self) -> bool:
        """Whether :attr:`write_failure` is set."""
        return self.write_failure is not None

    def write_ok(self) -> None:
        """A write committed: writes (and reads) work again."""
        if self._write_failure is not None:
            log.warning(
                "store %s: writes work again after %d failed write(s) since %s",
                self._path,
                self._consecutive_write_failures,
                _iso(self._failing_since or 0.0),
            )
        self._write_failure = None
        self._read_failure = None
        self._failing_since = None
        self._consecutive_write_failures = 0

    def read_ok(self) -> None:
        """A read worked: reads work again."""
        self._read_failure = None

    def health(self, *, closed: bool) -> StoreHealth:
        """The store's state: level, reason (naming the file), last error."""
        last = self._last_error
        common: dict[str, Any] = {
            "last_error": str(last) if last is not None else None,
            "last_error_type": type(last).__name__ if last is not None else None,
            "last_error_at": self._last_error_at,
            "failing_since": self._failing_since,
            "consecutive_write_failures": self._consecutive_write_failures,
        }
        if self._corruption is not None:
            reason = f"{self._corruption}; run an integrity check and restore from a backup"
            return StoreHealth(HealthLevel.UNHEALTHY, reason, **common)
        if closed:
            return StoreHealth(HealthLevel.UNHEALTHY, f"store {self._path}: closed", **common)
        if self._write_failure is not None:
            reason = (
                f"{self._write_failure} (writes failing since {_iso(self._failing_since or 0.0)}, "
                f"{self._consecutive_write_failures} failed)"
            )
            return StoreHealth(HealthLevel.UNHEALTHY, reason, **common)
        if self._read_failure is not None:
            return StoreHealth(
                HealthLevel.DEGRADED, f"reads failing: {self._read_failure}", **common
            )
        return StoreHealth(HealthLevel.HEALTHY, None, **common)


class WriteProbed(Protocol):
    """An owner :func:`run_write_probe` can watch."""

    @property
    def writes_failing(self) -> bool: ...

    async def probe_write(self) -> None:
        """One small write transaction that needs new space, committed through the
        owner's ``write`` (so its outcome reaches the :class:`HealthTracker`)."""
        ...


async def run_write_probe(
    owner: WriteProbed,
    *,
    interval_s: float = WRITE_PROBE_INTERVAL_S,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """While ``owner``'s writes fail, try one every ``interval_s``; runs until cancelled.

    The probe's failure is counted and logged by the owner like any failed
    write (at debug level after the first); its success clears UNHEALTHY and
    logs "writes work again". Nothing is probed while writes work.
    """
    task_status.started()
    while True:
        await trio.sleep(interval_s)
        if not owner.writes_failing:
            continue
        try:
            await owner.probe_write()
        except StoreError:
            pass  # still failing: the owner's health says so, and why
