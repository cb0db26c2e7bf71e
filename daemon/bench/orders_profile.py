"""``tradingd bench orders --profile``: where tradingd's CPU per order goes, stage by stage.

After the latency phase, :func:`profile_phase` sends the same sequential
orders once more (``POST /orders`` from the load generator, one at a time)
with :mod:`cProfile` enabled in the bench process's main thread — the Trio
thread tradingd runs in — and :func:`stage_budget` turns the profile into a
CPU budget per order: one row per stage of an order's way through tradingd,

    admin HTTP parse → validation and risk → group commit (and the thread hop)
    → executor and ledger → venue client: build, sign, rate limiter
    → HTTP client → response decode → persist the answer

plus the rows every order also pays for (Trio's scheduling, tradingd's
background instruments, the bench's own polling) and "other" (what no rule
maps), whose top functions are listed.

**How functions map to stages** (:data:`RULES`, first match wins). A
function is mapped by its module (``daemon.http`` → admin HTTP, ``httpx2`` →
HTTP client, …) or by module and name (``OrderLedger.apply_report`` →
persist the answer, ``EntryCommitter._risk`` → validation and risk). Shared
code — the store's main-thread side, ``trio.to_thread``, h11 (the admin
server's and the HTTP client's), :mod:`json`, :mod:`logging`, attrs, the
rest of the standard library — is *generic*: its own time goes to whoever
called it, split by the profile's caller edges (the time spent in the
function from each caller), and through a generic caller on to that
caller's callers, split by cumulative time. So the store's ``COMMIT`` call
from the entry writer counts as the group commit, the same call from the
ledger's answer as persisting the answer. The split is as exact as one
level of caller information allows: a generic helper shared by two stages
gives each its overall share, not the share of one context.

**What the numbers are.** cProfile (only the main thread) inflates
Python-heavy code — every call and return pays the profiler's hook — so
the profiled µs per order are larger than the real ones, most for code
made of many small calls. The table therefore gives each stage's share
of the profiled main-thread total, and that share applied to the main
thread's *unprofiled* CPU per order (measured with ``time.thread_time``
over the latency phase's tradingd blocks) as the best estimate of its real
cost. The store lane's worker threads (SQLite statements, the fsyncs'
system time) are not profiled: their CPU is the process's minus the main
thread's, measured the same way, and is its own row. cProfile is timed
by the thread's CPU clock (``time.thread_time_ns``), so time blocked in
``epoll``, preempted or waiting for the GIL is not counted; the profiler's
calibrated cost of one call (:func:`calibrate`) is taken off each
function's own time, which removes part of the inflation, not all of it.

**"Other"** is the time of tasks whose root coroutine no rule maps: the
split stops at the task step (a coroutine's ``send``) and names the root,
so the table lists *which* task it was, not a leaf like ``len``.

**The baseline's stages** are timed directly in the load generator
(:class:`~daemon.bench.orders_baseline.StageClock`: ``time.thread_time``
around each step, no profiler), so they are real CPU.
"""

from __future__ import annotations

import cProfile
import pstats
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from daemon.bench.common import BenchError, self_cpu_s
from daemon.bench.orders_load import LoadGeneratorProcess
from daemon.bench.orders_phases import one_tradingd_order
from daemon.bench.orders_setup import BenchOptions, RunningDaemon

__all__ = [
    "BASELINE_STAGES",
    "GENERIC",
    "RULES",
    "STAGES",
    "Rule",
    "StageProfiler",
    "calibrate",
    "check_complete",
    "classify",
    "module_of",
    "profile_phase",
    "render_profile",
    "stage_budget",
]

