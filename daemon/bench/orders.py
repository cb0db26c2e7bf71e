"""Order pipeline benchmark (not a test): ``tradingd bench orders``.

One run measures, against the bundled simulator and with the real daemon:

1. **Latency, one order at a time.** A raw baseline — a bare httpx2 POST of a
   signed new order to the simulator between two ``synchronous=FULL`` SQLite
   commits (WAL, one small INSERT each, in a worker thread) — against
   tradingd's own record of ``POST /orders`` received → the venue's answer
   persisted (``received_to_answer_persisted`` of the ledger). The two run in
   alternating blocks, so drift (a growing book, a growing WAL) hits both
   alike. Reported: p50/p99 and the ratios tradingd / baseline (target: p50
   at most 1.3 times), plus what each side spent per order (commits, CPU).
   tradingd does more durable work per order than the baseline: three FULL
   commits (intent, SENDING mark, answer) and a read against two commits.
2. **Durable intents accepted per second, in process**: 8 Trio tasks calling
   :meth:`OrdersService.submit` (the strategies' entry API), target ≥ 2000/s.
3. **The same through ``POST /orders``**: 8 keep-alive HTTP clients in a
   separate process, whose own CPU use is reported (on a 2-core machine the
   client can be the limit).

Where things run (said again in the output)::

    bench process (Trio)                 simulator process        load-generator process
    ├── tradingd: a real Daemon          python -m daemon sim     python -m daemon.bench.orders
    │   (admin API, store, venue link,   market paused            --load-generator
    │   order pipeline), state in a                               ├── baseline (1)
    │   temporary directory                                       └── HTTP clients (1, 3)
    └── in-process submitters (2)

The baseline runs in the load generator (:mod:`daemon.bench.orders_load`),
alone in its Trio loop, so it pays nothing for the daemon's tasks or its
instruments. Its orders use their own simulator API key, so tradingd's
reconciliation never sees them.

**Sending during the entry measurements.** The executor sends to the venue
while intents are accepted — what a daemon really does. One account's orders
are sent one at a time (docs/ARCHITECTURE.md §4, "Orders"), so the venue side
drains far slower than entry accepts; the bench raises
``orders.account_queue_capacity`` to hold a whole burst, so that acceptance
is measured rather than the queue's backpressure (which would answer 503 at
the send rate). The send rate (venue answers persisted per second until the
backlog is gone) is reported beside the acceptance rate.

Orders are LIMIT BUYs far below the market (nothing fills); risk limits are
off (0 = unlimited); the tracker's polling and the periodic reconciliation
are slowed to an hour, because the bench leaves thousands of resting orders
and polling them is not what is measured. Numbers vary between machines; the
ratios much less.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from daemon import config as configmod
from daemon.app import Daemon
from daemon.bench.common import (
    START_TIMEOUT_S,
    BenchError,
    SimProcess,
    cpu_pressure,
    cpu_share,
    fmt,
    load_average,
    machine_facts,
    ms,
    process_cpu_s,
    quantiles,
    ratio,
    self_cpu_s,
    write_private,
)
from daemon.bench.orders_load import (
    PRICE,
    QUANTITY,
    SATURATED_RETRY_S,
    SYMBOL,
    LoadGeneratorProcess,
    account_names,
    order_request,
    serve_load_generator,
)
from daemon.errors import ConfigError
from daemon.notify import Notifier
from daemon.orders.gateway import EntrySaturatedError
from daemon.orders.ids import derive_client_order_id
from daemon.orders.ledger import LatencyLog
from daemon.orders.service import OrdersService, Pipeline
from daemon.orders.state import OrderState

__all__ = [
    "UNLIMITED",
    "BenchOptions",
    "add_arguments",
    "daemon_config",
    "main",
    "measure",
    "render",
    "run",
    "sim_config",
]

#: The target of the issue: tradingd's p50 latency at most this many times the baseline's.
TARGET_LATENCY_RATIO: Final = 1.3
#: The target of the issue: durable intents accepted per second, 8 in-process submitters.
TARGET_ACCEPTED_PER_S: Final = 2000.0

VENUE: Final = "sim"

#: Limits of the simulator's rate-limit windows: high enough never to be met.
UNLIMITED: Final = 1_000_000_000
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
#: Default bound of stopping the daemon at the end.
STOP_TIMEOUT_S: Final = 60.0
#: States an order leaves only by the executor's or the tracker's work.
_IN_FLIGHT: Final = frozenset({OrderState.PENDING, OrderState.SENDING, OrderState.UNKNOWN})


@attrs.frozen(kw_only=True)
class BenchOptions:
    """What one run does; see :func:`add_arguments` for each option's meaning."""

    latency_orders: int = 300
    warmup: int = 20
    block: int = 25
    entry_orders: int = 2000
    http_orders: int = 1500
    submitters: int = 8
    clients: int = 8
    accounts: int = 1

    def __attrs_post_init__(self) -> None:
        for field in attrs.fields(BenchOptions):
            value = getattr(self, field.name)
            minimum = 0 if field.name == "warmup" else 1
            if value < minimum:
                flag = "--" + field.name.replace("_", "-")
                raise ValueError(f"{flag} must be >= {minimum}, got {value}")


