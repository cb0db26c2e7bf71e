"""The housekeeping task: watches the state directory and heartbeats.

A critical child of the root supervisor. Every heartbeat interval it checks
the free space under ``state_dir`` (in a worker thread: ``statvfs`` on a dead
network file system can hang, and then this task's heartbeat goes stale, which
is exactly what the heartbeat is for) and heartbeats. Low disk space degrades
health before it can fail a write.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import attrs
import trio

from daemon.faults import Faults
from daemon.health import HealthLevel
from daemon.supervise import ChildContext

log = logging.getLogger("tradingd.housekeeping")


@attrs.define
class DiskState:
    """Latest disk observation of the state directory."""

    free_mb: float | None = None
    min_free_mb: int = 0
    error: str | None = None

    def check(self) -> tuple[HealthLevel, str | None]:
        if self.error:
            return HealthLevel.UNHEALTHY, f"state_dir: {self.error}"
        if self.free_mb is not None and self.min_free_mb and self.free_mb < self.min_free_mb:
            return (
                HealthLevel.DEGRADED,
                f"state_dir: {self.free_mb:.0f} MB free, below {self.min_free_mb} MB",
            )
        return HealthLevel.HEALTHY, None


def prepare_state_dir(path: Path) -> None:
    """Create the state directory if needed and prove it is writable (blocking)."""
    path.mkdir(mode=0o750, parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-"):
        pass


def free_mb(path: Path) -> float:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / 1_048_576


@attrs.define
class Housekeeping:
    state_dir: Path
    interval_s: float
    disk: DiskState
    faults: Faults

    async def run(
        self, ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await trio.to_thread.run_sync(prepare_state_dir, self.state_dir)
        await self._observe()
        ctx.heartbeat()
        task_status.started()
        while True:
            with trio.move_on_after(self.interval_s):
                await ctx.wait_stop_requested()
            if ctx.stop_requested:
                return
            await self.faults.maybe_hang()
            await self._observe()
            ctx.heartbeat()

    async def _observe(self) -> None:
        try:
            mb = await trio.to_thread.run_sync(free_mb, self.state_dir)
        except OSError as exc:
            if self.disk.error is None:
                log.error("state_dir %s: %s", self.state_dir, exc.strerror)
            self.disk.error = f"{self.state_dir}: {exc.strerror}"
            return
        if self.disk.error is not None:
            log.info("state_dir %s is reachable again", self.state_dir)
        self.disk.error = None
        self.disk.free_mb = mb
