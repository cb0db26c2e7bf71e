"""What one ``tradingd bench ingest`` run sets up: options, configurations, the processes' handles.

* :class:`IngestOptions` — the counts one run uses (``tradingd bench ingest``
  flags, declared in :func:`daemon.bench.ingest.add_arguments`).
* :func:`sim_config` — the simulator: BTCUSDT only, market paused (bench
  mode needs it), a trade history long enough for every trade of the run (so
  any gap can be backfilled), rate limits out of reach.
* :func:`daemon_config` — tradingd capturing BTCUSDT's trades from the
  simulator with the default ``[marketdata]`` and ``[store]`` settings; the
  loop-lag probe's window shortened so that ``/status`` read every
  :data:`SAMPLE_INTERVAL_S` shows the lag of that moment.
* :class:`DaemonProcess` — ``python -m daemon run`` as a subprocess, and what
  the bench reads from it (admin API, ``/proc``).
* :class:`SimBench` — the simulator's bench mode (``/sim/bench``) and status.
* :class:`StoreWitness` — the daemon's database file, read-only with the
  standard library: what is *durably committed* is counted from the file,
  never taken from the daemon's own word.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import attrs
import httpx2
import trio

from daemon.bench.common import (
    START_TIMEOUT_S,
    BenchError,
    SimProcess,
    kill,
    open_module_process,
    process_cpu_s,
)
from daemon.store.sqlite import DEFAULT_CACHE_SIZE_KIB

__all__ = [
    "CHECKPOINT_STREAM",
    "LAG_PROBE_INTERVAL_S",
    "LAG_WINDOW_S",
    "SAMPLE_INTERVAL_S",
    "SYMBOL",
    "VENUE",
    "DaemonProcess",
    "IngestOptions",
    "SimBench",
    "StoreWitness",
    "Witness",
    "daemon_config",
    "free_port",
    "sim_config",
]

SYMBOL: Final = "BTCUSDT"
VENUE: Final = "sim"
#: The ``stream`` part of the ingest checkpoint key (as the daemon's ingest writer names it).
CHECKPOINT_STREAM: Final = "trades"
#: How often the bench reads the daemon's ``/status`` and ``/proc`` during a phase.
SAMPLE_INTERVAL_S: Final = 0.25
#: The daemon's loop-lag probe period (its default) and window (default 60 s): each read of
#: ``/status`` sees the lag of the last half second, two reads overlap, none is missed.
LAG_PROBE_INTERVAL_S: Final = 0.1
LAG_WINDOW_S: Final = 0.5
#: Limits of the simulator's rate-limit windows: high enough never to be met.
UNLIMITED: Final = 1_000_000_000
#: Environment variables that would make the daemon subprocess think it runs under systemd.
HOSTILE_ENV: Final = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "CREDENTIALS_DIRECTORY",
    "RUNTIME_DIRECTORY",
)
#: Bound of one admin or control API request.
HTTP_TIMEOUT_S: Final = 10.0
#: Bound of stopping the daemon (SIGTERM, then SIGKILL).
STOP_TIMEOUT_S: Final = 30.0


@attrs.frozen(kw_only=True)
class IngestOptions:
    """What one run does; :func:`daemon.bench.ingest.add_arguments` says what each option means."""

    raw_trades: int = 200_000
    trades: int = 100_000
    store_rows: int = 200_000
    store_rounds: int = 3
    overload_s: float = 60.0
    overload_factor: float = 10.0
    overload_max_trades: int = 2_000_000
    repair_wait_s: float = 60.0
    stall_s: float = 30.0

    def __attrs_post_init__(self) -> None:
        for field in attrs.fields(IngestOptions):
            value = getattr(self, field.name)
            minimum = 1
            if field.name in ("overload_s", "repair_wait_s"):
                minimum = 0
            if value < minimum:
                flag = "--" + field.name.replace("_", "-")
                raise ValueError(f"{flag} must be >= {minimum}, got {value}")

    @classmethod
    def quick(cls) -> IngestOptions:
        """Small counts and a short overload: a smoke run of every phase."""
        return cls(
            raw_trades=20_000,
            trades=10_000,
            store_rows=20_000,
            store_rounds=1,
            overload_s=3.0,
            repair_wait_s=20.0,
            stall_s=20.0,
        )

    def history(self) -> int:
        """Trades the simulator must keep for ``historicalTrades``: every trade of the run."""
        return self.raw_trades + self.trades + self.overload_max_trades + 10_000


# ------------------------------------------------------------------ configurations


def sim_config(options: IngestOptions) -> str:
    """The simulator: BTCUSDT only, market paused, every trade of the run kept, no rate limits."""
    history = options.history()
    limits = "".join(
        f'[[rate_limits]]\ntype = "{kind}"\ninterval = "{interval}"\n'
        f"interval_num = {num}\nlimit = {UNLIMITED}\n\n"
        for kind, interval, num in (
            ("REQUEST_WEIGHT", "MINUTE", 1),
            ("ORDERS", "SECOND", 10),
            ("ORDERS", "DAY", 1),
            ("RAW_REQUESTS", "MINUTE", 5),
        )
    )
    return (
        f"audit_trade_retention = {history}\n\n"
        f"[market]\npaused = true\ntrade_retention = {history}\n\n"
        f'[[symbols]]\nsymbol = "{SYMBOL}"\n\n{limits}'
    )


def daemon_config(
    workdir: Path, sim: SimProcess, admin_port: int, *, log_level: str, store: str = ""
) -> str:
    """tradingd capturing BTCUSDT from ``sim``: default capture and store settings.

    Differences from the defaults, all outside the measured path: the admin API
    on ``admin_port``, no free-disk check (the bench's temporary directory may
    be on a small disk), and the loop-lag window of :data:`LAG_WINDOW_S`.
    ``store`` is a ``[store]`` section to add (``--store postgres``:
    :func:`daemon.bench.pg.store_toml`); none: the default SQLite file.
    """
    q = json.dumps  # a TOML basic string is a JSON string (paths, URLs)
    return f"""\