# ------------------------------------------------------------------ the simulator process


def sim_config(tradingd_key: tuple[str, str], baseline_key: tuple[str, str]) -> str:
    """The simulator: BTCUSDT only, market paused, two accounts, rate limits out of reach."""
    accounts = "".join(
        f'[[accounts]]\napi_key = "{key}"\nsecret_key = "{secret}"\n'
        f'balances = {{ BTC = "1000", USDT = "{UNLIMITED}" }}\n\n'
        for key, secret in (tradingd_key, baseline_key)
    )
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
    return f'[market]\npaused = true\n\n[[symbols]]\nsymbol = "{SYMBOL}"\n\n{accounts}{limits}'


# ------------------------------------------------------------------ the daemon


def daemon_config(
    workdir: Path,
    rest_url: str,
    ws_url: str,
    options: BenchOptions,
    secret_files: Mapping[str, Path],
) -> str:
    """tradingd's configuration: the simulator as venue, risk off, a queue for a whole burst."""
    capacity = max(1000, options.entry_orders + 100, options.http_orders + 100)
    accounts = "".join(
        f'[accounts.{name}]\nvenue = "{VENUE}"\n\n' for name in account_names(options.accounts)
    )
    q = json.dumps  # a TOML basic string is a JSON string (paths, URLs)
    return f"""\
[daemon]
state_dir = {q(str(workdir / "state"))}
control_socket = {q(str(workdir / "control.sock"))}
shutdown_timeout_s = 30.0

[admin]
listen = "127.0.0.1:0"
token = {{ file = {q(str(secret_files["token"]))} }}

[orders]
account_queue_capacity = {capacity}
poll_interval_s = 3600.0
reconcile_interval_s = 3600.0

[risk]
max_orders_per_window = 0
max_open_orders = 0

[venues.{VENUE}]
rest_url = {q(rest_url)}
ws_url = {q(ws_url)}
api_key = {{ file = {q(str(secret_files["api_key"]))} }}
api_secret = {{ file = {q(str(secret_files["api_secret"]))} }}

{accounts}"""


@attrs.define
class RunningDaemon:
    """A real :class:`~daemon.app.Daemon` running in this process's Trio loop."""

    daemon: Daemon
    exited: trio.Event
    exit_code: list[int]

    @property
    def service(self) -> OrdersService:
        service = self.daemon.orders
        assert service is not None, "accounts are configured"
        return service

    def pipeline(self) -> Pipeline:
        if self.exited.is_set():
            raise BenchError(f"tradingd exited with {self.exit_code} (see its log)")
        pipeline = self.service.pipeline
        if pipeline is None:
            raise BenchError("the order pipeline is not running (see the log)")
        return pipeline

    async def wait_ready(self) -> Pipeline:
        """Until the daemon is READY, the venue answered and sending is enabled."""
        link = self.daemon.venue_links[VENUE]
        with trio.fail_after(START_TIMEOUT_S):
            while True:
                if self.exited.is_set():
                    raise BenchError(f"tradingd exited during start-up with {self.exit_code}")
                pipeline = self.service.pipeline
                if (
                    self.daemon.state == "running"
                    and self.daemon.admin_address is not None
                    and link.exchange_info is not None
                    and pipeline is not None
                    and pipeline.executor.sending_enabled.is_set()
                ):
                    return pipeline
                await trio.sleep(0.01)


# ------------------------------------------------------------------ phases


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


