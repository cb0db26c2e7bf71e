"""One torture scenario: start the programs, apply the faults, settle, judge.

A scenario starts the simulator (market running, state file) and ``tradingd
run`` (capture + one account) as real processes, runs the clients
(:class:`~daemon.torture.workload.Workload`) while the faults of its seeded
schedule are applied one after another (:class:`~daemon.torture.faults.Stage`;
armed venue faults last a few seconds, so they overlap the next ones), then
**settles**: every fault is cleared, the venue runs, the daemon runs and is
READY, the clients finish the intents they were retrying, and the daemon
resolves every ambiguous outcome. Then the runner re-submits every accepted
``message_id`` (the same ``client_order_id`` must come back), waits for the
capture to reach the venue's last trade, stops the daemon with ``SIGTERM``,
and judges it by the witnesses (:mod:`daemon.torture.checks`).

The **negative control** runs the same machinery against a venue that breaks
the contract: new orders stay invisible to queries far longer than the
daemon's ``query_lag_s``, answers of MARKET orders are held back, and the user
data stream is off. Then the daemon's "proven absent" is wrong, its resend is a
second order, and the checker must see the duplicate — proof that it can.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import trio

from daemon.torture.checks import Ending, check_all, counts, unknown_outcomes
from daemon.torture.faults import READY_TIMEOUT_S, STALL_S, Stage, schedule
from daemon.torture.procs import DaemonProc, SimProc, TortureError, free_ports, poll
from daemon.torture.record import ScenarioResult, Violation
from daemon.torture.setup import (
    ADMIN_TOKEN,
    STORE_FILE,
    SYMBOL,
    Profile,
    daemon_config,
    sim_config,
)
from daemon.torture.witness import last_stored_trade_id, read_store, read_venue
from daemon.torture.workload import Admin, Workload

__all__ = ["can_mount", "run_scenario"]

#: The systemd watchdog the daemon is started with (WATCHDOG_USEC).
WATCHDOG_S = 2.0
#: Bound of the settle phase (clients finishing, ambiguous outcomes resolving).
SETTLE_S = 120.0
#: Size of the tmpfs under the store (disk-full scenarios, root only).
TMPFS_MB = 48
#: The negative control's venue: how long new orders stay invisible to queries.
NEGATIVE_INVISIBLE_S = 8.0


def can_mount() -> bool:
    return os.geteuid() == 0 and os.path.exists("/proc/filesystems")


def _mount_tmpfs(path: Path) -> bool:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m,mode=0700", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def _unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


async def run_scenario(
    profile: Profile,
    seed: int,
    index: int,
    workdir: Path,
    *,
    negative: bool = False,
    fault_phase_s: float | None = None,
    only: frozenset[str] | None = None,
) -> ScenarioResult:
    """Run one scenario in ``workdir`` (created) and return its verdict."""
    await trio.to_thread.run_sync(lambda: workdir.mkdir(mode=0o700, parents=True, exist_ok=True))
    kind = "negative-control" if negative else "faults"
    result = ScenarioResult(seed=seed, index=index, kind=kind, workdir=str(workdir))
    started = time.monotonic()
    state_dir = workdir / "state"
    mounted = not negative and can_mount() and _mount_tmpfs(state_dir)
    rest_port, ws_port = free_ports(2)
    sim = SimProc(workdir, ["--config", str(workdir / "sim.toml")], (rest_port, ws_port))
    (workdir / "sim.toml").write_text(sim_config(seed))
    admin = Admin(ADMIN_TOKEN)
    # Unix socket paths must stay under 108 bytes: the workdir can be deep.
    sockdir = Path(tempfile.mkdtemp(prefix="tdt-", dir="/tmp"))
    try:
        async with trio.open_nursery() as nursery:
            daemon = DaemonProc(
                workdir,
                daemon_config(
                    workdir,
                    state_dir=state_dir,
                    control_socket=sockdir / "control.sock",
                    rest_url=sim.rest_url,
                    ws_url=sim.ws_url,
                    user_stream=not negative,
                ),
                nursery,
                watchdog_s=WATCHDOG_S,
                sockdir=sockdir,
            )
            try:
                await _body(
                    profile,
                    result,
                    Stage(
                        sim=sim,
                        daemon=daemon,
                        work=_workload(admin, sim, profile, seed=seed, negative=negative),
                        result=result,
                        started=started,
                        disk_dir=state_dir if mounted else None,
                    ),
                    fault_phase_s if fault_phase_s is not None else profile.fault_phase_s,
                    negative=negative,
                    only=only,
                )
            except TortureError as exc:
                result.error = str(exc)[-4000:]
            finally:
                with trio.CancelScope(shield=True):
                    await daemon.aclose()
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await sim.aclose()
            await admin.aclose()
            if mounted:
                if result.error or result.violations:
                    # The evidence outlives the tmpfs: the store is kept with the logs.
                    shutil.copytree(state_dir, workdir / "state-kept", dirs_exist_ok=True)
                _unmount(state_dir)
            shutil.rmtree(sockdir, ignore_errors=True)
    result.elapsed_s = round(time.monotonic() - started, 3)
    return result


def _workload(
    admin: Admin, sim: SimProc, profile: Profile, *, seed: int, negative: bool
) -> Workload:
    if negative:
        return Workload(
            admin,
            sim,
            prefix=f"neg{seed}",
            seed=f"{seed}:neg",
            submitters=2,
            pace_s=(0.3, 0.8),
            kinds=(("market", 1.0),),
            cancels=False,
        )
    return Workload(
        admin,
        sim,
        prefix=f"t{seed}",
        seed=f"{seed}",
        submitters=profile.submitters,
        pace_s=profile.submit_pace_s,
    )


async def _body(
    profile: Profile,
    result: ScenarioResult,
    stage: Stage,
    phase_s: float,
    *,
    negative: bool,
    only: frozenset[str] | None,
) -> None:
    await stage.sim.start()
    await stage.start_daemon(None)
    if negative:
        await stage.sim.arm({"kind": "order_invisible", "delay_s": NEGATIVE_INVISIBLE_S})
        await stage.sim.arm(
            {
                "kind": "rest_timeout",
                "phase": "after",
                "delay_s": STALL_S,
                "probability": 0.6,
                "method": "POST",
                "path": "/api/v3/order",
            }
        )
    work = stage.work
    async with trio.open_nursery() as nursery:
        await nursery.start(work.run)
        if not negative:
            disk = stage.disk_dir is not None
            kinds = schedule(profile, result.seed, 1000, disk=disk, only=only)
            deadline = trio.current_time() + phase_s
            gap_rng = random.Random(f"{result.seed}:gaps")
            for i, kind in enumerate(kinds):
                if trio.current_time() >= deadline:
                    break
                rng = random.Random(f"{result.seed}:{i}")
                with trio.fail_after(READY_TIMEOUT_S + 60):
                    result.events.append(await stage.apply(i, kind, rng))
                await trio.sleep(gap_rng.uniform(*profile.fault_gap_s))
        else:
            await trio.sleep(phase_s)
        await _settle(stage)
        work.stop()
    end = await _finish(stage)
    for inc in stage.daemon.exited_on_its_own():
        result.violations.append(
            Violation(
                "no-crash",
                f"incarnation {inc.number} exited on its own with status "
                f"{inc.proc.returncode}: {inc.log_tail(5)}",
            )
        )
    if end.unsettled:
        result.violations.append(Violation("settled", f"left after {SETTLE_S:g}s: {end.unsettled}"))
    venue = await read_venue(stage.sim)
    store = await trio.to_thread.run_sync(read_store, _store_file(stage))
    result.violations.extend(check_all(work.log, venue, store, end, result.events))
    result.counts = counts(work.log, venue, store)
    result.unknowns = unknown_outcomes(store)
    for _a, _b, state in store.gaps:
        result.gaps[state] = result.gaps.get(state, 0) + 1


async def _settle(stage: Stage) -> None:
    """Clear every fault; make sure the venue and the daemon run; the daemon READY."""
    await trio.to_thread.run_sync(stage.free_disk)
    if not stage.sim.alive:
        await stage.sim.start()
        stage.result.sim_restarts += 1
    await stage.sim.control("DELETE", "/sim/faults")
    await stage.sim.control("POST", "/sim/clock", {"offset_ms": 0})
    inc = stage.daemon.current
    if not inc.alive or inc.admin_url is None:
        if inc.alive:
            await stage.kill_daemon()
        await stage.start_daemon("settle")


async def _finish(stage: Stage) -> Ending:
    """Wait for the clients and the daemon to settle; re-submit; catch up; SIGTERM."""
    end = Ending()
    work = stage.work
    admin = work.admin
    deadline = trio.current_time() + SETTLE_S
    # The clients finish what they were retrying (work.run returned: they have).
    while True:
        if not stage.daemon.current.alive:
            # It exited on its own while settling (a crash: judged below); as systemd
            # would, start it again and judge the ending on the new incarnation.
            await stage.start_daemon("exited on its own")
        answer = await admin.request("GET", "/orders?state=PENDING,SENDING,UNKNOWN&limit=1000")
        left = answer.body.get("orders") if answer.status == 200 else None
        open_cancels = await _open_cancels(admin)
        if left == [] and open_cancels == 0:
            break
        if trio.current_time() > deadline:
            end.unsettled = {"not settled": len(left or []), "cancels open": open_cancels}
            break
        await trio.sleep(0.5)
    end.health = (await admin.request("GET", "/health")).status
    inc = stage.daemon.current
    end.ready = inc.alive and bool(inc.notify.times("READY", "1"))
    for mid, coid in list(work.log.accepted.items()):
        answer = await admin.request("POST", "/orders", work.log.bodies[mid])
        if answer.status != 200:
            end.echo_failures[mid] = answer.status
        elif str(answer.body.get("client_order_id")) != coid:
            end.echo_mismatches[mid] = (coid, str(answer.body.get("client_order_id")))
    market = await stage.sim.control("GET", "/sim/market")
    end.capture_target = int(market["symbols"][SYMBOL]["lastTradeId"])
    await _catch_up(stage, end.capture_target)
    stage.daemon.signal(signal.SIGTERM)
    end.term_code = await stage.daemon.wait_exit(30.0)
    if end.term_code is None:
        await stage.kill_daemon()
    return end


async def _open_cancels(admin: Admin) -> int:
    answer = await admin.request("GET", "/orders?state=open&limit=1000")
    if answer.status != 200:
        return -1
    return sum(1 for o in answer.body.get("orders", []) if o.get("cancel_requested_at_ms"))


async def _catch_up(stage: Stage, target: int) -> None:
    """Wait (bounded) until the daemon has stored the venue's trade ``target``."""
    db = _store_file(stage)

    async def caught_up() -> bool:
        return await trio.to_thread.run_sync(last_stored_trade_id, db) >= target

    await poll(caught_up, timeout_s=30.0, interval_s=0.2)


def _store_file(stage: Stage) -> Path:
    return stage.daemon.workdir / "state" / STORE_FILE
