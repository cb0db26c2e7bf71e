"""A real ``tradingd demo`` process, for the process-level tests of the demo and the admin API.

The demo runs the whole daemon (supervision tree, order pipeline, strategy)
against an in-process exchange simulator, with the admin API on a free port
and its token in ``STATE_DIR/admin-token``: the real thing an operator or an
attacker on the host would talk to.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from tests.helpers.process import WAIT_S, child_env, wait_until

_BANNER = re.compile(r"status: +(http://127\.0\.0\.1:(\d+))/status")


@attrs.frozen
class Demo:
    """A running demo: its admin API's base URL and port, the token, its stderr."""

    base: str
    port: int
    token: str
    stderr_path: Path
    proc: trio.Process

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def interrupt(self, *, timeout_s: float = WAIT_S) -> int:
        """Ctrl-C (``SIGINT``); the exit status, within ``timeout_s``."""
        self.proc.send_signal(signal.SIGINT)
        with trio.fail_after(timeout_s):
            return await self.proc.wait()


@asynccontextmanager
async def running_demo(
    tmp_path: Path, *, state_dir: Path | None = None, umask: int | None = None
) -> AsyncIterator[Demo]:
    """Start ``tradingd demo --admin-port 0`` in ``tmp_path``; stop it (SIGINT, then kill).

    The state goes to ``tmp_path/var`` (the demo's default) or to ``state_dir``
    (``--state-dir``); with ``umask``, the demo starts under that umask.
    """
    stderr_path = tmp_path / "demo.stderr"
    command = [sys.executable, "-m", "daemon", "demo", "--admin-port", "0"]
    if state_dir is not None:
        command += ["--state-dir", str(state_dir)]
    if umask is not None:
        command = ["sh", "-c", f'umask {umask:03o}; exec "$@"', "sh", *command]
    state_dir = state_dir or tmp_path / "var"
    with stderr_path.open("wb") as stderr:
        proc = await trio.lowlevel.open_process(
            command,
            cwd=tmp_path,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        match = await wait_until(
            lambda: _BANNER.search(stderr_path.read_text(errors="replace")),
            what="the demo banner",
            diag=lambda: stderr_path.read_text(errors="replace")[-3000:],
        )
        token = (state_dir / "admin-token").read_text().strip()
        yield Demo(match.group(1), int(match.group(2)), token, stderr_path, proc)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            with trio.move_on_after(WAIT_S, shield=True):
                await proc.wait()
        if proc.returncode is None:
            proc.kill()
            with trio.move_on_after(5, shield=True):
                await proc.wait()