async def _one_tradingd_order(
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
) -> dict[str, Any]:
    """Sequential orders, baseline and tradingd in alternating blocks."""
    incarnations = running.service.incarnations

    base, base_commits, base_posts = LatencyLog(), LatencyLog(), LatencyLog()
    base_statement_s = base_cpu_s = 0.0
    answered, committed, client = LatencyLog(), LatencyLog(), LatencyLog()
    tradingd_use = _TradingdUse()

    async def baseline(start: int, count: int, prefix: str, measured: bool) -> None:
        nonlocal base_statement_s, base_cpu_s
        answer = await loadgen.call(
            {
                "op": "baseline",
                "prefix": prefix,
                "ids": list(range(start, start + count)),
                **baseline_setup,
            }
        )
        if measured:
            base_cpu_s += float(answer["cpu_s"])
            base_statement_s += sum(float(s) for s in answer["commit_statement_seconds"])
            for log_, key in (
                (base, "seconds"),
                (base_commits, "commit_seconds"),
                (base_posts, "post_seconds"),
            ):
                for seconds in answer[key]:
                    log_.add(float(seconds))

    await baseline(0, options.warmup, "bench-warm-", measured=False)
    for i in range(options.warmup):
        await _one_tradingd_order(running, loadgen, f"warm-{i}")
    done = 0
    while done < options.latency_orders:
        count = min(options.block, options.latency_orders - done)
        await baseline(done, count, "bench-base-", measured=True)
        tradingd_use.start(running)
        for i in range(done, done + count):
            a, c, rtt = await _one_tradingd_order(running, loadgen, f"lat-{i}")
            answered.add(a)
            committed.add(c)
            client.add(rtt)
        tradingd_use.stop(running)
        done += count
    if running.service.incarnations != incarnations:
        raise BenchError("the order pipeline restarted during the latency phase (see the log)")
    base_q, td_q = quantiles(base), quantiles(answered)
    return {
        "orders": options.latency_orders,
        "warmup": options.warmup,
        "block": options.block,
        "baseline": base_q,
        "tradingd": td_q,
        "ratio_p50": ratio(td_q["p50_ms"], base_q["p50_ms"]),
        "ratio_p99": ratio(td_q["p99_ms"], base_q["p99_ms"]),
        "target_ratio_p50": TARGET_LATENCY_RATIO,
        "baseline_parts": {
            "commits": quantiles(base_commits),
            "post": quantiles(base_posts),
            "mean_commit_ms": ms(base_statement_s / (2 * options.latency_orders)),
            "cpu_ms_per_order": ms(base_cpu_s / options.latency_orders),
        },
        "tradingd_received_to_committed": quantiles(committed),
        "tradingd_store": tradingd_use.report(options.latency_orders),
        "client_post_to_202": quantiles(client),
    }