#: The stages of one order, in the order it passes them, and the rows every
#: order also pays for; ``(key, label)``.
STAGES: Final = (
    ("admin_http", "admin HTTP: parse, auth, route, answer (h11, daemon.http/admin)"),
    ("validation_risk", "validation and risk (intent, ids, risk checks)"),
    ("group_commit", "group commit and thread hop (main-thread side)"),
    ("executor_ledger", "executor, dispatch, ledger"),
    ("venue_client", "venue client: build, sign, rate limiter, clock"),
    ("http_client", "HTTP client: httpx2/httpcore2/h11 (request build, URL parse)"),
    ("decode", "response decode (JSON -> order report)"),
    ("persist_answer", "persist the answer (ledger apply, store call)"),
    ("user_stream", "user data stream: order events over WebSocket (read, decode, apply)"),
    ("event_loop", "Trio scheduling (run loop, epoll, task steps)"),
    ("background", "background: health, metrics, instruments"),
    ("bench", "the bench's own polling and pipe (not tradingd)"),
    ("other", "other: tasks no rule maps (by task root below)"),
)
STAGE_KEYS: Final = tuple(key for key, _ in STAGES)

#: The baseline's stages (load generator, ``time.thread_time`` around each step).
BASELINE_STAGES: Final = (
    ("commit_intent", "commit 1: thread hop (main-thread side)"),
    ("build_sign", "build + sign the request"),
    ("http_client", "HTTP client (request build, URL parse, send, receive)"),
    ("decode", "response decode (JSON)"),
    ("commit_answer", "commit 2: thread hop (main-thread side)"),
    ("worker_threads", "worker thread: SQLite, fsync (not profiled)"),
)

#: The stage a baseline row is compared with.
BASELINE_PEERS: Final = {
    "commit_intent": "group_commit",
    "build_sign": "venue_client",
    "http_client": "http_client",
    "decode": "decode",
    "commit_answer": "persist_answer",
}

#: Not a stage: its time goes to the caller (see the module docstring).
GENERIC: Final = "generic"


@attrs.frozen
class Rule:
    """Functions of ``module`` (a dotted prefix), or only those named in ``functions``."""

    stage: str
    module: str
    functions: frozenset[str] | None = None

    def matches(self, module: str, function: str) -> bool:
        if not (module == self.module or module.startswith(self.module + ".")):
            return False
        return self.functions is None or function in self.functions


def _fns(*names: str) -> frozenset[str]:
    return frozenset(names)


