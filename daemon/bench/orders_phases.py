"""The three measurements of ``tradingd bench orders``, against a running daemon.

1. :func:`latency_phase` — one order at a time, the raw baseline of the run's
   order transport (run by the load generator, :mod:`daemon.bench.orders_baseline`)
   and tradingd in alternating blocks; tradingd's store work and CPU per order
   beside it.
2. :func:`entry_phase` — durable intents accepted per second by in-process
   tasks calling :meth:`~daemon.orders.service.OrdersService.submit`.
3. :func:`http_phase` — the same through ``POST /orders``, from the load
   generator's HTTP clients.

The two entry phases share :func:`_entry_measurement`: the submissions, then
the wait until the venue's answers to them are persisted (the send rate).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs
import trio

from daemon.bench.common import (
    BenchError,
    SimProcess,
    cpu_share,
    ms,
    process_cpu_s,
    quantiles,
    ratio,
    self_cpu_s,
)
from daemon.bench.orders_load import (
    SATURATED_RETRY_S,
    LoadGeneratorProcess,
    account_names,
    order_request,
)
from daemon.bench.orders_setup import BenchOptions, RunningDaemon
from daemon.bench.progress import PROGRESS
from daemon.orders.gateway import EntrySaturatedError
from daemon.orders.ids import derive_client_order_id
from daemon.orders.ledger import LatencyLog
from daemon.orders.service import Pipeline
from daemon.orders.state import OrderState

__all__ = ["entry_phase", "http_phase", "latency_phase", "one_tradingd_order"]

#: The target of the issue: tradingd's p50 latency at most this many times the baseline's.
TARGET_LATENCY_RATIO: Final = 1.3
#: The target of the issue: durable intents accepted per second, 8 in-process submitters.
TARGET_ACCEPTED_PER_S: Final = 2000.0

#: Bound of one order's venue answer in the latency phase.
ANSWER_TIMEOUT_S: Final = 15.0
#: Poll period while waiting for an answer to be persisted (an in-memory check).
#: It only sets the pause between sequential orders (the latency itself is the
#: pipeline's own record); coarse, so that the bench's wake-ups cost tradingd's
#: loop next to nothing.
ANSWER_POLL_S: Final = 0.005
#: Poll period while waiting for the send backlog to drain (a counter).
DRAIN_POLL_S: Final = 0.01
#: Every this many drain polls, also scan the live orders (the costly check).
DRAIN_SCAN_EVERY: Final = 100
#: States an order leaves only by the executor's or the tracker's work.
_IN_FLIGHT: Final = frozenset({OrderState.PENDING, OrderState.SENDING, OrderState.UNKNOWN})


def _in_flight(pipeline: Pipeline) -> int:
    return sum(1 for r in pipeline.ledger.records.values() if r.state in _IN_FLIGHT)


async def _wait_drained(pipeline: Pipeline, answered_target: int, budget_s: float) -> float:
    """Until the venue's answers are persisted up to ``answered_target``; returns the time.

    The answer counter is checked at every poll; the scan of every live order
    (which notices orders that ended without an answer to time, e.g. resolved
    after UNKNOWN) only every :data:`DRAIN_SCAN_EVERY` polls, so that the
    bench's waiting takes no CPU worth mentioning from the executor it waits for.
    """
    ledger = pipeline.ledger
    polls = 0
    try:
        with trio.fail_after(budget_s):
            # Polling: "all answered" is a condition over many orders, no event.
            while ledger.answer_latency.count < answered_target:
                polls += 1
                if polls % DRAIN_SCAN_EVERY == 0 and not (
                    _in_flight(pipeline) or pipeline.entry.queued
                ):
                    break
                await trio.sleep(DRAIN_POLL_S)
    except trio.TooSlowError:
        raise BenchError(
            f"{_in_flight(pipeline)} orders still in flight after {budget_s:g}s "
            f"(states: {pipeline.ledger.counts()})"
        ) from None
    return trio.current_time()


async def one_tradingd_order(
    running: RunningDaemon, loadgen: LoadGeneratorProcess, message_id: str
) -> tuple[float, float, float]:
    """POST one order and wait until its answer is persisted.

    The load generator's report of the 202 is read only after that: reading
    it in between would put the bench's own work into tradingd's event loop
    inside the window being measured (the baseline pays nothing like it).

    Returns:
        received → answer persisted, received → committed (both recorded by
        the pipeline), and the client's POST → 202 round trip (seconds).
    """
    pipeline = running.pipeline()
    ledger = pipeline.ledger
    answered_before = ledger.answer_latency.count
    committed_before = ledger.commit_latency.count
    request = order_request(message_id)
    coid = derive_client_order_id(
        message_id, request["account"], request["symbol"], prefix=running.service.settings.id_prefix
    )
    command = {"op": "post", "body": request}
    await loadgen.send(command)
    try:
        with trio.fail_after(ANSWER_TIMEOUT_S):
            # Polling: the pipeline has no per-order event; the poll period only
            # sets the pause before the next order, not the latency measured.
            while ledger.answer_latency.count == answered_before:
                record = ledger.get(coid)
                if record is not None and record.state is OrderState.UNKNOWN:
                    raise BenchError(f"order {coid}: outcome UNKNOWN (the venue did not answer)")
                if record is None and ledger.commit_latency.count > committed_before:
                    break  # terminal without an answer to time: reported below
                await trio.sleep(ANSWER_POLL_S)
    except trio.TooSlowError:
        reply = await loadgen.answer(command)
        if reply["status"] != 202:
            raise BenchError(
                f"POST /orders ({message_id}) answered {reply['status']}: {reply.get('error')}"
            ) from None
        raise BenchError(f"order {coid}: no venue answer within {ANSWER_TIMEOUT_S:g}s") from None
    reply = await loadgen.answer(command)
    if reply["status"] != 202:
        raise BenchError(
            f"POST /orders ({message_id}) answered {reply['status']}: {reply.get('error')}"
        )
    if reply["client_order_id"] != coid:
        raise BenchError(f"POST /orders ({message_id}) answered for {reply['client_order_id']}")
    if ledger.commit_latency.count != committed_before + 1:
        raise BenchError(f"order {coid}: its commit latency was not recorded")
    committed = ledger.commit_latency.values[-1]
    record = await running.service.get(coid)
    if record.state is not OrderState.ACCEPTED or ledger.answer_latency.count == answered_before:
        raise BenchError(
            f"order {coid} ended {record.state.value} (expected ACCEPTED: a LIMIT far below "
            f"the market); reason: {record.reject_reason}"
        )
    return ledger.answer_latency.values[-1], committed, float(reply["seconds"])


async def latency_phase(
    options: BenchOptions,
    running: RunningDaemon,
    loadgen: LoadGeneratorProcess,
    baseline_setup: Mapping[str, str],
    *,
    stages: bool = False,
) -> dict[str, Any]:
    """Sequential orders, baseline and tradingd in alternating blocks.

    ``stages`` (``--profile``): the baseline also times its steps
    (``baseline_parts.cpu_stages_us_per_order``).
    """
    incarnations = running.service.incarnations

    base, base_commits, base_posts = LatencyLog(), LatencyLog(), LatencyLog()
    base_statement_s = base_cpu_s = 0.0
    base_stages: dict[str, float] = {}
    answered, committed, client = LatencyLog(), LatencyLog(), LatencyLog()
    tradingd_use = _TradingdUse()

    async def baseline(start: int, count: int, prefix: str, measured: bool) -> None:
        nonlocal base_statement_s, base_cpu_s
        answer = await loadgen.call(
            {
                "op": "baseline",
                "prefix": prefix,
                "ids": list(range(start, start + count)),
                "stages": stages and measured,
                **baseline_setup,
            }
        )
        if measured:
            for key, seconds in answer.get("cpu_stages_s", {}).items():
                base_stages[key] = base_stages.get(key, 0.0) + float(seconds)
            base_cpu_s += float(answer["cpu_s"])
            base_statement_s += sum(float(s) for s in answer["commit_statement_seconds"])
            for log_, key in (
                (base, "seconds"),
                (base_commits, "commit_seconds"),
                (base_posts, "post_seconds"),
            ):
                for seconds in answer[key]:
                    log_.add(float(seconds))

    PROGRESS.phase("latency")
    await baseline(0, options.warmup, "bench-warm-", measured=False)
    for i in range(options.warmup):
        await one_tradingd_order(running, loadgen, f"warm-{i}")
    done = 0
    while done < options.latency_orders:
        count = min(options.block, options.latency_orders - done)
        await baseline(done, count, "bench-base-", measured=True)
        tradingd_use.start(running)
        for i in range(done, done + count):
            a, c, rtt = await one_tradingd_order(running, loadgen, f"lat-{i}")
            answered.add(a)
            committed.add(c)
            client.add(rtt)
        tradingd_use.stop(running)
        done += count
        PROGRESS.update(done, options.latency_orders)
    if running.service.incarnations != incarnations:
        raise BenchError("the order pipeline restarted during the latency phase (see the log)")
    base_q, td_q = quantiles(base), quantiles(answered)
    baseline_parts: dict[str, Any] = {
        "commits": quantiles(base_commits),
        "post": quantiles(base_posts),
        "mean_commit_ms": ms(base_statement_s / (2 * options.latency_orders)),
        "cpu_ms_per_order": ms(base_cpu_s / options.latency_orders),
    }
    if stages:
        baseline_parts["cpu_stages_us_per_order"] = {
            key: round(seconds / options.latency_orders * 1e6, 1)
            for key, seconds in base_stages.items()
        }
    return {
        "orders": options.latency_orders,
        "warmup": options.warmup,
        "block": options.block,
        "baseline": base_q,
        "tradingd": td_q,
        "ratio_p50": ratio(td_q["p50_ms"], base_q["p50_ms"]),
        "ratio_p99": ratio(td_q["p99_ms"], base_q["p99_ms"]),
        "target_ratio_p50": TARGET_LATENCY_RATIO,
        "baseline_parts": baseline_parts,
        "tradingd_received_to_committed": quantiles(committed),
        "tradingd_store": tradingd_use.report(options.latency_orders),
        "client_post_to_202": quantiles(client),
    }


class _TradingdUse:
    """tradingd's store work and CPU over the measured orders.

    The CPU is the bench process's (all threads) while only tradingd works in
    it — the admin API's HTTP handling of ``POST /orders`` included; the
    bench's own share is a poll of an in-memory counter and a pipe. The main
    (Trio) thread's share of it is measured apart (``time.thread_time``): the
    rest is the store lane's worker threads.
    """

    def __init__(self) -> None:
        self.writes = self.reads = 0
        self.commit_s = self.cpu_s = self.main_cpu_s = 0.0
        self._at: tuple[int, int, float, float, float] | None = None

    @staticmethod
    def _read(running: RunningDaemon) -> tuple[int, int, float, float, float]:
        store = running.daemon.store_service.owner
        if store is None:
            raise BenchError("tradingd's store is not open (see the log)")
        stats = store.stats
        return (
            stats.commits,
            stats.reads,
            stats.total_commit_s,
            sum(self_cpu_s()),
            time.thread_time(),
        )

    def start(self, running: RunningDaemon) -> None:
        self._at = self._read(running)

    def stop(self, running: RunningDaemon) -> None:
        assert self._at is not None
        now = self._read(running)
        self.writes += now[0] - self._at[0]
        self.reads += now[1] - self._at[1]
        self.commit_s += now[2] - self._at[2]
        self.cpu_s += now[3] - self._at[3]
        self.main_cpu_s += now[4] - self._at[4]
        self._at = None

    def report(self, orders: int) -> dict[str, Any]:
        return {
            "writes_per_order": round(self.writes / orders, 2),
            "reads_per_order": round(self.reads / orders, 2),
            "mean_commit_ms": ms(self.commit_s / self.writes) if self.writes else None,
            "cpu_ms_per_order": ms(self.cpu_s / orders),
            "main_thread_cpu_ms_per_order": ms(self.main_cpu_s / orders),
        }


@attrs.define
class _Counters:
    """Pipeline counters at one moment (deltas give a phase's numbers)."""

    created: int
    commits: int
    batched: int
    saturated: int
    sent: int
    answered: int
    rejected: int
    unknown: int

    @classmethod
    def read(cls, pipeline: Pipeline) -> _Counters:
        e = pipeline.entry.stats
        return cls(
            created=e.created,
            commits=e.commits,
            batched=e.batched_total,
            saturated=e.saturated,
            sent=pipeline.executor.sent,
            answered=pipeline.ledger.answer_latency.count,
            rejected=pipeline.ledger.rejected,
            unknown=pipeline.ledger.unknown,
        )

    def minus(self, other: _Counters) -> _Counters:
        return _Counters(
            *(a - b for a, b in zip(attrs.astuple(self), attrs.astuple(other), strict=True))
        )


async def _entry_measurement(
    running: RunningDaemon,
    sim: SimProcess,
    orders: int,
    drive: Callable[[], Any],
) -> tuple[dict[str, Any], Any]:
    """Run ``drive()`` (the submissions), then wait for the send backlog to drain.

    Returns:
        The phase's pipeline-side numbers, and what ``drive()`` returned.
    """
    pipeline = running.pipeline()
    incarnations = running.service.incarnations
    before = _Counters.read(pipeline)
    cpu_before, sim_before = sum(self_cpu_s()), process_cpu_s(sim.proc.pid)
    started = trio.current_time()
    driven = await drive()
    accepted_at = trio.current_time()
    cpu_after, sim_after = sum(self_cpu_s()), process_cpu_s(sim.proc.pid)
    during = _Counters.read(pipeline).minus(before)
    drained_at = await _wait_drained(
        pipeline, before.answered + during.created, budget_s=max(60.0, orders / 20)
    )
    total = _Counters.read(pipeline).minus(before)
    if running.service.incarnations != incarnations:
        raise BenchError("the order pipeline restarted during an entry phase (see the log)")
    wall = accepted_at - started
    drain = drained_at - started
    sim_cpu = None if sim_before is None or sim_after is None else sim_after - sim_before
    result = {
        "seconds": round(wall, 4),
        "commits": during.commits,
        "mean_batch": round(during.batched / during.commits, 2) if during.commits else None,
        "saturated": during.saturated,
        "sent_while_accepting": during.sent,
        "answered_while_accepting": during.answered,
        "sent": total.sent,
        "answered": total.answered,
        "rejected": total.rejected,
        "unknown": total.unknown,
        "drained_after_s": round(drain, 3),
        "send_rate_per_s": round(total.answered / drain, 1) if drain > 0 else None,
        "cpu_share_while_accepting": {
            "tradingd_process": cpu_share(cpu_after - cpu_before, wall),
            "simulator": cpu_share(sim_cpu, wall),
        },
    }
    return result, driven


async def entry_phase(
    options: BenchOptions, running: RunningDaemon, sim: SimProcess
) -> dict[str, Any]:
    """Durable intents accepted per second: tasks calling ``OrdersService.submit``."""
    service = running.service
    accounts = account_names(options.accounts)
    requests = [
        order_request(f"ent-{i}", accounts[i % len(accounts)]) for i in range(options.entry_orders)
    ]
    next_index = 0
    created = 0

    async def submitter() -> None:
        nonlocal next_index, created
        while next_index < len(requests):
            request = requests[next_index]
            next_index += 1
            while True:
                try:
                    result = await service.submit(request)
                except EntrySaturatedError:
                    await trio.sleep(SATURATED_RETRY_S)
                    continue
                break
            created += result.created

    async def drive() -> int:
        async with trio.open_nursery() as nursery:
            for _ in range(options.submitters):
                nursery.start_soon(submitter)
        return created

    result, _ = await _entry_measurement(running, sim, options.entry_orders, drive)
    wall = result["seconds"]
    return {
        "submitters": options.submitters,
        "accounts": options.accounts,
        "orders": options.entry_orders,
        "accepted": created,
        "accepted_per_s": round(created / wall, 1) if wall > 0 else None,
        "target_per_s": TARGET_ACCEPTED_PER_S,
        **result,
    }


async def http_phase(
    options: BenchOptions, running: RunningDaemon, sim: SimProcess, loadgen: LoadGeneratorProcess
) -> dict[str, Any]:
    """The same through ``POST /orders``, from the load generator's ``clients`` connections."""

    async def drive() -> dict[str, Any]:
        return await loadgen.call(
            {
                "op": "burst",
                "count": options.http_orders,
                "concurrency": options.clients,
                "prefix": "http-",
                "accounts": account_names(options.accounts),
            }
        )

    result, burst = await _entry_measurement(running, sim, options.http_orders, drive)
    if burst["accepted"] != options.http_orders:
        raise BenchError(
            f"POST /orders accepted {burst['accepted']} of {options.http_orders}: "
            f"statuses {burst['statuses']}, e.g. {burst['errors']}"
        )
    wall = float(burst["wall_s"])
    cpu = float(burst["cpu_user_s"]) + float(burst["cpu_sys_s"])
    return {
        "clients": options.clients,
        "accounts": options.accounts,
        "orders": options.http_orders,
        "accepted": burst["accepted"],
        "accepted_per_s": round(burst["accepted"] / wall, 1) if wall > 0 else None,
        "client_wall_s": round(wall, 4),
        "client_latency": burst["latency"],
        "retried_503": burst["retried_503"],
        "load_generator_cpu": {
            "user_s": round(float(burst["cpu_user_s"]), 3),
            "sys_s": round(float(burst["cpu_sys_s"]), 3),
            "wall_s": round(wall, 3),
            "share": cpu_share(cpu, wall),
        },
        **result,
    }
