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
import stat
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


#: Mode of every directory the daemon creates: its state is nobody else's business.
PRIVATE_DIR_MODE = 0o700
#: Mode of every file the daemon creates (database, tokens).
PRIVATE_FILE_MODE = 0o600


def make_private_dir(path: Path) -> list[Path]:
    """Create ``path`` and any missing parents, each mode 0700 whatever the umask.

    An existing directory is left as it is (it is the operator's; see
    :func:`warn_if_shared`). Returns the directories created, outermost first.
    """
    missing: list[Path] = []
    probe = path
    while not probe.is_dir():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    created: list[Path] = []
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue  # created meanwhile by someone else: theirs
        # mkdir's mode is masked by the umask; set exactly 0700.
        os.chmod(directory, PRIVATE_DIR_MODE)
        created.append(directory)
    return created


def warn_if_shared(path: Path, what: str) -> None:
    """Log a warning when ``path`` is accessible to its group or to others.

    Not changed: an operator may have made it so on purpose (a backup group);
    but the state holds orders, positions and secrets, so it is said.
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        private = PRIVATE_DIR_MODE if path.is_dir() else PRIVATE_FILE_MODE
        log.warning(
            "%s %s is accessible to other users (mode %04o); tradingd creates it %04o "
            "(chmod %o %s unless this is intended)",
            what,
            path,
            mode,
            private,
            private,
            path,
        )


def prepare_state_dir(path: Path) -> None:
    """Create the state directory (0700) if needed and prove it is writable (blocking).

    An existing directory open to other users is kept as it is, with a warning.
    """
    if not make_private_dir(path):
        warn_if_shared(path, "state_dir")
    # The probe file is created 0600 (mkstemp) and removed at once.
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