#: Function → stage, first match wins; what no rule names is generic.
RULES: Final = (
    # The bench itself (polling the ledger, the pipe to the load generator).
    Rule("bench", "daemon.bench"),
    # Persisting the venue's answer: the ledger's apply (the store call under it is generic).
    Rule(
        "persist_answer",
        "daemon.orders.ledger",
        _fns("apply_report", "answered", "_remember", "_follow_risk", "_release"),
    ),
    Rule("persist_answer", "daemon.orders.ledger", _fns("report_fill_records", "fill_records")),
    Rule("persist_answer", "daemon.orders.records", _fns("from_order_report")),
    # The user data stream: the order's events (executionReport) read, decoded, applied.
    Rule("user_stream", "daemon.venues.binance.userstream"),
    Rule("user_stream", "daemon.venues.binance.wssession"),
    Rule("user_stream", "daemon.venues.binance.codec.userdata"),
    Rule("user_stream", "daemon.venues.binance.codec.wsapi"),
    Rule("user_stream", "daemon.orders.userstream"),
    Rule("venue_client", "daemon.venues.binance.wsapi"),
    # Validation and risk.
    Rule("validation_risk", "daemon.orders.entry", _fns("submit")),
    Rule("validation_risk", "daemon.orders.entry_commit", _fns("_risk")),
    Rule("validation_risk", "daemon.orders.intent"),
    Rule("validation_risk", "daemon.orders.ids"),
    Rule("validation_risk", "daemon.orders.gateway"),
    Rule("validation_risk", "daemon.risk"),
    Rule("validation_risk", "daemon.model.orders", _fns("is_valid_client_order_id")),
    # Group commit: the entry's writer and committer.
    Rule("group_commit", "daemon.orders.entry"),
    Rule("group_commit", "daemon.orders.entry_commit"),
    # Executor, dispatch, ledger (what is left of it).
    Rule("executor_ledger", "daemon.orders.executor"),
    Rule("executor_ledger", "daemon.orders.dispatch"),
    Rule("executor_ledger", "daemon.orders.dispatch_queues"),
    Rule("executor_ledger", "daemon.orders.dispatch_workers"),
    Rule("executor_ledger", "daemon.orders.ledger"),
    Rule("executor_ledger", "daemon.orders.holds"),
    Rule("executor_ledger", "daemon.orders.pipeline"),
    # The venue client: its HTTP layer's glue, the codec's request side, limits, clock.
    Rule("http_client", "daemon.venues.binance.http", _fns("_exchange", "_read_body", "send")),
    Rule("http_client", "daemon.venues.binance.http", _fns("_call_when_sent", "trace")),
    Rule("venue_client", "daemon.venues.binance.http"),
    Rule("venue_client", "daemon.venues.binance.rest"),
    Rule("venue_client", "daemon.venues.binance.admission"),
    Rule("venue_client", "daemon.venues.binance.clock"),
    Rule("venue_client", "daemon.venues.binance.codec.requests"),
    Rule("venue_client", "daemon.venues.binance.codec.signing"),
    Rule("venue_client", "daemon.venues.binance.codec.ratelimits"),
    Rule("venue_client", "daemon.resilience.ratelimit"),
    Rule("venue_client", "daemon.resilience.breaker"),
    Rule("venue_client", "hmac"),
    Rule("venue_client", "urllib.parse", _fns("quote", "quote_from_bytes")),
    # Response decode.
    Rule("decode", "daemon.venues.binance.codec.decoding"),
    Rule("decode", "daemon.venues.binance.codec.orders"),
    Rule("decode", "daemon.venues.binance.codec.errors"),
    Rule("decode", "daemon.venues.binance.codec"),
    Rule("decode", "daemon.decode"),
    # The HTTP client (h11 is generic: the admin server uses it too).
    Rule("http_client", "httpx2"),
    Rule("http_client", "httpcore2"),
    # The admin API.
    Rule("admin_http", "daemon.http"),
    Rule("admin_http", "daemon.admin"),
    # Trio's scheduling: the run loop and its I/O manager (the rest of trio is generic).
    Rule("event_loop", "trio._core._run", _fns("unrolled_run", "run", "get_events")),
    Rule("event_loop", "trio._core._io_epoll"),
    Rule("event_loop", "trio._core._instrumentation"),
    # Background work every order shares the loop with.
    Rule("background", "daemon.health"),
    Rule("background", "daemon.metrics"),
    Rule("background", "daemon.app_metrics"),
    Rule("background", "daemon.housekeeping"),
    Rule("background", "daemon.marketdata"),
)

#: Builtins that step a task: time arriving through them comes from a task
#: root no rule maps ("other", listed by that root).
TASK_STEPS: Final = frozenset(
    {
        "<method 'send' of 'coroutine' objects>",
        "<method 'throw' of 'coroutine' objects>",
        "<method 'send' of 'generator' objects>",
    }
)
#: Prefix of the pseudo-stages of "other", one per task root.
OTHER_ROOT: Final = "other|"

#: Deepest chain of generic callers followed before giving up ("other").
MAX_DEPTH: Final = 64
#: Functions listed under "other" and among the top by own time.
TOP_N: Final = 15

Func = tuple[str, int, str]


def module_of(filename: str) -> str:
    """The dotted module of a profiled code object's file (``"~"`` for builtins).

    ``…/site-packages/httpx2/_urlparse.py`` → ``httpx2._urlparse``;
    ``…/daemon/orders/ledger.py`` → ``daemon.orders.ledger``;
    ``…/lib/python3.11/json/encoder.py`` → ``json.encoder``.
    """
    if filename == "~" or not filename.endswith(".py"):
        return "~" if filename == "~" else filename
    path = filename[: -len(".py")].replace("\\", "/")
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in path:
            path = path.rsplit(marker, 1)[1]
            break
    else:
        parts = path.split("/")
        if "daemon" in parts:
            path = "/".join(parts[len(parts) - 1 - parts[::-1].index("daemon") :])
        elif any(p.startswith("python3") for p in parts):
            index = max(i for i, p in enumerate(parts) if p.startswith("python3"))
            path = "/".join(parts[index + 1 :])
    module = path.strip("/").replace("/", ".")
    return module.removesuffix(".__init__")