[daemon]
state_dir = {q(str(workdir / "state"))}
control_socket = {q(str(workdir / "control.sock"))}
shutdown_timeout_s = 20.0

[logging]
level = {q(log_level)}
format = "text"

[health]
lag_probe_interval_s = {LAG_PROBE_INTERVAL_S}
lag_window_s = {LAG_WINDOW_S}
min_free_disk_mb = 0

[admin]
listen = "127.0.0.1:{admin_port}"

[marketdata]
venue = "{VENUE}"
symbols = ["{SYMBOL}"]

[venues.{VENUE}]
rest_url = {q(sim.rest_url)}
ws_url = {q(sim.ws_url)}
""" + (f"\n{store}" if store else "")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for the daemon's admin API)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_env() -> dict[str, str]:
    """This environment minus :data:`HOSTILE_ENV`, unbuffered."""
    env = {k: v for k, v in os.environ.items() if k not in HOSTILE_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ------------------------------------------------------------------ the daemon process


def proc_memory(pid: int) -> dict[str, int] | None:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of ``pid`` in bytes, from ``/proc``; ``None`` if gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return None
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out if len(out) == 2 else None


@attrs.define
class DaemonProcess:
    """``python -m daemon run`` as a subprocess; its admin API; its ``/proc`` figures."""

    proc: trio.Process
    admin_url: str
    log_path: Path
    db_path: Path
    http: httpx2.AsyncClient

    @classmethod
    async def start(
        cls,
        workdir: Path,
        config: str,
        admin_port: int,
        *,
        module: Sequence[str] = ("daemon",),
    ) -> DaemonProcess:
        """Start the daemon on ``config`` (written to ``workdir``); wait until it is running.

        ``module`` is what follows ``python -m`` before ``run --config PATH``
        (a profiler can wrap the daemon: ``("cProfile", "-o", OUT, "-m", "daemon")``).
        Its output goes to ``workdir/tradingd.log``.
        """
        config_path = workdir / "tradingd.toml"
        config_path.write_text(config, encoding="utf-8")
        log_path = workdir / "tradingd.log"
        proc = await open_module_process(
            [*module, "run", "--config", str(config_path)],
            log_path=log_path,
            cwd=workdir,
            env=child_env(),
        )
        admin_url = f"http://127.0.0.1:{admin_port}"
        http = httpx2.AsyncClient(base_url=admin_url, timeout=HTTP_TIMEOUT_S, trust_env=False)
        daemon = cls(proc, admin_url, log_path, workdir / "state" / "tradingd.db", http)
        try:
            await daemon._wait_running()
        except BaseException:
            await daemon.aclose()
            raise
        return daemon

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        """Raise :class:`BenchError` (with its log's tail) if the daemon has exited."""
        if self.proc.poll() is not None:
            raise BenchError(
                f"tradingd exited with {self.proc.returncode}; its log ends:\n{self.log_tail()}"
            )

    async def _wait_running(self) -> None:
        with trio.move_on_after(START_TIMEOUT_S):
            while True:
                self.check_alive()
                try:
                    response = await self.http.get("/health")
                    if response.json().get("state") == "running":
                        return
                except (httpx2.HTTPError, ValueError):
                    pass
                await trio.sleep(0.1)
        raise BenchError(
            f"tradingd was not running after {START_TIMEOUT_S:g} s; its log ends:\n"
            + self.log_tail()
        )

    async def status(self) -> dict[str, Any]:
        """``GET /status`` (the daemon must answer)."""
        self.check_alive()
        try:
            response = await self.http.get("/status")
            response.raise_for_status()
            answer: dict[str, Any] = response.json()
        except (httpx2.HTTPError, ValueError) as exc:
            self.check_alive()
            raise BenchError(f"tradingd GET /status: {type(exc).__name__}: {exc}") from exc
        return answer

    async def health(self) -> tuple[int, dict[str, Any]]:
        """``GET /health``: the HTTP status and the document."""
        self.check_alive()
        try:
            response = await self.http.get("/health")
            return response.status_code, response.json()
        except (httpx2.HTTPError, ValueError) as exc:
            self.check_alive()
            raise BenchError(f"tradingd GET /health: {type(exc).__name__}: {exc}") from exc

    async def wait_capturing(self) -> dict[str, Any]:
        """Until the feed is connected and its first catch-up is done; the status then.

        Trades posted before the catch-up has read the venue's latest trade id
        would be taken for history from before the start, and not captured.
        """
        with trio.move_on_after(START_TIMEOUT_S):
            while True:
                status = await self.status()
                feed = capture_section(status).get("feed") or {}
                caught_up = feed.get("catch_ups", 0) >= 1 and not feed.get("catching_up")
                if feed.get("connected") and caught_up:
                    return status
                await trio.sleep(0.1)
        raise BenchError(
            f"tradingd's market-data feed was not connected after {START_TIMEOUT_S:g} s; "
            f"its log ends:\n{self.log_tail()}"
        )

    def cpu_s(self) -> float:
        cpu = process_cpu_s(self.pid)
        if cpu is None:
            self.check_alive()
            raise BenchError(f"cannot read the CPU time of tradingd (pid {self.pid})")
        return cpu

    def memory(self) -> dict[str, int]:
        memory = proc_memory(self.pid)
        if memory is None:
            self.check_alive()
            raise BenchError(f"cannot read the memory of tradingd (pid {self.pid})")
        return memory

    async def stop(self) -> int | None:
        """SIGTERM (a clean stop: the queue drains, the store closes); its exit code."""
        with trio.CancelScope(shield=True):
            if self.proc.returncode is None:
                self.proc.send_signal(signal.SIGTERM)
                with trio.move_on_after(STOP_TIMEOUT_S):
                    await self.proc.wait()
            await self.aclose()
        return self.proc.returncode

    async def aclose(self) -> None:
        """Kill it if it still runs; close the HTTP client."""
        with trio.CancelScope(shield=True):
            if self.proc.returncode is None:
                await kill(self.proc)
            await self.http.aclose()


def capture_section(status: dict[str, Any]) -> dict[str, Any]:
    """The venue's market-data section of a ``/status`` document (empty when absent)."""
    section = (status.get("marketdata") or {}).get(VENUE)
    return section if isinstance(section, dict) else {}


def queue_stats(status: dict[str, Any], name: str) -> dict[str, Any]:
    """One queue of the daemon's registry (``marketdata.sim.trades``…) in a ``/status`` document."""
    for queue in status.get("queues") or ():
        if isinstance(queue, dict) and queue.get("name") == name:
            return queue
    return {}


# ------------------------------------------------------------------ the simulator's bench mode


@attrs.define
class SimBench:
    """The simulator's bench mode and status, over its REST port."""

    sim: SimProcess
    http: httpx2.AsyncClient

    @classmethod
    def open(cls, sim: SimProcess) -> SimBench:
        return cls(sim, httpx2.AsyncClient(base_url=sim.rest_url, timeout=HTTP_TIMEOUT_S))

    async def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        if self.sim.proc.poll() is not None:
            raise BenchError(f"the simulator exited with {self.sim.proc.returncode}")
        try:
            response = await self.http.request(method, path, json=body)
            return response.status_code, response.json()
        except (httpx2.HTTPError, ValueError) as exc:
            raise BenchError(f"simulator {method} {path}: {type(exc).__name__}: {exc}") from exc

    async def start(self, count: int, rate: float) -> dict[str, Any]:
        """``POST /sim/bench/trades``: the 202 answer (ids, connections)."""
        code, answer = await self._call(
            "POST", "/sim/bench/trades", {"symbol": SYMBOL, "count": count, "rate": rate}
        )
        if code != 202:
            raise BenchError(f"simulator POST /sim/bench/trades: {code} {answer}")
        return dict(answer)

    async def state(self) -> dict[str, Any]:
        """``GET /sim/bench``."""
        code, answer = await self._call("GET", "/sim/bench")
        if code != 200:
            raise BenchError(f"simulator GET /sim/bench: {code} {answer}")
        return dict(answer)

    async def stop(self) -> dict[str, Any]:
        """``DELETE /sim/bench``: stop the run's delivery."""
        code, answer = await self._call("DELETE", "/sim/bench")
        if code != 200:
            raise BenchError(f"simulator DELETE /sim/bench: {code} {answer}")
        return dict(answer)

    async def wait_sending(self, timeout_s: float) -> dict[str, Any]:
        """Until the run's trades are generated (it sends, or is done); its state then."""
        return await self._wait(lambda s: s.get("phase") != "generating", timeout_s, "generated")

    async def wait_finished(self, timeout_s: float, poll_s: float = 0.01) -> dict[str, Any]:
        """Until the run has sent everything or stopped; its state then."""
        return await self._wait(lambda s: not s.get("running"), timeout_s, "finished", poll_s)

    async def _wait(
        self, done: Any, timeout_s: float, what: str, poll_s: float = 0.01
    ) -> dict[str, Any]:
        with trio.move_on_after(timeout_s):
            while True:
                state = await self.state()
                if state.get("error"):
                    raise BenchError(f"the simulator's bench run failed: {state['error']}")
                if done(state):
                    return state
                await trio.sleep(poll_s)
        raise BenchError(f"the simulator's bench run was not {what} after {timeout_s:g} s")

    async def wait_connections(self, count: int, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until exactly ``count`` stream connections are open (``GET /sim/status``)."""
        with trio.move_on_after(timeout_s):
            while True:
                code, status = await self._call("GET", "/sim/status")
                if code == 200 and status.get("streamConnections") == count:
                    return
                await trio.sleep(0.02)
        raise BenchError(f"the simulator did not have {count} stream connection(s) in time")

    def cpu_s(self) -> float:
        cpu = process_cpu_s(self.sim.proc.pid)
        if cpu is None:
            raise BenchError("cannot read the simulator's CPU time (has it exited?)")
        return cpu

    async def aclose(self) -> None:
        await self.http.aclose()


# ------------------------------------------------------------------ the store, read-only


class Witness(Protocol):
    """What the phases ask of the store, from outside the daemon (SQLite's file or the server)."""

    #: The store's own page cache in the daemon's memory, at most (MB; ``None``: not in it).
    page_cache_max_mb: float | None

    def last_id(self, lo: int, hi: int) -> int | None: ...
    def count(self, lo: int, hi: int) -> int: ...
    def holes(self, lo: int, hi: int) -> list[tuple[int, int]]: ...
    def gaps(self) -> list[dict[str, Any]]: ...
    def file_bytes(self) -> int: ...
    def close(self) -> None: ...


class StoreWitness:
    """The daemon's trades, read from its database file (read-only, standard library).

    One connection, used from one worker thread at a time (the bench never
    runs two of its calls at once); each statement sees the last commit.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self.page_cache_max_mb: float | None = round(DEFAULT_CACHE_SIZE_KIB / 1024, 1)

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            uri = f"file:{self.path}?mode=ro"
            try:
                self._conn = sqlite3.connect(
                    uri, uri=True, timeout=5.0, isolation_level=None, check_same_thread=False
                )
            except sqlite3.Error as exc:
                raise BenchError(f"cannot open {self.path} read-only: {exc}") from exc
        return self._conn

    def _one(self, sql: str, args: Sequence[Any]) -> tuple[Any, ...]:
        row: tuple[Any, ...] = self._connect().execute(sql, tuple(args)).fetchone()
        return row

    def last_id(self, lo: int, hi: int) -> int | None:
        """The highest stored id in ``[lo, hi]`` (one index seek)."""
        (top,) = self._one(
            "SELECT max(trade_id) FROM trades WHERE venue = ? AND symbol = ? "
            "AND trade_id BETWEEN ? AND ?",
            (VENUE, SYMBOL, lo, hi),
        )
        return None if top is None else int(top)

    def count(self, lo: int, hi: int) -> int:
        """How many trades in ``[lo, hi]`` are stored."""
        (n,) = self._one(
            "SELECT count(*) FROM trades WHERE venue = ? AND symbol = ? "
            "AND trade_id BETWEEN ? AND ?",
            (VENUE, SYMBOL, lo, hi),
        )
        return int(n)

    def holes(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The ranges of ids in ``[lo, hi]`` not stored, inclusive, ascending."""
        conn = self._connect()
        args = (VENUE, SYMBOL, lo, hi)
        where = "venue = ? AND symbol = ? AND trade_id BETWEEN ? AND ?"
        first, last = conn.execute(
            f"SELECT min(trade_id), max(trade_id) FROM trades WHERE {where}", args
        ).fetchone()
        if first is None:
            return [(lo, hi)]
        found: list[tuple[int, int]] = []
        if first > lo:
            found.append((lo, int(first) - 1))
        rows = conn.execute(
            "SELECT prev + 1, trade_id - 1 FROM (SELECT trade_id, "
            f"lag(trade_id) OVER (ORDER BY trade_id) AS prev FROM trades WHERE {where}) "
            "WHERE trade_id - prev > 1 ORDER BY trade_id",
            args,
        )
        found += [(int(a), int(b)) for a, b in rows]
        if last < hi:
            found.append((int(last) + 1, hi))
        return found

    def gaps(self) -> list[dict[str, Any]]:
        """The gaps table's rows of BTCUSDT's trades."""
        rows = self._connect().execute(
            "SELECT from_id, to_id, state, reason FROM gaps WHERE venue = ? AND symbol = ? "
            "AND stream = ? ORDER BY from_id",
            (VENUE, SYMBOL, CHECKPOINT_STREAM),
        )
        return [{"from_id": a, "to_id": b, "state": s, "reason": r} for a, b, s, r in rows]

    def file_bytes(self) -> int:
        """The database file's size with its write-ahead log (0 for what does not exist)."""
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += Path(f"{self.path}{suffix}").stat().st_size
            except OSError:
                pass
        return total

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


async def wait_stored(
    witness: Witness,
    lo: int,
    hi: int,
    *,
    stall_s: float,
    deadline: float | None = None,
    poll_s: float = 0.05,
) -> tuple[float, int]:
    """Until every id in ``[lo, hi]`` is stored: ``(time.time() when seen, count)``.

    Polls the highest stored id (cheap); the count once it reaches ``hi``.
    Returns early with the count so far at ``deadline`` (a Trio time).

    Raises:
        BenchError: no new trade was stored for ``stall_s`` seconds.
    """
    expected = hi - lo + 1
    seen: tuple[int | None, int | None] = (None, None)
    progress_at = trio.current_time()
    while True:
        top = await trio.to_thread.run_sync(witness.last_id, lo, hi)
        count: int | None = None
        if top == hi:  # then the holes below, if any, are being filled: count them
            count = await trio.to_thread.run_sync(witness.count, lo, hi)
            if count >= expected:
                return time.time(), count
        now = trio.current_time()
        if (top, count) != seen:
            seen, progress_at = (top, count), now
        if deadline is not None and now >= deadline:
            return time.time(), await trio.to_thread.run_sync(witness.count, lo, hi)
        if now - progress_at > stall_s:
            count = await trio.to_thread.run_sync(witness.count, lo, hi)
            raise BenchError(
                f"no trade stored for {stall_s:g} s: {count} of ids {lo}..{hi} stored, "
                f"highest {top}"
            )
        await trio.sleep(poll_s)
