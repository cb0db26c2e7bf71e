"""``tradingd torture``: the command line of the torture runner.

``tradingd torture [--seed N] [--profile ci|soak] [--duration S] [--scenarios N]
[--report PATH] [--json PATH] [--dir DIR] [--keep]`` runs scenarios
(:func:`daemon.torture.scenario.run_scenario`) with seeds ``N, N+1, ...``
until the profile's count or ``--duration`` seconds is reached (a scenario
that started is finished), then the negative control; prints one line per
scenario and a summary; writes the results as JSON (``--json``) and the
markdown report (``--report``, :mod:`daemon.torture.report`).

Exit status: 0 when every scenario held every invariant and the negative
control saw its duplicate; 1 otherwise (the failing scenarios' seeds and
directories are printed: ``--seed N --scenarios 1`` replays one); 2 for a
usage error; 130 when interrupted (Ctrl-C, SIGTERM, SIGHUP: the programs are
stopped and the tmpfs unmounted, the work directory kept). Work directories
are removed after a success unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import trio

from daemon.torture.record import ScenarioResult
from daemon.torture.report import render
from daemon.torture.scenario import can_mount, run_scenario
from daemon.torture.setup import FAULT_KINDS, PROFILES

__all__ = ["add_arguments", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--seed", type=int, default=1, help="seed of the first scenario (the next: +1, ...)")
    add("--profile", choices=sorted(PROFILES), default="ci", help="ci (bounded) or soak")
    add(
        "--duration",
        type=float,
        default=None,
        metavar="S",
        help="start no new scenario after S seconds (soak default: 1800)",
    )
    add("--scenarios", type=int, default=None, metavar="N", help="run N scenarios at most")
    add(
        "--fault-phase",
        type=float,
        default=None,
        metavar="S",
        help="seconds of faults per scenario (default: the profile's)",
    )
    add(
        "--faults",
        metavar="KIND,...",
        help="draw only these fault kinds (e.g. disk-full,ip-ban-418); default: all. Kinds: "
        + ", ".join(FAULT_KINDS),
    )
    add("--no-negative-control", action="store_true", help="skip the negative control")
    add("--report", metavar="PATH", help="write the markdown report (e.g. docs/RELIABILITY.md)")
    add("--json", metavar="PATH", help="write every scenario's result as JSON")
    add("--dir", metavar="DIR", help="where the work directories go (default: a temporary one)")
    add("--keep", action="store_true", help="keep the work directories even after a success")


def _line(r: ScenarioResult) -> str:
    verdict = "ok" if r.ok else "FAILED"
    what = "negative control" if r.kind == "negative-control" else f"scenario {r.index}"
    extra = ""
    if r.kind == "negative-control":
        seen = [v for v in r.violations if v.invariant == "exactly-once"]
        extra = f"; duplicate detected: {'yes' if seen else 'NO'}"
    return (
        f"{what} seed={r.seed}: {verdict} in {r.elapsed_s:.0f}s, {len(r.events)} faults, "
        f"{r.kills} kills, {len(r.restarts)} restarts, "
        f"{r.counts.get('accepted by a client', 0)} intents accepted, "
        f"{len(r.violations)} violations{extra}"
    )


async def _run(args: argparse.Namespace, base: Path) -> list[ScenarioResult]:
    profile = PROFILES[args.profile]
    limit = args.scenarios if args.scenarios is not None else profile.scenarios
    duration = args.duration
    if duration is None and profile.name == "soak":
        duration = 1800.0
    started = time.monotonic()
    results: list[ScenarioResult] = []
    for index in range(limit):
        if duration is not None and results and time.monotonic() - started >= duration:
            break
        seed = args.seed + index
        result = await run_scenario(
            profile,
            seed,
            index,
            base / f"s{index}-seed{seed}",
            fault_phase_s=args.fault_phase,
            only=_only(args.faults),
        )
        results.append(result)
        print(_line(result), flush=True)
        if result.error or result.violations:
            for v in result.violations:
                print(f"  {v.invariant}: {v.detail}", flush=True)
            if result.error:
                print(f"  error: {result.error[-1500:]}", flush=True)
    if profile.negative_control and not args.no_negative_control:
        result = await run_scenario(
            profile,
            args.seed,
            len(results),
            base / "negative-control",
            negative=True,
            fault_phase_s=12.0,
        )
        results.append(result)
        print(_line(result), flush=True)
        if result.error:
            print(f"  error: {result.error[-1500:]}", flush=True)
    return results


async def _run_until_signalled(args: argparse.Namespace, base: Path) -> list[ScenarioResult] | None:
    """:func:`_run`, cancelled cleanly by SIGTERM or SIGHUP (``None`` then).

    Cancelled, a scenario still stops its programs and unmounts its tmpfs (its
    clean-up is shielded), as it does on Ctrl-C.
    """
    outcome: list[list[ScenarioResult]] = []
    async with trio.open_nursery() as nursery:

        async def work() -> None:
            outcome.append(await _run(args, base))
            nursery.cancel_scope.cancel()

        nursery.start_soon(work)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                print(f"tradingd torture: {signal.Signals(signum).name}: stopping", flush=True)
                nursery.cancel_scope.cancel()
                break
    return outcome[0] if outcome else None


def _only(text: str | None) -> frozenset[str] | None:
    if text is None:
        return None
    return frozenset(k.strip() for k in text.split(",") if k.strip())


def main(args: argparse.Namespace) -> int:
    if args.scenarios is not None and args.scenarios < 0:
        print("tradingd torture: --scenarios must be >= 0", file=sys.stderr)
        return 2
    only = _only(args.faults)
    if only is not None:
        unknown = sorted(only - set(FAULT_KINDS))
        if unknown or not only:
            print(
                f"tradingd torture: unknown fault kind(s) {unknown or '(none given)'}; "
                f"expected some of {', '.join(FAULT_KINDS)}",
                file=sys.stderr,
            )
            return 2
    base = Path(tempfile.mkdtemp(prefix="tradingd-torture-", dir=args.dir))
    base.chmod(0o700)
    print(
        f"tradingd torture: profile {args.profile}, seed {args.seed}, work in {base}"
        + ("" if can_mount() else " (not root: no disk-full faults)"),
        flush=True,
    )
    started = time.time()
    try:
        results = trio.run(_run_until_signalled, args, base)
    except KeyboardInterrupt:
        results = None
    if results is None:
        print(f"interrupted (kept {base})", file=sys.stderr)
        return 130
    elapsed = time.time() - started
    ok = bool(results) and all(r.ok for r in results)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "profile": args.profile,
                    "seed": args.seed,
                    "elapsed_s": round(elapsed, 1),
                    "disk_faults": can_mount(),
                    "scenarios": [r.to_json() for r in results],
                },
                indent=1,
            )
        )
    if args.report:
        Path(args.report).write_text(
            render(
                results,
                profile=args.profile,
                seed=args.seed,
                elapsed_s=elapsed,
                disk_faults=can_mount(),
            )
        )
    failed = [r for r in results if not r.ok]
    print(
        f"tradingd torture: {len(results)} scenarios in {elapsed:.0f}s: "
        + ("all ok" if ok else f"{len(failed)} FAILED"),
        flush=True,
    )
    for r in failed:
        # --scenarios 0 runs the negative control alone.
        count = 0 if r.kind == "negative-control" else 1
        print(f"  replay: tradingd torture --seed {r.seed} --scenarios {count}  (kept {r.workdir})")
    if ok and not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"work directories kept in {base}")
    return 0 if ok else 1