def classify(module: str, function: str) -> str:
    """The stage of one function by :data:`RULES` (:data:`GENERIC` when none names it)."""
    # Methods show as "Class.method" only in newer Pythons: match the plain name too.
    plain = function.rsplit(".", 1)[-1]
    for rule in RULES:
        if rule.matches(module, function) or rule.matches(module, plain):
            return rule.stage
    return GENERIC


def describe(func: Func) -> str:
    """``module:line(function)`` of a profile entry, as pstats prints it."""
    filename, line, name = func
    module = module_of(filename)
    return name if module == "~" else f"{module}:{line}({name})"


class _Attribution:
    """Each function's own time, split over stages through its generic callers."""

    def __init__(self, stats: Mapping[Func, Any]) -> None:
        self.stats = stats
        self._through: dict[Func, dict[str, float]] = {}
        self._open: set[Func] = set()

    def stage_of(self, func: Func) -> str:
        return classify(module_of(func[0]), func[2])

    def own(self, func: Func) -> dict[str, float]:
        """Where ``func``'s own time goes: its stage, or its callers' split by own time."""
        stage = self.stage_of(func)
        if stage != GENERIC:
            return {stage: 1.0}
        callers = self.stats[func][4]
        return self._mix(func, {c: edge[2] for c, edge in callers.items()}, callers, depth=0)

    def _through_caller(self, func: Func, depth: int) -> dict[str, float]:
        """Where time arriving at ``func`` from its callees goes."""
        stage = self.stage_of(func)
        if stage != GENERIC:
            return {stage: 1.0}
        cached = self._through.get(func)
        if cached is not None:
            return cached
        if depth > MAX_DEPTH or func in self._open or func not in self.stats:
            return {"other": 1.0}
        self._open.add(func)
        try:
            callers = self.stats[func][4]
            result = self._mix(func, {c: edge[3] for c, edge in callers.items()}, callers, depth)
        finally:
            self._open.discard(func)
        self._through[func] = result  # a cycle cut short above is an approximation kept
        return result

    def _mix(
        self, func: Func, weights: dict[Func, float], callers: Mapping[Func, Any], depth: int
    ) -> dict[str, float]:
        """Split over ``func``'s callers: a task step means ``func`` is an unmapped task root."""
        if not callers:
            return {OTHER_ROOT + describe(func): 1.0}
        live = {c: w for c, w in weights.items() if c not in self._open}
        total = sum(live.values())
        if total <= 0:  # no time on the edges: split by the number of calls
            live = {c: float(callers[c][0]) for c in live}
            total = sum(live.values())
        if total <= 0:
            return {"other": 1.0}
        mixed: dict[str, float] = defaultdict(float)
        for caller, weight in live.items():
            if caller[0] == "~" and caller[2] in TASK_STEPS:
                mixed[OTHER_ROOT + describe(func)] += weight / total
                continue
            for stage, share in self._through_caller(caller, depth + 1).items():
                mixed[stage] += share * weight / total
        return dict(mixed)