class _TradingdUse:
    """tradingd's store work and CPU over the measured orders.

    The CPU is the bench process's (all threads) while only tradingd works in
    it — the admin API's HTTP handling of ``POST /orders`` included; the
    bench's own share is a poll of an in-memory counter and a pipe.
    """

    def __init__(self) -> None:
        self.writes = self.reads = 0
        self.commit_s = self.cpu_s = 0.0
        self._at: tuple[int, int, float, float] | None = None

    @staticmethod
    def _read(running: RunningDaemon) -> tuple[int, int, float, float]:
        store = running.daemon.store_service.store
        if store is None:
            raise BenchError("tradingd's store is not open (see the log)")
        stats = store.stats
        return stats.commits, stats.reads, stats.total_commit_s, sum(self_cpu_s())

    def start(self, running: RunningDaemon) -> None:
        self._at = self._read(running)

    def stop(self, running: RunningDaemon) -> None:
        assert self._at is not None
        now = self._read(running)
        self.writes += now[0] - self._at[0]
        self.reads += now[1] - self._at[1]
        self.commit_s += now[2] - self._at[2]
        self.cpu_s += now[3] - self._at[3]
        self._at = None

    def report(self, orders: int) -> dict[str, Any]:
        return {
            "writes_per_order": round(self.writes / orders, 2),
            "reads_per_order": round(self.reads / orders, 2),
            "mean_commit_ms": ms(self.commit_s / self.writes) if self.writes else None,
            "cpu_ms_per_order": ms(self.cpu_s / orders),
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


# ------------------------------------------------------------------ the run


async def measure(options: BenchOptions, workdir: Path) -> dict[str, Any]:
    """Start the simulator, tradingd and the load generator under ``workdir``; run every phase."""
    started = time.perf_counter()
    machine = machine_facts()
    tradingd_key = ("bench" + secrets.token_hex(12), secrets.token_hex(32))
    baseline_key = ("base" + secrets.token_hex(12), secrets.token_hex(32))
    secret_files = {
        "token": write_private(workdir / "admin-token", secrets.token_urlsafe(32)),
        "api_key": write_private(workdir / "api-key", tradingd_key[0]),
        "api_secret": write_private(workdir / "api-secret", tradingd_key[1]),
    }
    baseline_setup = {
        "credentials_file": str(
            write_private(
                workdir / "baseline-key.json",
                json.dumps({"api_key": baseline_key[0], "api_secret": baseline_key[1]}),
            )
        ),
        "db": str(workdir / "baseline.db"),
    }
    sim = await SimProcess.start(workdir, sim_config(tradingd_key, baseline_key))
    try:
        baseline_setup["sim_url"] = sim.rest_url
        config_path = workdir / "tradingd.toml"
        config_path.write_text(
            daemon_config(workdir, sim.rest_url, sim.ws_url, options, secret_files),
            encoding="utf-8",
        )
        config = configmod.load(config_path)
        problems = configmod.check_environment(config)
        if problems:
            raise BenchError("tradingd configuration: " + "; ".join(problems))
        daemon = Daemon(config, notifier=Notifier.from_environ({}), config_path=config_path)
        running = RunningDaemon(daemon, trio.Event(), [])

        async def run_daemon() -> None:
            try:
                running.exit_code.append(await daemon.run())
            finally:
                running.exited.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_daemon)
            try:
                await running.wait_ready()
                assert daemon.admin_address is not None
                host, port = daemon.admin_address
                loadgen = await LoadGeneratorProcess.start(
                    f"http://{host}:{port}", secret_files["token"], workdir
                )
                try:
                    latency = await latency_phase(options, running, loadgen, baseline_setup)
                    entry = await entry_phase(options, running, sim)
                    http = await http_phase(options, running, sim, loadgen)
                    loadgen_pid = loadgen.proc.pid
                finally:
                    await loadgen.aclose()
            finally:
                daemon.request_stop("bench finished")
                with trio.move_on_after(STOP_TIMEOUT_S) as scope:
                    await running.exited.wait()
                if scope.cancelled_caught:
                    nursery.cancel_scope.cancel()
        sim_pid = sim.proc.pid
    finally:
        await sim.aclose()
    return {
        "machine": {
            **machine,
            "load_average_1m_after": load_average(),
            "cpu_pressure_avg10_after": cpu_pressure(),
        },
        "setup": {
            "simulator": f"`python -m daemon sim` subprocess (pid {sim_pid}), {SYMBOL} only, "
            "market paused, rate limits out of reach",
            "tradingd": "a real Daemon (daemon.app) in the bench process's Trio loop: admin API "
            f"on {host}:{port}, SQLite store, venue link, order pipeline "
            f"({options.accounts} account(s), dispatch sharded); logging at WARNING",
            "load_generator": f"`python -m daemon.bench.orders --load-generator` subprocess "
            f"(pid {loadgen_pid}): the baseline and every HTTP client (httpx2, keep-alive)",
            "in_process_submitters": f"{options.submitters} Trio tasks in the bench process "
            "calling OrdersService.submit",
            "sending": "the executor sends to the simulator while intents are accepted; "
            "orders.account_queue_capacity holds a whole burst, so entry is not throttled "
            "to the send rate",
            "orders": f"LIMIT BUY {QUANTITY} {SYMBOL} @ {PRICE} GTC (rests, never fills); "
            "risk limits off",
            "workdir": str(workdir),
        },
        "latency": latency,
        "entry_in_process": entry,
        "entry_http": http,
        "bench_seconds": round(time.perf_counter() - started, 1),
    }


# ------------------------------------------------------------------ output


