"""The overload phase of ``tradingd bench ingest``: a sender far faster than the writer.

The simulator's bench mode paces its frames at ``overload_factor`` (10)
times the rate the tradingd phase measured, so the daemon's queues fill and
backpressure reaches the socket, and keeps that up for about ``overload_s``
(60 s): :class:`_Sender` posts a run sized for the whole time at the
measured rate, and whenever a run has been written out with time left, a
top-up run sized by the rate the daemon commits *now* (the ids continue
without a break: the market is paused). Nothing is generated that is not
sent, so there is no unsent tail for the daemon to fetch afterwards.

Reported: RSS growth (the daemon's queues are bounded; SQLite's page cache
grows with the file up to its size, shown beside it), trades lost — every
id from the tradingd phase's first to the last sent, after a bounded wait
for backfill and gap repair, is stored or inside a gap the daemon recorded
(:func:`~daemon.bench.ingest_stats.gap_accounting`) — and what ``/health``
said meanwhile.
"""

from __future__ import annotations

import math
import time
from typing import Any, Final

import attrs
import trio

from daemon.bench.ingest_phases import (
    MB,
    Sampler,
    generate_bound_s,
    queue_series,
    writer_stats,
)
from daemon.bench.ingest_setup import (
    SAMPLE_INTERVAL_S,
    DaemonProcess,
    IngestOptions,
    SimBench,
    Witness,
    capture_section,
    wait_stored,
)
from daemon.bench.ingest_stats import gap_accounting, health_summary, lag_summary, summarize

__all__ = ["overload_phase"]

#: RSS growth allowed under overload (MB).
TARGET_RSS_GROWTH_MB: Final = 20.0
#: No top-up run for less time than this.
MIN_TOPUP_S: Final = 2.0
#: How often the sender's state is read while it writes.
POLL_S: Final = 0.1


@attrs.define
class _Sender:
    """The overload's bench runs: the first sized by the tradingd phase's rate, then top-ups."""

    bench: SimBench
    witness: Witness
    rate: float
    budget: int
    runs: list[dict[str, Any]] = attrs.Factory(list)
    first_id: int = 0
    last_id: int = 0
    started_at: float | None = None  # wall clock: the first frame of the first run
    stopped: bool = False

    async def drive(self, first_count: int, length_s: float, deadline: float) -> None:
        """Post runs until ``length_s`` is over (or the budget is spent, or ``deadline``)."""
        count = first_count
        end: float | None = None
        while count >= 1:
            posted_at = time.time()  # generation starts as the POST is answered
            accepted = await self.bench.start(count, round(self.rate, 1))
            if not self.runs:
                self.first_id = accepted["first_id"]
            self.last_id = accepted["last_id"]
            self.budget -= count
            state = await self.bench.wait_sending(generate_bound_s(count))
            if self.started_at is None:
                self.started_at = posted_at + float(state.get("generated_s") or 0.0)
                end = trio.current_time() + length_s
            state = await self._wait_written(deadline)
            self.runs.append(
                {
                    "trades": count,
                    "first_id": accepted["first_id"],
                    "sent": sum(state.get("sent") or ()),
                    "send_s": state.get("send_s"),
                    "generated_s": state.get("generated_s"),
                }
            )
            assert end is not None
            remaining = end - trio.current_time()
            if self.stopped or remaining < MIN_TOPUP_S or self.budget <= 0:
                return
            assert self.started_at is not None
            stored = await trio.to_thread.run_sync(self.witness.count, self.first_id, self.last_id)
            rate_now = stored / max(1e-3, time.time() - self.started_at)
            count = min(math.ceil(rate_now * remaining), self.budget)

    async def _wait_written(self, deadline: float) -> dict[str, Any]:
        """Until the current run has written every frame; stopped at ``deadline``."""
        with trio.move_on_at(deadline):
            return await self.bench.wait_finished(math.inf, poll_s=POLL_S)
        self.stopped = True
        return await self.bench.stop()

    @property
    def sent(self) -> int:
        return sum(run["sent"] for run in self.runs)


