"""The first two measurements of ``tradingd bench ingest``, and the sampling they share.

* :func:`raw_phase` — the raw client (:mod:`.ingest_raw`) receives ``N``
  frames sent flat out: the client's rate, and the simulator's sender
  capacity (frames per CPU-second of the simulator while it sent);
* :func:`tradingd_phase` — the real daemon captures ``M`` trades sent flat
  out: trades durably committed per second, counted from the store file,
  with its loop lag, memory, CPU and queue depth sampled meanwhile.

:class:`Sampler` reads the daemon's ``/status`` (and ``/health``) and
``/proc`` every :data:`~daemon.bench.ingest_setup.SAMPLE_INTERVAL_S`;
:func:`queue_series` and :func:`writer_stats` summarise what it read (the
overload phase, :mod:`.ingest_overload`, uses them too).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Final

import trio

from daemon.bench.common import BenchError, ratio
from daemon.bench.ingest_raw import RawClientProcess
from daemon.bench.ingest_setup import (
    SAMPLE_INTERVAL_S,
    SYMBOL,
    DaemonProcess,
    IngestOptions,
    SimBench,
    Witness,
    capture_section,
    queue_stats,
    wait_stored,
)
from daemon.bench.ingest_stats import lag_summary, summarize

__all__ = [
    "MB",
    "Sampler",
    "generate_bound_s",
    "queue_series",
    "raw_phase",
    "tradingd_phase",
    "writer_stats",
]

#: The sender must outrun the raw client by this much, or the baseline measures the simulator.
SENDER_HEADROOM: Final = 1.5
#: tradingd's rate over the raw client's rate the issue asks for.
TARGET_RATIO: Final = 0.8
#: Loop-lag p99 target during the tradingd phase (ms).
TARGET_LAG_P99_MS: Final = 5.0
#: Seconds of idle sampling before a phase: the daemon's CPU when not capturing.
BACKGROUND_S: Final = 1.0
#: Bound of the simulator's generation of one run (seconds per million trades, plus a base).
GENERATE_S_PER_MILLION: Final = 120.0
MB: Final = 1024 * 1024


def generate_bound_s(count: int) -> float:
    return 30.0 + GENERATE_S_PER_MILLION * count / 1_000_000


def _receive_bound_s(count: int) -> float:
    """Bound of the raw client's receiving: it would be broken well below 2,000 frames/s."""
    return 60.0 + count / 2000


# ------------------------------------------------------------------ sampling


class Sampler:
    """The daemon's ``/status`` (optionally ``/health``) and ``/proc`` figures, every 0.25 s."""

    def __init__(self, daemon: DaemonProcess, *, health: bool = False) -> None:
        self.daemon = daemon
        self.health = health
        self.rows: list[dict[str, Any]] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sample until cancelled (drift-free period); started after the first sample."""
        next_at = trio.current_time()
        await self._sample()
        task_status.started()
        while True:
            next_at += SAMPLE_INTERVAL_S
            await trio.sleep_until(next_at)
            await self._sample()

    async def _sample(self) -> None:
        daemon = self.daemon
        status = await daemon.status()
        memory = daemon.memory()
        md = capture_section(status)
        symbol = (md.get("symbols") or {}).get(SYMBOL) or {}
        row: dict[str, Any] = {
            "at": time.time(),
            "trades_queue": queue_stats(status, "marketdata.sim.trades").get("depth"),
            "trades_queue_capacity": queue_stats(status, "marketdata.sim.trades").get("capacity"),
            "stream_queue": queue_stats(status, "marketdata.sim.stream").get("depth"),
            "lag": status.get("loop_lag") or {},
            "rss": memory["VmRSS"],
            "hwm": memory["VmHWM"],
            "cpu_s": daemon.cpu_s(),
            "consumer_lag_ms": (symbol.get("lag_ms") or {}).get("last"),
            "connected": (md.get("feed") or {}).get("connected"),
        }
        if self.health:
            code, doc = await daemon.health()
            row["health"] = {
                "code": code,
                "level": doc.get("level"),
                "reasons": list(doc.get("reasons") or ()),
            }
        self.rows.append(row)

    def between(self, start: float, end: float) -> list[dict[str, Any]]:
        """The samples taken in ``[start, end]`` (wall clock)."""
        return [r for r in self.rows if start <= r["at"] <= end]


def queue_series(rows: Sequence[dict[str, Any]], start: float) -> dict[str, Any]:
    """The queue depths over a phase: a summary, and every sample.

    The samples are ``[t_s, trades queue depth, stream queue depth, RSS MB]``.
    """
    capacity = next((r["trades_queue_capacity"] for r in rows if r["trades_queue_capacity"]), None)
    return {
        "samples": len(rows),
        "interval_s": SAMPLE_INTERVAL_S,
        "trades_queue_capacity": capacity,
        "trades_queue": summarize((r["trades_queue"] for r in rows), 1),
        "stream_queue": summarize((r["stream_queue"] for r in rows), 1),
        "series_columns": ["t_s", "trades_queue", "stream_queue", "rss_mb"],
        "series": [
            [
                round(r["at"] - start, 2),
                r["trades_queue"],
                r["stream_queue"],
                round(r["rss"] / MB, 1),
            ]
            for r in rows
        ],
    }


async def _background_cpu_rate(daemon: DaemonProcess) -> float:
    """The daemon's CPU seconds per second while idle (sampling included)."""
    cpu, started = daemon.cpu_s(), time.perf_counter()
    await trio.sleep(BACKGROUND_S)
    return (daemon.cpu_s() - cpu) / (time.perf_counter() - started)