def render(report: Mapping[str, Any]) -> str:
    """The report as a plain-text table (``--json`` prints it as JSON instead)."""
    m, s = report["machine"], report["setup"]
    lat, ent, web = report["latency"], report["entry_in_process"], report["entry_http"]
    parts, store = lat["baseline_parts"], lat["tradingd_store"]
    lines = [
        "tradingd bench orders",
        f"machine: {m['usable_cores']} of {m['cores']} cores ({m['cpu_model']}), "
        f"{m['implementation']} {m['python']}, SQLite {m['sqlite']}, trio {m['trio']}, "
        f"httpx2 {m['httpx2']}, {m['platform']}",
        f"load average (1 min): {fmt(m['load_average_1m_before'], '.2f')} before, "
        f"{fmt(m['load_average_1m_after'], '.2f')} after (this includes the bench's own load); "
        f"CPU pressure (PSI some avg10) {fmt(m['cpu_pressure_avg10_before'], '.1f')}% before, "
        f"{fmt(m['cpu_pressure_avg10_after'], '.1f')}% after",
        "where:",
        *(f"  {key.replace('_', ' ')}: {text}" for key, text in s.items()),
        "",
        f"1. latency, one order at a time: {lat['orders']} orders each "
        f"(after {lat['warmup']} warm-up), alternating blocks of {lat['block']}",
        f"   {'':<56}{'p50 ms':>9}{'p99 ms':>9}",
    ]

    def row(label: str, q: Mapping[str, Any]) -> str:
        return f"   {label:<56}{fmt(q['p50_ms']):>9}{fmt(q['p99_ms']):>9}"

    lines += [
        row("baseline: signed httpx2 POST + 2 FULL commits", lat["baseline"]),
        row("tradingd: POST /orders received -> answer persisted", lat["tradingd"]),
        f"   {'ratio tradingd / baseline':<56}{fmt(lat['ratio_p50'], '.2f') + 'x':>9}"
        f"{fmt(lat['ratio_p99'], '.2f') + 'x':>9}   (target p50 <= {lat['target_ratio_p50']}x)",
        row(
            "tradingd: received -> intent committed (the 202)",
            lat["tradingd_received_to_committed"],
        ),
        row("client: POST /orders -> 202 (load generator)", lat["client_post_to_202"]),
        f"   baseline parts: 2 commits (thread calls) p50 "
        f"{fmt(parts['commits']['p50_ms'])} ms, POST p50 {fmt(parts['post']['p50_ms'])} ms; "
        f"mean COMMIT statement {fmt(parts['mean_commit_ms'])} ms; CPU "
        f"{fmt(parts['cpu_ms_per_order'])} ms/order",
        f"   tradingd store per order: {store['writes_per_order']} write transactions, "
        f"{store['reads_per_order']} reads; mean COMMIT statement "
        f"{fmt(store['mean_commit_ms'])} ms; CPU {fmt(store['cpu_ms_per_order'])} ms/order",
        "",
        f"2. durable intents accepted/s, {ent['submitters']} in-process submitters "
        f"(OrdersService.submit), {ent['orders']} orders, {ent['accounts']} account(s)",
        f"   accepted {ent['accepted']} in {ent['seconds']:.3f} s = "
        f"{fmt(ent['accepted_per_s'], '.0f')}/s   (target >= {ent['target_per_s']:.0f}/s)",
    ]

    def common(r: Mapping[str, Any], process: str) -> list[str]:
        cpu = r["cpu_share_while_accepting"]
        return [
            f"   group commits {r['commits']} (mean batch {fmt(r['mean_batch'], '.1f')}), "
            f"refused as saturated and retried {r['saturated']}",
            f"   sending meanwhile: {r['sent_while_accepting']} sent, "
            f"{r['answered_while_accepting']} answers persisted while accepting; all "
            f"{r['answered']} answered after {r['drained_after_s']:.2f} s = "
            f"{fmt(r['send_rate_per_s'], '.0f')}/s (rejected {r['rejected']}, "
            f"unknown {r['unknown']})",
            f"   CPU while accepting (cores busy): {process} "
            f"{fmt(cpu['tradingd_process'], '.2f')}, simulator {fmt(cpu['simulator'], '.2f')}",
        ]

    lines += common(ent, "tradingd process (submitters included)")
    gen = web["load_generator_cpu"]
    lines += [
        "",
        f"3. durable intents accepted/s through POST /orders, {web['clients']} HTTP clients "
        f"in the load generator, {web['orders']} orders",
        f"   accepted {web['accepted']} in {web['client_wall_s']:.3f} s = "
        f"{fmt(web['accepted_per_s'], '.0f')}/s; client latency p50 "
        f"{fmt(web['client_latency']['p50_ms'])} ms, p99 "
        f"{fmt(web['client_latency']['p99_ms'])} ms",
        f"   load generator CPU: {gen['user_s']:.2f} s user + {gen['sys_s']:.2f} s sys over "
        f"{gen['wall_s']:.2f} s wall = {fmt(gen['share'], '.2f')} of a core",
        *common(web, "tradingd process"),
        "",
        f"bench time {report['bench_seconds']:.1f} s",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------ command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every ``tradingd bench orders`` option to ``parser``."""
    parser.description = (__doc__ or "").split("\n\n")[0]
    defaults = BenchOptions()
    add = parser.add_argument
    add(
        "--latency-orders",
        type=int,
        default=defaults.latency_orders,
        metavar="N",
        help=f"sequential orders measured, baseline and tradingd each ({defaults.latency_orders})",
    )
    add(
        "--warmup",
        type=int,
        default=defaults.warmup,
        metavar="N",
        help=f"unmeasured first orders of each ({defaults.warmup})",
    )
    add(
        "--block",
        type=int,
        default=defaults.block,
        metavar="N",
        help=f"orders per alternating block ({defaults.block})",
    )
    add(
        "--entry-orders",
        type=int,
        default=defaults.entry_orders,
        metavar="N",
        help=f"orders of the in-process throughput phase ({defaults.entry_orders})",
    )
    add(
        "--http-orders",
        type=int,
        default=defaults.http_orders,
        metavar="N",
        help=f"orders of the POST /orders throughput phase ({defaults.http_orders})",
    )
    add(
        "--submitters",
        type=int,
        default=defaults.submitters,
        metavar="N",
        help=f"in-process submitter tasks ({defaults.submitters})",
    )
    add(
        "--clients",
        type=int,
        default=defaults.clients,
        metavar="N",
        help=f"concurrent HTTP clients ({defaults.clients})",
    )
    add(
        "--accounts",
        type=int,
        default=defaults.accounts,
        metavar="N",
        help="accounts the throughput orders are spread over; one account's orders are sent "
        f"one at a time ({defaults.accounts})",
    )
    add(
        "--dir",
        metavar="PATH",
        help="where the temporary state directory goes (the disk the fsyncs hit)",
    )
    add("--keep", action="store_true", help="keep the state directory (logs, databases) afterwards")
    add("--json", action="store_true", help="print the report as JSON instead of a table")
    add(
        "--log-level",
        default="warning",
        choices=("debug", "info", "warning", "error"),
        help="level of tradingd's log, written to the state directory (warning)",
    )
    # The load generator process (started by the bench itself).
    add("--load-generator", metavar="ADMIN_URL", help=argparse.SUPPRESS)
    add("--token-file", metavar="PATH", help=argparse.SUPPRESS)


def _options(args: argparse.Namespace) -> BenchOptions:
    return BenchOptions(
        latency_orders=args.latency_orders,
        warmup=args.warmup,
        block=args.block,
        entry_orders=args.entry_orders,
        http_orders=args.http_orders,
        submitters=args.submitters,
        clients=args.clients,
        accounts=args.accounts,
    )


def _load_generator_main(args: argparse.Namespace) -> int:
    if not args.token_file:
        print("--load-generator needs --token-file", file=sys.stderr)
        return 2
    token = Path(args.token_file).read_text(encoding="utf-8").strip()
    trio.run(serve_load_generator, args.load_generator, token)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tradingd bench orders`` with ``argv`` (the options after ``orders``)."""
    parser = argparse.ArgumentParser(prog="tradingd bench orders")
    add_arguments(parser)
    return run(parser.parse_args(argv), parser)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the bench with parsed options (``tradingd bench orders`` calls this)."""
    if args.load_generator:
        return _load_generator_main(args)
    try:
        options = _options(args)
    except ValueError as exc:
        parser.error(str(exc))
    workdir = Path(tempfile.mkdtemp(prefix="tradingd-bench-", dir=args.dir))
    root = logging.getLogger()
    handler = logging.FileHandler(workdir / "tradingd.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(getattr(logging, args.log_level.upper()))
    keep = args.keep
    try:
        report = trio.run(measure, options, workdir)
    except (BenchError, ConfigError, OSError) as exc:
        keep = True
        print(f"tradingd bench orders: {exc}", file=sys.stderr)
        print(f"(state, logs kept in {workdir})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        keep = True
        print(f"interrupted (state kept in {workdir})", file=sys.stderr)
        return 130
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if not args.keep:
        report["setup"]["workdir"] += " (removed)"
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