def stage_budget(stats: Mapping[Func, Any], bias_s: float = 0.0) -> dict[str, Any]:
    """Seconds per stage (own time, attributed) and the functions behind "other".

    ``stats`` is :attr:`pstats.Stats.stats`: ``func → (cc, nc, tt, ct, callers)``;
    ``bias_s`` (:func:`calibrate`) is taken off each function's own time per
    call (never below zero). ``raw_s`` is the total before that.
    """
    attribution = _Attribution(stats)
    stages: dict[str, float] = dict.fromkeys(STAGE_KEYS, 0.0)
    raw = 0.0
    other: dict[str, float] = defaultdict(float)
    own: list[tuple[float, Func, str]] = []
    for func, (_cc, nc, recorded, _ct, _callers) in stats.items():
        raw += recorded
        tt = max(0.0, recorded - nc * bias_s)
        if tt <= 0:
            continue
        split = attribution.own(func)
        for key, share in split.items():
            if key.startswith(OTHER_ROOT):
                other[key.removeprefix(OTHER_ROOT)] += tt * share
            elif key == "other":
                other[describe(func)] += tt * share
            stages["other" if key.startswith(OTHER_ROOT) else key] += tt * share
        main = max(split, key=split.__getitem__)
        own.append((tt, func, "other" if main.startswith(OTHER_ROOT) else main))
    own.sort(reverse=True)
    return {
        "stages": stages,
        "raw_s": raw,
        "other": sorted(other.items(), key=lambda kv: -kv[1]),
        "own": own,
    }


def _empty() -> None:
    pass


def calibrate(calls: int = 20_000) -> float:
    """What the profiler adds to the recorded time of one call (seconds; CPU timer).

    ``calls`` calls of an empty function, timed with ``time.thread_time``
    unprofiled and as the profiler records them: the difference per call is
    subtracted, times each function's calls, from its own time
    (:func:`stage_budget`), as :meth:`profile.Profile.calibrate` does for
    the pure-Python profiler.
    """
    fn = _empty
    started = time.thread_time()
    for _ in range(calls):
        fn()
    plain = time.thread_time() - started
    profiler = _new_profiler()
    profiler.enable()
    for _ in range(calls):
        fn()
    profiler.disable()
    recorded = sum(entry[2] for entry in pstats.Stats(profiler).stats.values())  # type: ignore[attr-defined]
    return max(0.0, (recorded - plain) / calls)


def _new_profiler() -> cProfile.Profile:
    """cProfile timed by the thread's CPU clock: preemption and GIL waits are not counted."""
    return cProfile.Profile(time.thread_time_ns, 1e-9)