def writer_stats(status: dict[str, Any]) -> dict[str, Any]:
    md = capture_section(status)
    writer, feed = md.get("writer") or {}, md.get("feed") or {}
    return {
        "writer": {
            k: writer.get(k) for k in ("batches", "chunks_committed", "rows_inserted", "retries")
        },
        "feed": {
            k: feed.get(k)
            for k in (
                "connections",
                "disconnects",
                "put_waits",
                "put_wait_s_total",
                "max_queue_depth",
                "rest_failures",
            )
        },
    }


# ------------------------------------------------------------------ 1. the raw client


async def raw_phase(
    options: IngestOptions, bench: SimBench, url: str, workdir: Any
) -> dict[str, Any]:
    """The raw client receives ``raw_trades`` frames sent flat out; the sender's capacity."""
    count = options.raw_trades
    bound = _receive_bound_s(count)
    client = await RawClientProcess.start(url, count, workdir, timeout_s=bound)
    try:
        await bench.wait_connections(1)
        accepted = await bench.start(count, 0)
        if accepted["connections"] != 1:
            raise BenchError(f"the bench run has {accepted['connections']} connections, not 1")
        await bench.wait_sending(generate_bound_s(count))
        sim_cpu_before = bench.cpu_s()
        answer = await client.answer(bound + 10)
        state = await bench.wait_finished(30.0)
        sim_cpu = bench.cpu_s() - sim_cpu_before
    finally:
        await client.aclose()
    seconds = answer["last_s"] - answer["first_s"]
    rate = answer["trades"] / seconds if seconds > 0 else None
    # /proc counts CPU in ticks (10 ms): below one tick the capacity is a lower bound.
    tick = 0.01
    capacity = count / max(sim_cpu, tick)
    send_s = state.get("send_s")
    return {
        "trades": count,
        "frames": answer["frames"],
        "seconds": round(seconds, 4),
        "trades_per_s": None if rate is None else round(rate, 1),
        "cpu_s": round(answer["cpu_s"], 3),
        "cpu_us_per_frame": round(answer["cpu_s"] / answer["frames"] * 1e6, 2),
        "sender": {
            "generated_s": state.get("generated_s"),
            "send_s": send_s,
            "sent_per_s_wall": round(count / send_s, 1) if send_s else None,
            "cpu_s": round(sim_cpu, 3),
            "capacity_per_cpu_s": round(capacity, 1),
            "capacity_is_lower_bound": sim_cpu < tick,
            "capacity_over_raw": ratio(capacity, rate),
            "target_over_raw": SENDER_HEADROOM,
        },
    }


# ------------------------------------------------------------------ 2. tradingd end to end


async def tradingd_phase(
    options: IngestOptions, daemon: DaemonProcess, bench: SimBench, witness: Witness
) -> dict[str, Any]:
    """The daemon captures ``trades`` trades sent flat out; counted from its store file."""
    await daemon.wait_capturing()
    await bench.wait_connections(1)
    count = options.trades
    sampler = Sampler(daemon)
    async with trio.open_nursery() as nursery:
        await nursery.start(sampler.run)
        background = await _background_cpu_rate(daemon)
        memory_before = daemon.memory()
        cpu_before, cpu_clock = daemon.cpu_s(), time.perf_counter()
        posted_at = time.time()
        accepted = await bench.start(count, 0)
        if accepted["connections"] != 1:
            raise BenchError(f"the bench run has {accepted['connections']} connections, not 1")
        lo, hi = accepted["first_id"], accepted["last_id"]
        done_at, stored = await wait_stored(witness, lo, hi, stall_s=options.stall_s)
        cpu = daemon.cpu_s() - cpu_before
        cpu_wall = time.perf_counter() - cpu_clock
        memory_after = daemon.memory()
        nursery.cancel_scope.cancel()
    state = await bench.wait_finished(30.0)
    status = await daemon.status()
    # The sender starts once the trades are generated, which begins as the POST is
    # answered: from just before the POST, the start is never placed late.
    started_at = posted_at + float(state.get("generated_s") or 0.0)
    seconds = done_at - started_at
    rate = stored / seconds if seconds > 0 else None
    rows = sampler.between(started_at, done_at)
    lag = lag_summary([r["lag"] for r in rows])
    net_cpu = cpu - background * cpu_wall
    return {
        "trades": count,
        "first_id": lo,
        "last_id": hi,
        "stored": stored,
        "seconds": round(seconds, 3),
        "trades_per_s": None if rate is None else round(rate, 1),
        "sent_per_s_wall": round(count / state["send_s"], 1) if state.get("send_s") else None,
        "cpu_s": round(cpu, 3),
        "cpu_us_per_trade": round(cpu / stored * 1e6, 2),
        "cpu_us_per_trade_net": round(max(0.0, net_cpu) / stored * 1e6, 2),
        "background_cpu_share": round(background, 4),
        "cpu_share": round(cpu / cpu_wall, 3) if cpu_wall > 0 else None,
        "loop_lag": {**lag, "target_p99_ms": TARGET_LAG_P99_MS},
        "rss_mb_before": round(memory_before["VmRSS"] / MB, 1),
        "rss_mb_after": round(memory_after["VmRSS"] / MB, 1),
        "peak_rss_mb": round(memory_after["VmHWM"] / MB, 1),
        "queues": queue_series(rows, started_at),
        **writer_stats(status),
    }
