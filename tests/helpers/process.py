"""The process-level harness: the real ``tradingd run`` as a subprocess, checked from outside.

:class:`Harness` starts ``python -m daemon run --config PATH`` the way systemd
does: ``NOTIFY_SOCKET`` points at an ``AF_UNIX``/``SOCK_DGRAM`` socket the test
binds (:class:`NotifyListener`), ``WATCHDOG_USEC`` is set and the variables of
:data:`HOSTILE_ENV` are removed. :func:`config_text` is a complete, fast base
configuration; :func:`wait_until`/:func:`await_until` wait for a condition under
a deadline (never a fixed sleep); :func:`http_get` and :func:`parse_prometheus`
read the admin API; :class:`StoreWitness` reads the daemon's store from outside
(:class:`ReadOnlyDatabase` for the SQLite file; :class:`StoreUnderTest` pairs it
with the ``[store]`` table). The ``h`` and ``sockdir`` fixtures (``tests/conftest.py``)
wrap :func:`open_harness` and :func:`make_sockdir`.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import attrs
import httpx2
import trio

from daemon import control

T = TypeVar("T")

WATCHDOG_USEC = 1_000_000
PING_INTERVAL_S = WATCHDOG_USEC / 2 / 1_000_000
HEARTBEAT_INTERVAL_S = 0.2
HEARTBEAT_TOLERANCE = 3
STATUS_INTERVAL_S = 0.5
SHUTDOWN_TIMEOUT_S = 2.0
#: Generous bound for any single condition on a loaded 2-core machine.
WAIT_S = 15.0
#: The admin token's content: it must never show up in any output.
SECRET = "tok-5f0c1e9a-NEVER-PRINT-THIS-SECRET"
#: Variables a test process might inherit that would change the daemon's behaviour.
HOSTILE_ENV = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "RUNTIME_DIRECTORY",
    "CREDENTIALS_DIRECTORY",
    "JOURNAL_STREAM",
    "LISTEN_FDS",
    "LISTEN_PID",
)
ADMIN_URL_RE = re.compile(r"admin API on (http://127\.0\.0\.1:(\d+))/")


# --------------------------------------------------------------------------- waiting


async def wait_until(
    check: Callable[[], T | None],
    *,
    what: str,
    timeout_s: float = WAIT_S,
    poll_s: float = 0.02,
    diag: Callable[[], str] | None = None,
) -> T:
    """Poll ``check`` until it returns something truthy; fail clearly after ``timeout_s``."""

    async def acheck() -> T | None:
        return check()

    return await await_until(acheck, what=what, timeout_s=timeout_s, poll_s=poll_s, diag=diag)


async def await_until(
    check: Callable[[], Awaitable[T | None]],
    *,
    what: str,
    timeout_s: float = WAIT_S,
    poll_s: float = 0.02,
    diag: Callable[[], str] | None = None,
) -> T:
    """:func:`wait_until` for an async ``check`` (an HTTP request, say)."""
    deadline = trio.current_time() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if trio.current_time() >= deadline:
            detail = f"\n{diag()}" if diag is not None else ""
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}{detail}")
        await trio.sleep(poll_s)


def child_env() -> dict[str, str]:
    """The test's environment minus :data:`HOSTILE_ENV`, unbuffered: for any child process."""
    env = {k: v for k, v in os.environ.items() if k not in HOSTILE_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in µs: the clock systemd (and MONOTONIC_USEC) uses, machine-wide."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


# --------------------------------------------------------------------------- sd_notify side


@attrs.frozen
class Notification:
    """One datagram received on the notify socket."""

    at: float
    fields: dict[str, str]

    @classmethod
    def parse(cls, data: bytes, at: float) -> Notification:
        fields: dict[str, str] = {}
        for line in data.decode("utf-8").split("\n"):
            key, sep, value = line.partition("=")
            assert sep, f"sd_notify line without '=': {line!r} in {data!r}"
            fields[key] = value
        return cls(at=at, fields=fields)

    def has(self, key: str, value: str | None = None) -> bool:
        return key in self.fields and (value is None or self.fields[key] == value)


class NotifyListener:
    """The systemd end of ``NOTIFY_SOCKET``: records every datagram with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(os.fspath(path))
        self.sock.setblocking(False)
        self.messages: list[Notification] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drain the socket as datagrams arrive (the kernel queue holds only a few)."""
        task_status.started()
        while True:
            await trio.lowlevel.wait_readable(self.sock)
            self.drain()

    def drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            self.messages.append(Notification.parse(data, trio.current_time()))

    def close(self) -> None:
        self.sock.close()

    def where(self, key: str, value: str | None = None, *, after: int = 0) -> list[int]:
        """Indexes of the messages (from ``after`` on) carrying ``key`` (= ``value``)."""
        return [i for i in range(after, len(self.messages)) if self.messages[i].has(key, value)]

    async def wait_for(
        self,
        key: str,
        value: str | None = None,
        *,
        after: int = 0,
        count: int = 1,
        timeout_s: float = WAIT_S,
        diag: Callable[[], str] | None = None,
    ) -> list[int]:
        """Wait until ``count`` messages from ``after`` on carry ``key`` (= ``value``)."""

        def check() -> list[int] | None:
            self.drain()
            found = self.where(key, value, after=after)
            return found if len(found) >= count else None

        shown = f"{key}={value}" if value is not None else f"{key}="
        return await wait_until(
            check,
            what=f"{count} x {shown} on NOTIFY_SOCKET (after message #{after})",
            timeout_s=timeout_s,
            diag=diag or self.describe,
        )

    def describe(self) -> str:
        return "notify messages:\n" + "\n".join(
            f"  #{i} {m.at:.3f} {m.fields}" for i, m in enumerate(self.messages)
        )


def ping_times(listener: NotifyListener, *, after: int = 0) -> list[float]:
    return [listener.messages[i].at for i in listener.where("WATCHDOG", "1", after=after)]


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


# --------------------------------------------------------------------------- processes


@attrs.frozen
class CLIResult:
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


@attrs.define
class DaemonProcess:
    """One ``tradingd run`` subprocess and what it said."""

    proc: trio.Process
    notify: NotifyListener
    stderr_path: Path
    config_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the daemon's stderr."""
        return "\n".join(self.log().splitlines()[-lines:])

    def diag(self) -> str:
        return f"{self.notify.describe()}\ndaemon stderr (tail):\n{self.log_tail()}"

    def send_signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    async def wait_ready(self, *, after: int = 0, timeout_s: float = WAIT_S) -> int:
        found = await self.notify.wait_for(
            "READY", "1", after=after, timeout_s=timeout_s, diag=self.diag
        )
        return found[0]

    async def wait_exit(self, *, timeout_s: float = WAIT_S) -> int:
        with trio.move_on_after(timeout_s):
            return await self.proc.wait()
        raise AssertionError(f"daemon did not exit within {timeout_s:g}s\n{self.diag()}")

    async def stop(self, *, timeout_s: float = WAIT_S) -> int:
        """``SIGTERM`` (what ``systemctl stop`` sends); the exit status, within ``timeout_s``."""
        self.send_signal(signal.SIGTERM)
        return await self.wait_exit(timeout_s=timeout_s)

    async def wait_log(self, pattern: str, *, timeout_s: float = WAIT_S) -> re.Match[str]:
        regex = re.compile(pattern)
        return await wait_until(
            lambda: regex.search(self.log()),
            what=f"log line matching {pattern!r}",
            timeout_s=timeout_s,
            diag=self.diag,
        )

    async def admin_url(self) -> str:
        match = await self.wait_log(ADMIN_URL_RE.pattern)
        return match.group(1)


def config_text(
    *,
    state_dir: Path,
    control_socket: Path,
    token_file: Path,
    level: str = "info",
    max_connections: int = 64,
    shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S,
    status_interval_s: float = STATUS_INTERVAL_S,
    fault_injection: bool = False,
) -> str:
    """A complete, fast test configuration (short intervals, port 0, short socket path)."""
    q = json.dumps  # a JSON string is a valid TOML basic string for these paths
    return f"""\
[daemon]
state_dir = {q(str(state_dir))}
control_socket = {q(str(control_socket))}
shutdown_timeout_s = {shutdown_timeout_s}
start_timeout_s = 20.0

[logging]
level = {q(level)}
format = "text"

[supervision]
backoff_initial_s = 0.05
backoff_max_s = 0.2
child_shutdown_grace_s = 0.5

[health]
heartbeat_interval_s = {HEARTBEAT_INTERVAL_S}
heartbeat_tolerance = {HEARTBEAT_TOLERANCE}
status_interval_s = {status_interval_s}
blocked_loop_report_s = 0.5
min_free_disk_mb = 0

[admin]
listen = "127.0.0.1:0"
token = {{ file = {q(str(token_file))} }}
max_connections = {max_connections}

[testing]
fault_injection = {str(fault_injection).lower()}
"""


def state_dir_of(tmp_path: Path) -> Path:
    """The daemon's ``state_dir`` in a :class:`Harness` made on ``tmp_path``."""
    return tmp_path / "state"


class Harness:
    """Config files, notify sockets and daemon processes of one test; cleans up after it."""

    def __init__(self, tmp_path: Path, sockdir: Path, nursery: trio.Nursery) -> None:
        self.tmp_path = tmp_path
        self.sockdir = sockdir
        self.nursery = nursery
        self.state_dir = state_dir_of(tmp_path)
        # Unix socket paths must stay under 108 bytes: tmp_path can be longer.
        self.control_socket = sockdir / "control.sock"
        self.token_file = tmp_path / "admin-token"
        self.token_file.write_text(SECRET + "\n")
        self.config_path = tmp_path / "tradingd.toml"
        self.daemons: list[DaemonProcess] = []
        self.listeners: list[NotifyListener] = []

    def config_text(self, **overrides: Any) -> str:
        """:func:`config_text` with this harness's state dir, control socket and token."""
        return config_text(
            state_dir=self.state_dir,
            control_socket=self.control_socket,
            token_file=self.token_file,
            **overrides,
        )

    def write_config(self, **overrides: Any) -> Path:
        self.config_path.write_text(self.config_text(**overrides))
        return self.config_path

    async def listener(self) -> NotifyListener:
        listener = NotifyListener(self.sockdir / f"notify{len(self.listeners)}.sock")
        self.listeners.append(listener)
        await self.nursery.start(listener.run)
        return listener

    def env(self, notify: NotifyListener | None) -> dict[str, str]:
        env = child_env()
        if notify is not None:
            env["NOTIFY_SOCKET"] = os.fspath(notify.path)
            env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)
        return env

    async def start(self) -> DaemonProcess:
        """Start ``tradingd run`` with its own notify socket (does not wait for READY)."""
        notify = await self.listener()
        path = self.config_path
        n = len(self.daemons)
        stderr_path = self.tmp_path / f"daemon{n}.stderr"
        with (
            open(self.tmp_path / f"daemon{n}.stdout", "wb") as out,  # noqa: ASYNC230
            open(stderr_path, "wb") as err,  # noqa: ASYNC230
        ):
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "daemon", "run", "--config", os.fspath(path)],
                env=self.env(notify),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.tmp_path,
            )
        daemon = DaemonProcess(proc, notify, stderr_path, path)
        self.daemons.append(daemon)
        return daemon

    def log_tails(self, lines: int) -> str:
        """The last ``lines`` lines of every daemon's stderr, each under a header."""
        return "\n".join(
            f"--- daemon{i} (tail)\n" + daemon.log_tail(lines)
            for i, daemon in enumerate(self.daemons)
        )

    async def start_ready(self) -> DaemonProcess:
        daemon = await self.start()
        await daemon.wait_ready()
        return daemon

    async def cli(self, *args: str, timeout_s: float = 30.0) -> CLIResult:
        """Run ``python -m daemon ARGS`` to completion."""
        with trio.fail_after(timeout_s):
            done = await trio.run_process(
                [sys.executable, "-m", "daemon", *args],
                env=self.env(None),
                stdin=subprocess.DEVNULL,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                cwd=self.tmp_path,
            )
        return CLIResult(
            done.returncode,
            done.stdout.decode("utf-8", "replace"),
            done.stderr.decode("utf-8", "replace"),
        )

    async def control(self, message: dict[str, Any]) -> dict[str, Any]:
        """One request on the control socket (what ``tradingd status/reload`` send)."""
        answer = await trio.to_thread.run_sync(
            lambda: control.request(self.control_socket, message, timeout_s=10.0)
        )
        assert isinstance(answer, dict), answer
        return answer

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            for daemon in self.daemons:
                if daemon.proc.returncode is None:
                    daemon.proc.kill()
                    with trio.move_on_after(10):
                        await daemon.proc.wait()
        self.nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_harness(
    tmp_path: Path, sockdir: Path, harness_type: type[Harness] = Harness
) -> AsyncIterator[Harness]:
    """A :class:`Harness` (or a subclass) for the block; kills what it started at the end."""
    async with trio.open_nursery() as nursery:
        harness = harness_type(tmp_path, sockdir, nursery)
        try:
            yield harness
        finally:
            await harness.aclose()
    for listener in harness.listeners:
        listener.close()