@attrs.define
class StageProfiler:
    """cProfile over tradingd's blocks of the profiled pass, and the CPU beside it."""

    profiler: cProfile.Profile = attrs.field(factory=_new_profiler)
    main_cpu_s: float = 0.0
    process_cpu_s: float = 0.0
    bias_s: float = 0.0
    _at: tuple[float, float] | None = None

    def start(self) -> None:
        self._at = (time.thread_time(), sum(self_cpu_s()))
        self.profiler.enable()

    def stop(self) -> None:
        self.profiler.disable()
        assert self._at is not None
        self.main_cpu_s += time.thread_time() - self._at[0]
        self.process_cpu_s += sum(self_cpu_s()) - self._at[1]
        self._at = None

    def dump(self, path: Path) -> None:
        """The raw profile, for ``python -m pstats`` (kept with ``--keep``)."""
        self.profiler.dump_stats(str(path))

    def report(
        self,
        orders: int,
        unprofiled: Mapping[str, float],
        baseline: Mapping[str, float],
    ) -> dict[str, Any]:
        """The ``"profile"`` object of the report.

        Args:
            orders: Orders sent under the profiler.
            unprofiled: tradingd's CPU over the latency phase, seconds per
                order: ``process``, ``main_thread``.
            baseline: The baseline's CPU per order by stage (µs, keys of
                :data:`BASELINE_STAGES`) and ``process``.
        """
        if orders <= 0:
            raise BenchError("no order was profiled")
        stats = pstats.Stats(self.profiler).stats  # type: ignore[attr-defined]
        budget = stage_budget(stats, self.bias_s)
        stages: dict[str, float] = budget["stages"]
        total = sum(stages.values())
        main = float(unprofiled["main_thread"])
        workers = max(0.0, float(unprofiled["process"]) - main)

        def us(seconds: float) -> float:
            return round(seconds / orders * 1e6, 1)

        def per_order_us(seconds: float) -> float:
            return round(seconds * 1e6, 1)

        rows = []
        for key, label in STAGES:
            share = stages[key] / total if total > 0 else 0.0
            rows.append(
                {
                    "stage": key,
                    "label": label,
                    "profiled_us_per_order": us(stages[key]),
                    "share_pct": round(100 * share, 1),
                    "estimated_us_per_order": per_order_us(share * main),
                    "baseline_us_per_order": _baseline_peer(key, baseline),
                }
            )
        rows.append(
            {
                "stage": "store_worker_threads",
                "label": "store lane worker threads: SQLite, fsync (not profiled)",
                "profiled_us_per_order": None,
                "share_pct": None,
                "estimated_us_per_order": per_order_us(workers),
                "baseline_us_per_order": float(baseline["worker_threads"]),
            }
        )
        calls = {func: entry[1] for func, entry in stats.items()}
        cumulative = {describe(func): entry[3] for func, entry in stats.items()}
        return {
            "orders": orders,
            "profiler": "cProfile timed by the thread CPU clock, the main (Trio) thread only",
            "note": "cProfile inflates Python-heavy code (every call pays its hook): the "
            "profiled us are larger than the real ones, even after taking off the calibrated "
            "cost of a call; 'estimated' applies each stage's share to the main thread's "
            "unprofiled CPU per order",
            "bias_us_per_call": round(self.bias_s * 1e6, 3),
            "profiled_raw_us_per_order": us(budget["raw_s"]),
            "profiled_total_us_per_order": us(total),
            "profiled_pass_cpu_us_per_order": {
                "main_thread": us(self.main_cpu_s),
                "process": us(self.process_cpu_s),
            },
            "unprofiled_cpu_us_per_order": {
                "process": per_order_us(float(unprofiled["process"])),
                "main_thread": per_order_us(main),
                "worker_threads": per_order_us(workers),
            },
            "stages": rows,
            "baseline": {
                "stages": [
                    {
                        "stage": key,
                        "label": label,
                        "us_per_order": float(baseline[key]),
                    }
                    for key, label in BASELINE_STAGES
                ],
                "process_cpu_us_per_order": float(baseline["process"]),
            },
            "other_top": [
                {
                    "function": name,
                    "us_per_order": us(seconds),
                    "cumulative_us_per_order": us(cumulative.get(name, 0.0)),
                }
                for name, seconds in budget["other"][:TOP_N]
            ],
            "own_time_top": [
                {
                    "function": describe(func),
                    "stage": stage,
                    "us_per_order": us(tt),
                    "calls_per_order": round(calls[func] / orders, 2),
                }
                for tt, func, stage in budget["own"][:TOP_N]
            ],
            "mapping": _mapping(),
        }


def _baseline_peer(stage: str, baseline: Mapping[str, float]) -> float | None:
    for base_key, peer in BASELINE_PEERS.items():
        if peer == stage:
            return float(baseline[base_key])
    return None


def _mapping() -> dict[str, list[str]]:
    """:data:`RULES` as text, per stage (for the JSON report)."""
    mapping: dict[str, list[str]] = defaultdict(list)
    for rule in RULES:
        names = "" if rule.functions is None else ":" + ",".join(sorted(rule.functions))
        mapping[rule.stage].append(rule.module + names)
    mapping[GENERIC].append(
        "everything else (store main-thread side, trio, h11, json, logging, attrs, stdlib): "
        "its own time goes to its callers"
    )
    return dict(mapping)


