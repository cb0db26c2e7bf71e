"""What the benchmarks share: process start-up, CPU accounting, machine facts, formatting.

* **Process start-up**: :class:`SimProcess` starts ``python -m daemon sim`` on
  a given configuration and reads the URLs it prints;
  :func:`open_module_process` starts ``python -m MODULE`` with its output in a
  log file (the simulator, the load generator); :func:`kill` reaps a
  subprocess for sure; :func:`write_private` writes a file only this user can
  read; :func:`read_line` reads one line of a line-framed pipe.
* **CPU accounting**: :func:`self_cpu_s` (this process, all threads),
  :func:`process_cpu_s` (another process, from ``/proc``), :func:`cpu_share`
  (cores busy over a wall time).
* **Machine facts**: :func:`machine_facts`, :func:`load_average`,
  :func:`cpu_pressure` — what the numbers were measured on, and how busy it was.
* **Report formatting**: :func:`ms`, :func:`ratio`, :func:`fmt`, :func:`quantiles`.
"""

from __future__ import annotations

import os
import platform
import resource
import sqlite3
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import httpx2
import trio

from daemon.housekeeping import PRIVATE_FILE_MODE
from daemon.orders.ledger import LatencyLog

__all__ = [
    "START_TIMEOUT_S",
    "BenchError",
    "SimProcess",
    "cpu_pressure",
    "cpu_share",
    "fmt",
    "kill",
    "load_average",
    "machine_facts",
    "ms",
    "open_module_process",
    "process_cpu_s",
    "quantiles",
    "ratio",
    "read_line",
    "self_cpu_s",
    "write_private",
]

#: Bound of starting a subprocess (the simulator, a load generator) or the daemon.
START_TIMEOUT_S: Final = 60.0
#: The simulator's CLI prints this line once it listens.
SIM_URLS_PREFIX: Final = "tradingd sim: REST "


class BenchError(Exception):
    """The benchmark could not measure what it should (not a slow result: a broken run)."""


# ------------------------------------------------------------------ report formatting


def ms(seconds: float | None) -> float | None:
    """Seconds as milliseconds rounded to the microsecond (``None`` stays ``None``)."""
    return None if seconds is None else round(seconds * 1000, 3)


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` rounded, or ``None`` when either is missing or ``b`` is zero."""
    return None if a is None or not b else round(a / b, 3)


def fmt(value: Any, spec: str = ".3f") -> str:
    """``value`` formatted with ``spec``, ``-`` for ``None`` (a table cell)."""
    return "-" if value is None else format(value, spec)


def quantiles(values: LatencyLog) -> dict[str, Any]:
    """p50/p99 in milliseconds, by the same rule the ledger uses for ``/status``."""
    return {
        "count": len(values.values),
        "p50_ms": ms(values.quantile(0.5)),
        "p99_ms": ms(values.quantile(0.99)),
    }


# ------------------------------------------------------------------ CPU accounting


def self_cpu_s() -> tuple[float, float]:
    """User and system CPU seconds of this process (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of another process (Linux ``/proc``), or ``None``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    # Fields after "(comm)": state is field 3, utime 14 and stime 15.
    fields = text.rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_share(cpu_s: float | None, wall_s: float) -> float | None:
    """Cores busy on average: CPU seconds over wall seconds (``None`` if unknown)."""
    return None if cpu_s is None or wall_s <= 0 else round(cpu_s / wall_s, 3)


# ------------------------------------------------------------------ machine facts


def machine_facts() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "trio": trio.__version__,
        "httpx2": httpx2.__version__,
        "platform": platform.platform(),
        "load_average_1m_before": load_average(),
        "cpu_pressure_avg10_before": cpu_pressure(),
    }


def cpu_pressure() -> float | None:
    """Linux PSI: % of the last 10 s in which some runnable task waited for a CPU."""
    try:
        text = Path("/proc/pressure/cpu").read_text(encoding="ascii")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("some "):
            for field in line.split()[1:]:
                key, _, value = field.partition("=")
                if key == "avg10":
                    return float(value)
    return None


def load_average() -> float | None:
    """The 1-minute load average: other work on the machine skews every number."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - not available
        return None


# ------------------------------------------------------------------ process start-up


def write_private(path: Path, text: str) -> Path:
    """Write a file only this user can read (secrets, even throwaway ones)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


async def read_line(stream: trio.abc.ReceiveStream, buffer: bytearray) -> bytes | None:
    """One ``\\n``-terminated line from ``stream`` (``None`` at a clean end of stream)."""
    while True:
        end = buffer.find(b"\n")
        if end >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            return line
        chunk = await stream.receive_some(65536)
        if not chunk:
            if buffer:
                raise BenchError(f"stream ended inside a line ({len(buffer)} bytes)")
            return None
        buffer += chunk


async def open_module_process(
    argv: Sequence[str],
    *,
    log_path: Path,
    cwd: Path,
    pipes: bool = False,
    env: Mapping[str, str] | None = None,
) -> trio.Process:
    """``python -m ARGV`` in ``cwd`` (this interpreter), its stderr written to ``log_path``.

    With ``pipes``, its stdin and stdout are pipes (a line-framed command
    channel, see :func:`read_line`); without, stdin is ``/dev/null`` and stdout
    goes to ``log_path`` as well. ``env`` replaces the environment (default: inherited).
    """
    with log_path.open("wb") as log:
        return await trio.lowlevel.open_process(
            [sys.executable, "-m", *argv],
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else log,
            stderr=log,
            cwd=cwd,
            env=env,
        )


async def kill(proc: trio.Process) -> None:
    """SIGKILL ``proc`` and reap it (bounded; shielded from cancellation)."""
    with trio.CancelScope(shield=True):
        proc.kill()
        with trio.move_on_after(10):
            await proc.wait()


@attrs.define
class SimProcess:
    """``python -m daemon sim`` as a subprocess, and where it listens."""

    proc: trio.Process
    rest_url: str
    ws_url: str

    @classmethod
    async def start(cls, workdir: Path, config: str) -> SimProcess:
        """Start the simulator on ``config`` (TOML text, written 0600 to ``workdir``).

        Waits until it prints its URLs; killed if it does not within
        :data:`START_TIMEOUT_S`. Its output goes to ``workdir/sim.log``.
        """
        config_path = write_private(workdir / "sim.toml", config)
        log_path = workdir / "sim.log"
        proc = await open_module_process(
            [
                "daemon",
                "sim",
                "--config",
                str(config_path),
                "--rest-port",
                "0",
                "--ws-port",
                "0",
                "--log-level",
                "warning",
            ],
            log_path=log_path,
            cwd=workdir,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            with trio.fail_after(START_TIMEOUT_S):
                while True:
                    text = log_path.read_text(encoding="utf-8", errors="replace")
                    for line in text.splitlines():
                        if line.startswith(SIM_URLS_PREFIX):
                            rest, _, ws = line[len(SIM_URLS_PREFIX) :].partition("  streams ")
                            return cls(proc, rest.strip(), ws.strip())
                    if proc.poll() is not None:
                        raise BenchError(f"the simulator exited with {proc.returncode}:\n{text}")
                    await trio.sleep(0.05)
        except BaseException:
            await kill(proc)
            raise

    async def aclose(self) -> None:
        """SIGTERM, then SIGKILL if it is still running after 10 s."""
        with trio.CancelScope(shield=True):
            self.proc.terminate()
            with trio.move_on_after(10):
                await self.proc.wait()
            if self.proc.returncode is None:
                await kill(self.proc)