def make_sockdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="tdp-", dir="/tmp"))


@contextmanager
def short_sockdir() -> Iterator[Path]:
    """A short directory for Unix sockets (paths stay under 108 bytes), removed afterwards."""
    path = make_sockdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_scenario(scenario: Callable[[Path, Path], Awaitable[T]], tmp_path: Path) -> T:
    """``scenario(tmp_path, sockdir)`` in a fresh ``trio.run`` (a module fixture's one run)."""
    with short_sockdir() as sockdir:
        return trio.run(scenario, tmp_path, sockdir)


def run_into_closed_pipe(*argv: str) -> tuple[int, str]:
    """Run ``python -m daemon ARGV`` with stdout a pipe already closed at its read end."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "daemon", *argv],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    return done.returncode, done.stderr.decode("utf-8", "replace")


# --------------------------------------------------------------------------- the store


class StoreWitness(Protocol):
    """Blocking read-only queries on the daemon's store, independent of :mod:`daemon.store`.

    SQL is written in SQLite's style (``?`` placeholders) and kept to what both
    backends read the same way; run the calls in a thread. The SQLite witness
    is :class:`ReadOnlyDatabase`, the PostgreSQL one
    :class:`tests.helpers.pg_witness.PgReadOnly`.
    """

    #: ``"sqlite"`` or ``"postgres"``.
    backend: str

    def exists(self) -> bool:
        """Whether the daemon has created its store (file or tables) yet."""
        ...

    def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Any]: ...

    def fetchone(self, sql: str, params: Sequence[object] = ()) -> Any: ...

    def fetchall_if_created(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """The rows of ``sql``; none before the store or its tables exist."""
        ...

    def describe(self) -> str:
        """Where the store is (for failure messages; never a password)."""
        ...


@attrs.frozen
class StoreUnderTest:
    """The daemon's ``[store]`` table of a process test and its independent witness."""

    #: ``"sqlite"`` or ``"postgres"``.
    backend: str
    #: The keys of the ``[store]`` table (TOML lines, without the header).
    toml: str
    witness: StoreWitness