def render_profile(profile: Mapping[str, Any]) -> list[str]:
    """The ``--profile`` block of the table."""
    cpu, base = profile["unprofiled_cpu_us_per_order"], profile["baseline"]
    pass_cpu = profile["profiled_pass_cpu_us_per_order"]
    lines = [
        f"4. CPU per order by stage (--profile: {profile['orders']} more sequential orders "
        "under cProfile, after the latency phase)",
        f"   {profile['note']}.",
        f"   unprofiled CPU/order: tradingd {cpu['process']:.0f} us (main thread "
        f"{cpu['main_thread']:.0f}, store worker threads {cpu['worker_threads']:.0f}); "
        f"baseline {base['process_cpu_us_per_order']:.0f} us",
        f"   profiled pass: main thread {pass_cpu['main_thread']:.0f} us/order CPU; "
        f"recorded {profile['profiled_raw_us_per_order']:.0f} us, "
        f"{profile['profiled_total_us_per_order']:.0f} us after taking off "
        f"{profile['bias_us_per_call']:.2f} us per call",
        f"   {'stage':<64}{'prof us':>9}{'share':>8}{'est us':>9}{'base us':>9}",
    ]
    for row in profile["stages"]:
        prof = row["profiled_us_per_order"]
        share = row["share_pct"]
        peer = row["baseline_us_per_order"]
        lines.append(
            f"   {row['label']:<64}"
            f"{'' if prof is None else f'{prof:.0f}':>9}"
            f"{'' if share is None else f'{share:.1f}%':>8}"
            f"{row['estimated_us_per_order']:>9.0f}"
            f"{'' if peer is None else f'{peer:.0f}':>9}"
        )
    lines.append("   baseline stages (thread_time, not profiled):")
    for row in base["stages"]:
        lines.append(f"     {row['label']:<62}{row['us_per_order']:>9.0f} us")
    lines.append("   top functions by own time (profiled us/order, calls/order, stage):")
    for row in profile["own_time_top"][:10]:
        lines.append(
            f"     {row['us_per_order']:>7.1f} {row['calls_per_order']:>6.1f}x  "
            f"{row['stage']:<16}{row['function']}"
        )
    if profile["other_top"]:
        lines.append("   inside 'other', by task root (us/order attributed, cumulative us/order):")
        for row in profile["other_top"][:10]:
            lines.append(
                f"     {row['us_per_order']:>7.1f} {row['cumulative_us_per_order']:>8.1f}  "
                f"{row['function']}"
            )
    return lines


def check_complete(profile: Mapping[str, Any], keys: Sequence[str] = STAGE_KEYS) -> None:
    """Raise :class:`BenchError` unless every stage row is there (used by the tests too)."""
    present = [row["stage"] for row in profile["stages"]]
    if present[: len(keys)] != list(keys):
        raise BenchError(f"profile stages {present} do not match {list(keys)}")


async def profile_phase(
    options: BenchOptions,
    running: RunningDaemon,
    loadgen: LoadGeneratorProcess,
    latency: Mapping[str, Any],
    dump_to: Path | None = None,
) -> dict[str, Any]:
    """``latency_orders`` more sequential orders under cProfile; the ``"profile"`` object.

    Run after :func:`~daemon.bench.orders_phases.latency_phase` (with
    ``stages=True``), whose report gives the unprofiled CPU per order and
    the baseline's stages. The profiler runs over blocks of ``block``
    orders, as the latency phase measures them; ``dump_to`` receives the raw
    profile (``python -m pstats``).
    """
    incarnations = running.service.incarnations
    profiler = StageProfiler(bias_s=calibrate())
    done = 0
    while done < options.latency_orders:
        count = min(options.block, options.latency_orders - done)
        profiler.start()
        try:
            for i in range(done, done + count):
                await one_tradingd_order(running, loadgen, f"prof-{i}")
        finally:
            profiler.stop()
        done += count
    if running.service.incarnations != incarnations:
        raise BenchError("the order pipeline restarted during the profiled pass (see the log)")
    if dump_to is not None:
        profiler.dump(dump_to)
    store, parts = latency["tradingd_store"], latency["baseline_parts"]
    unprofiled = {
        "process": float(store["cpu_ms_per_order"]) / 1000,
        "main_thread": float(store["main_thread_cpu_ms_per_order"]) / 1000,
    }
    baseline = parts.get("cpu_stages_us_per_order")
    if baseline is None:
        raise BenchError("the latency phase did not time the baseline's stages")
    return profiler.report(done, unprofiled, baseline)
