"""The real programs a torture scenario drives: the simulator and ``tradingd run``.

* :class:`Notify` — the systemd end of ``NOTIFY_SOCKET`` for one incarnation:
  every datagram with the monotonic time it arrived (``READY=1``,
  ``WATCHDOG=1``, ``STOPPING=1``), so the runner can tell when the daemon was
  ready and whether a frozen process kept pinging.
* :class:`DaemonProc` — ``python -m daemon run --config PATH`` started the way
  systemd starts it (``NOTIFY_SOCKET``, ``WATCHDOG_USEC``), one
  :class:`Incarnation` per start; SIGKILL, SIGSTOP/SIGCONT, SIGTERM, SIGHUP.
* :class:`SimProc` — ``python -m daemon sim`` on ports fixed for the whole
  scenario and a ``--state-file``, so that killing and restarting it is a venue
  outage, not a venue that forgot its orders; its control API through
  :attr:`SimProc.http`.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import httpx2
import trio

from daemon.bench.common import SIM_URLS_PREFIX, kill

__all__ = [
    "DaemonProc",
    "Incarnation",
    "Notify",
    "SimProc",
    "TortureError",
    "free_ports",
    "poll",
]

#: The admin API's log line, with its URL.
ADMIN_URL_RE: Final = re.compile(r"admin API on (http://127\.0\.0\.1:\d+)/")
#: Variables of the runner's own environment that would change the daemon's behaviour.
HOSTILE_ENV: Final = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "RUNTIME_DIRECTORY",
    "CREDENTIALS_DIRECTORY",
    "JOURNAL_STREAM",
    "LISTEN_FDS",
    "LISTEN_PID",
)


class TortureError(Exception):
    """The run itself cannot go on (a program would not start, a wait timed out)."""


async def poll(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float, interval_s: float = 0.02
) -> bool:
    """Call ``check`` every ``interval_s`` until it is true (``True``) or ``timeout_s`` passed."""
    with trio.move_on_after(timeout_s):
        while True:
            if await check():
                return True
            await trio.sleep(interval_s)
    return False


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in HOSTILE_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now (bound, then released)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Notify:
    """The ``AF_UNIX``/``SOCK_DGRAM`` socket one incarnation notifies (systemd's end)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(os.fspath(path))
        self.sock.setblocking(False)
        #: (arrival, monotonic seconds; the fields of the datagram)
        self.messages: list[tuple[float, dict[str, str]]] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                await trio.lowlevel.wait_readable(self.sock)
                self.drain()
        finally:
            self.sock.close()
            self.path.unlink(missing_ok=True)

    def drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, OSError):
                return
            fields: dict[str, str] = {}
            for line in data.decode("utf-8", "replace").split("\n"):
                key, _, value = line.partition("=")
                fields[key] = value
            self.messages.append((time.monotonic(), fields))

    def times(self, key: str, value: str) -> list[float]:
        self.drain()
        return [at for at, fields in self.messages if fields.get(key) == value]


@attrs.define
class Incarnation:
    """One start of the daemon."""

    number: int
    proc: trio.Process
    notify: Notify
    log_path: Path
    started_at: float
    ready_at: float | None = None
    admin_url: str | None = None
    #: The runner sent it SIGKILL or SIGTERM (any other exit is the daemon's own).
    stopped_by_runner: bool = False

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