class ReadOnlyDatabase:
    """Blocking read-only queries on the daemon's database file (run them in a thread).

    Each query opens its own ``mode=ro`` connection with the standard library:
    nothing here can change the file, nothing is held open across the daemon's
    restarts, and nothing depends on :mod:`daemon.store`.
    """

    backend = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=10.0, isolation_level=None)

    def exists(self) -> bool:
        return self.path.is_file()

    def describe(self) -> str:
        return str(self.path)

    def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """Every row of one query."""
        conn = self._connect()
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def fetchone(self, sql: str, params: Sequence[object] = ()) -> Any:
        """The first row of one query (``None``: no row)."""
        conn = self._connect()
        try:
            return conn.execute(sql, params).fetchone()
        finally:
            conn.close()

    def fetchall_if_created(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """The rows of ``sql``; none before the file or its tables exist."""
        if not self.exists():
            return []
        try:
            return self.fetchall(sql, params)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise


def sqlite_store(state_dir: Path, name: str) -> StoreUnderTest:
    """The daemon's store as the file ``name`` under its ``state_dir``, read with ``mode=ro``."""
    toml = f"path = {json.dumps(name)}\n"
    return StoreUnderTest("sqlite", toml, ReadOnlyDatabase(state_dir / name))


def as_witness(db: Path | StoreWitness) -> StoreWitness:
    """A witness of ``db``: a database file path (SQLite) or a witness already."""
    return ReadOnlyDatabase(db) if isinstance(db, Path) else db


# --------------------------------------------------------------------------- HTTP


async def http_get(url: str) -> httpx2.Response:
    with trio.fail_after(WAIT_S):
        async with httpx2.AsyncClient(trust_env=False, timeout=10.0) as client:
            return await client.get(url)


PROM_SAMPLE = re.compile(
    r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? "
    r"([-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|NaN|Inf)|[-+]Inf)$"
)
PROM_META = re.compile(r"^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*)( .*)?$")


def parse_prometheus(text: str) -> dict[str, float]:
    """Validate the text format line by line; return ``name{labels}`` → value."""
    samples: dict[str, float] = {}
    assert text.endswith("\n"), "exposition must end with a newline"
    for line in text.splitlines():
        if line.startswith("#"):
            assert PROM_META.match(line), f"bad comment line {line!r}"
            continue
        match = PROM_SAMPLE.match(line)
        assert match, f"bad sample line {line!r}"
        samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text, "the admin token leaked"