async def overload_phase(
    options: IngestOptions,
    daemon: DaemonProcess,
    bench: SimBench,
    witness: Witness,
    *,
    writer_rate: float,
    sender_capacity: float | None,
    first_id: int,
) -> dict[str, Any]:
    """The sender paced at ``overload_factor`` x the daemon's rate; nothing may be lost.

    ``first_id`` is the tradingd phase's first trade: the check of lost
    trades covers every id from it to the last one sent.
    """
    rate = options.overload_factor * writer_rate
    capped = sender_capacity is not None and rate > sender_capacity
    if capped:
        assert sender_capacity is not None
        rate = sender_capacity
    count = max(1, min(math.ceil(writer_rate * options.overload_s), options.overload_max_trades))
    sender = _Sender(bench, witness, rate, options.overload_max_trades)
    status_before = await daemon.status()
    sampler = Sampler(daemon, health=True)
    deadline = trio.current_time() + 3 * options.overload_s + 60.0
    async with trio.open_nursery() as nursery:
        await nursery.start(sampler.run)
        memory_before = daemon.memory()
        file_before = witness.file_bytes()
        await sender.drive(count, options.overload_s, deadline)
        lo, hi = sender.first_id, sender.last_id
        if sender.stopped:  # frames never sent: the check ends at the last one written
            hi = lo + sender.sent - 1
        done_at, stored = await wait_stored(
            witness, lo, hi, stall_s=options.stall_s, deadline=deadline
        )
        memory_after = daemon.memory()
        nursery.cancel_scope.cancel()
    assert sender.started_at is not None
    started_at = sender.started_at
    rows = sampler.between(started_at, done_at)
    repair = await _wait_repaired(witness, first_id, hi, options.repair_wait_s)
    gaps = await trio.to_thread.run_sync(witness.gaps)
    status_after = await daemon.status()
    rss_max = max([r["rss"] for r in rows] + [memory_after["VmRSS"]])
    seconds = done_at - started_at
    feed_before = (capture_section(status_before).get("feed") or {}).get("connections")
    feed_after = (capture_section(status_after).get("feed") or {}).get("connections")
    return {
        "trades": hi - lo + 1,
        "runs": sender.runs,
        "first_id": lo,
        "last_id": hi,
        "rate_asked_per_s": round(rate, 1),
        "rate_capped_at_sender_capacity": capped,
        "factor": options.overload_factor,
        "target_s": options.overload_s,
        "seconds": round(seconds, 3),
        "stored_in_time": stored,
        "sender_stopped_at_deadline": sender.stopped,
        "sent": sender.sent,
        "trades_per_s": round(stored / seconds, 1) if seconds > 0 else None,
        "rss_mb_before": round(memory_before["VmRSS"] / MB, 1),
        "rss_mb_max": round(rss_max / MB, 1),
        "rss_growth_mb": round((rss_max - memory_before["VmRSS"]) / MB, 1),
        "target_rss_growth_mb": TARGET_RSS_GROWTH_MB,
        "peak_rss_mb": round(memory_after["VmHWM"] / MB, 1),
        "store_file_mb_before": round(file_before / MB, 1),
        "store_file_mb_after": round(witness.file_bytes() / MB, 1),
        "store_page_cache_max_mb": witness.page_cache_max_mb,
        "loop_lag": lag_summary([r["lag"] for r in rows]),
        "consumer_lag_ms": summarize((r["consumer_lag_ms"] for r in rows), 1),
        "stream_reconnects": None
        if feed_before is None or feed_after is None
        else feed_after - feed_before,
        "health": health_summary([_health_read(r, started_at) for r in rows], SAMPLE_INTERVAL_S),
        "queues": queue_series(rows, started_at),
        "checked_ids": [first_id, hi],
        "repair": repair,
        "gaps": gap_accounting(repair.pop("holes_list"), gaps),
        **writer_stats(status_after),
    }


def _health_read(row: dict[str, Any], start: float) -> dict[str, Any]:
    return {"t_s": row["at"] - start, **row["health"]}


async def _wait_repaired(witness: Witness, lo: int, hi: int, wait_s: float) -> dict[str, Any]:
    """Until ``[lo, hi]`` has no hole, or ``wait_s`` passed: the holes before and after."""
    holes = await trio.to_thread.run_sync(witness.holes, lo, hi)
    before = holes
    started = time.perf_counter()
    with trio.move_on_after(wait_s):
        while holes:
            await trio.sleep(0.5)
            holes = await trio.to_thread.run_sync(witness.holes, lo, hi)
    return {
        "holes_before": len(before),
        "missing_before": sum(b - a + 1 for a, b in before),
        "waited_s": round(time.perf_counter() - started, 2) if before else 0.0,
        "wait_bound_s": wait_s,
        "holes_list": holes,
    }