class DaemonProc:
    """``tradingd run`` under the runner's control, as systemd would run it."""

    def __init__(
        self,
        workdir: Path,
        config_path: Path,
        nursery: trio.Nursery,
        *,
        watchdog_s: float,
        sockdir: Path,
    ) -> None:
        self.workdir = workdir
        self.config_path = config_path
        self.nursery = nursery
        self.watchdog_s = watchdog_s
        self.incarnations: list[Incarnation] = []
        #: A short directory for the notify sockets (paths stay under 108 bytes).
        self._sockdir = sockdir

    @property
    def current(self) -> Incarnation:
        if not self.incarnations:
            raise TortureError("the daemon was never started")
        return self.incarnations[-1]

    async def start(self) -> Incarnation:
        """Start one incarnation (does not wait for ``READY=1``)."""
        n = len(self.incarnations)
        # Unix socket paths must stay short: the workdir can be deep.
        notify = Notify(self._sockdir / f"notify{n}.sock")
        await self.nursery.start(notify.run)
        env = child_env()
        env["NOTIFY_SOCKET"] = os.fspath(notify.path)
        env["WATCHDOG_USEC"] = str(int(self.watchdog_s * 1_000_000))
        log_path = self.workdir / f"daemon{n}.log"
        with open(log_path, "wb") as log:  # noqa: ASYNC230 - a new, empty file
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "daemon", "run", "--config", os.fspath(self.config_path)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.workdir,
            )
        inc = Incarnation(n, proc, notify, log_path, time.monotonic())
        self.incarnations.append(inc)
        return inc

    async def wait_ready(self, inc: Incarnation, *, timeout_s: float) -> float:
        """Wait for ``READY=1`` and the admin URL; seconds from the start to ready."""
        deadline = trio.current_time() + timeout_s
        while True:
            ready = inc.notify.times("READY", "1")
            if ready:
                inc.ready_at = ready[0]
                match = ADMIN_URL_RE.search(inc.log())
                if match:
                    inc.admin_url = match.group(1)
                    return inc.ready_at - inc.started_at
            if not inc.alive:
                raise TortureError(
                    f"tradingd exited with {inc.proc.returncode} before READY=1:\n{inc.log_tail()}"
                )
            if trio.current_time() > deadline:
                raise TortureError(f"no READY=1 within {timeout_s:g}s:\n{inc.log_tail()}")
            await trio.sleep(0.02)

    def signal(self, sig: signal.Signals) -> None:
        inc = self.current
        if inc.alive:
            inc.stopped_by_runner |= sig in (signal.SIGTERM, signal.SIGKILL)
            inc.proc.send_signal(sig)

    async def kill(self) -> int | None:
        """SIGKILL the current incarnation and reap it; its exit status."""
        inc = self.current
        if inc.alive:
            inc.stopped_by_runner = True
            await kill(inc.proc)
        return inc.proc.returncode

    def exited_on_its_own(self) -> list[Incarnation]:
        """The incarnations that exited without the runner stopping them (crashes)."""
        return [i for i in self.incarnations if not i.alive and not i.stopped_by_runner]

    async def wait_exit(self, timeout_s: float) -> int | None:
        inc = self.current
        with trio.move_on_after(timeout_s):
            return await inc.proc.wait()
        return None

    async def aclose(self) -> None:
        for inc in self.incarnations:
            if inc.alive:
                os.kill(inc.proc.pid, signal.SIGCONT)
                await kill(inc.proc)


class SimProc:
    """The simulator on fixed ports, restartable with its state."""

    def __init__(self, workdir: Path, args: Sequence[str], ports: tuple[int, int]) -> None:
        self.workdir = workdir
        self.args = list(args)
        self.rest_port, self.ws_port = ports
        self.rest_url = f"http://127.0.0.1:{self.rest_port}"
        self.ws_url = f"ws://127.0.0.1:{self.ws_port}"
        self.state_file = workdir / "sim-state.bin"
        self.proc: trio.Process | None = None
        self.starts = 0
        self.http = httpx2.AsyncClient(
            base_url=self.rest_url,
            trust_env=False,
            timeout=10.0,
            limits=httpx2.Limits(max_keepalive_connections=0),
        )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, timeout_s: float = 30.0) -> None:
        log_path = self.workdir / f"sim{self.starts}.log"
        self.starts += 1
        with open(log_path, "wb") as log:  # noqa: ASYNC230 - a new, empty file
            self.proc = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "daemon",
                    "sim",
                    "--rest-port",
                    str(self.rest_port),
                    "--ws-port",
                    str(self.ws_port),
                    "--state-file",
                    os.fspath(self.state_file),
                    "--log-level",
                    "warning",
                    *self.args,
                ],
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.workdir,
            )
        deadline = trio.current_time() + timeout_s
        while True:
            text = log_path.read_text(encoding="utf-8", errors="replace")
            if SIM_URLS_PREFIX in text:
                return
            if self.proc.returncode is not None:
                raise TortureError(f"the simulator exited with {self.proc.returncode}:\n{text}")
            if trio.current_time() > deadline:
                await kill(self.proc)
                raise TortureError(f"the simulator did not start within {timeout_s:g}s:\n{text}")
            await trio.sleep(0.05)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            await kill(self.proc)

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        """One ``/sim/...`` request; :class:`TortureError` unless it succeeded."""
        try:
            with trio.fail_after(15.0):
                response = await self.http.request(method, path, json=body)
        except (httpx2.HTTPError, trio.TooSlowError, OSError) as exc:
            raise TortureError(f"sim {method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 300:
            raise TortureError(f"sim {method} {path}: {response.status_code} {response.text}")
        return response.json()

    async def arm(self, spec: dict[str, Any]) -> None:
        await self.control("POST", "/sim/faults", spec)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self.kill()
            await self.http.aclose()
