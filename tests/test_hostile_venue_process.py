"""Process-level proof of issue 13, finding 3: a hostile venue stream cannot crash-loop the feed.

The real programs: ``tradingd sim`` sends hostile frames on the market stream
(the ``ws_malformed`` fault, variants ``deep`` — a JSON array nested 100,000
levels deep — and ``huge_int``, armed several times through the sim's control
API and once by its ``--fault`` flag) to ``tradingd run`` capturing from it.
Before the fix each deep frame raised ``RecursionError`` out of the stream
task: the market-data child restarted on every one (its restart count grew,
health flapped) and enough of them escalated.

Witnesses: the simulator's fault counters (the frames were really sent), the
daemon's store file read-only (the frames are dead letters with their raw
text; trades keep being stored), ``tradingd dead-letters list`` (what an
operator sees), and the daemon's own status (supervision restarts, health).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from daemon.venues.sim.faults import DEEP_FRAME_LEVELS
from tests.helpers.capture import VENUE, StoreReader, capture_config, capture_status
from tests.helpers.process import (
    WAIT_S,
    DaemonProcess,
    Harness,
    await_until,
    open_harness,
    run_scenario,
)
from tests.helpers.sim import SimProcess, sim_process

pytestmark = pytest.mark.slow

SYMBOL = "BTCUSDT"
DB_NAME = "capture.db"
DEAD_LETTER_SOURCE = f"marketdata.{VENUE}."
#: Deep frames armed through ``POST /sim/faults``, one after the other.
DEEP_ARMINGS = 4
BUDGET_S = 90.0
DEEP_FRAME = "[" * DEEP_FRAME_LEVELS + "]" * DEEP_FRAME_LEVELS


def _children(status: Any) -> list[dict[str, Any]]:
    """Every supervised child's entry in a status document (searched, shape-agnostic)."""
    out: list[dict[str, Any]] = []
    stack = [status]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "restarts" in item and "name" in item:
                out.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return out


def _restarts(status: Any) -> dict[str, int]:
    return {str(c["name"]): int(c["restarts"]) for c in _children(status)}


async def _status(h: Harness) -> dict[str, Any]:
    answer = await h.control({"cmd": "status"})
    assert answer.get("ok", True), answer
    status: dict[str, Any] = answer["status"]
    return status


async def _stored_last(reader: StoreReader) -> int | None:
    if not reader.exists():
        return None
    return (await trio.to_thread.run_sync(reader.last_ids, [SYMBOL]))[SYMBOL]


async def _capturing_beyond(d: DaemonProcess, reader: StoreReader, floor: int | None) -> int:
    async def beyond() -> int | None:
        if d.proc.returncode is not None:
            raise AssertionError(f"daemon exited with {d.proc.returncode}\n{d.diag()}")
        last = await _stored_last(reader)
        return last if last is not None and (floor is None or last > floor) else None

    return await await_until(
        beyond, what=f"trades beyond {floor} in the store", timeout_s=WAIT_S + 15, poll_s=0.1
    )


async def _faults_done(sim: SimProcess) -> bool:
    return not [f for f in await sim.faults() if f["kind"] == "ws_malformed"]


async def _scenario(tmp_path: Path, sockdir: Path) -> dict[str, Any]:
    with trio.fail_after(BUDGET_S):
        async with (
            open_harness(tmp_path, sockdir) as h,
            # One hostile frame armed from the command line, before the daemon connects.
            sim_process(
                tmp_path,
                "--seed",
                "3",
                "--events-per-s",
                "40",
                "--symbols",
                SYMBOL,
                "--fault",
                "kind=ws_malformed,variant=huge_int,count=1",
            ) as sim,
        ):
            return await _body(h, sim)


async def _body(h: Harness, sim: SimProcess) -> dict[str, Any]:
    h.config_path.write_text(
        capture_config(
            h,
            sim=sim,
            symbols=[SYMBOL],
            chunk_size=25,
            trades_queue_capacity=1000,
        )
    )
    reader = StoreReader(h.state_dir / DB_NAME)
    d = await h.start()
    await d.wait_ready(timeout_s=WAIT_S + 10)
    floor = await _capturing_beyond(d, reader, None)
    await await_until(
        lambda: _faults_done(sim), what="the --fault frame sent", timeout_s=WAIT_S, poll_s=0.05
    )
    before = _restarts(await _status(h))
    connections_before = (await sim.status()).get("streams", {})

    hits = 0
    for _ in range(DEEP_ARMINGS):
        armed = await sim.arm(kind="ws_malformed", variant="deep", every_n=1, count=1)
        assert armed["variant"] == "deep", armed
        await await_until(
            lambda: _faults_done(sim), what="a deep frame sent", timeout_s=WAIT_S, poll_s=0.05
        )
        hits += 1
        floor = await _capturing_beyond(d, reader, floor)  # capture goes on after each

    async def dead_lettered() -> list[tuple[str, str]] | None:
        letters = await trio.to_thread.run_sync(reader.dead_letters, DEAD_LETTER_SOURCE)
        deep = [x for x in letters if x[1] == DEEP_FRAME]
        return letters if len(deep) >= DEEP_ARMINGS else None

    letters = await await_until(
        dead_lettered, what=f"{DEEP_ARMINGS} deep frames dead-lettered", timeout_s=WAIT_S
    )
    floor = await _capturing_beyond(d, reader, floor)
    status = await _status(h)
    cli = await h.cli("dead-letters", "list", "--json", "--config", os.fspath(h.config_path))
    health = await h.cli("status", "--json", "--config", os.fspath(h.config_path))
    return {
        "alive": d.proc.returncode is None,
        "before": before,
        "after": _restarts(status),
        "status": status,
        "letters": letters,
        "hits": hits,
        "cli": cli,
        "health_cli": health,
        "connections_before": connections_before,
        "sim_status": await sim.status(),
        "log": d.log(),
        "diag": d.diag(),
    }


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_scenario(_scenario, tmp_path_factory.mktemp("hostile-venue"))


def test_the_daemon_survives_hostile_frames_without_restarting_the_feed(
    hostile_run: dict[str, Any],
) -> None:
    run = hostile_run
    assert run["alive"], run["diag"]
    assert run["before"], f"no supervised children in the status: {run['status']}"
    grown = {
        name: (run["before"].get(name, 0), count)
        for name, count in run["after"].items()
        if count > run["before"].get(name, 0)
    }
    assert not grown, f"children restarted by hostile frames: {grown}\n{run['diag']}"
    assert "RecursionError" not in run["log"], run["diag"]
    feed = (capture_status(run["status"]) or {}).get("feed", {})
    assert feed.get("stream", {}).get("connections") == 1, feed  # not even a reconnect
    assert feed.get("malformed", 0) >= DEEP_ARMINGS + 1, feed


def test_the_daemon_stays_healthy(hostile_run: dict[str, Any]) -> None:
    health = hostile_run["status"].get("health")
    assert isinstance(health, dict), hostile_run["status"]
    # Event-loop lag depends on the machine's load, not on this test: every
    # other check (supervision, market data, venue, store…) must be healthy.
    unhealthy = {
        name: check
        for name, check in health.get("checks", {}).items()
        if name != "loop_lag" and check.get("level") != "healthy"
    }
    assert health.get("checks"), health
    assert not unhealthy, f"health after hostile frames: {health}"


def test_hostile_frames_are_dead_lettered_with_their_raw_text(
    hostile_run: dict[str, Any],
) -> None:
    letters = hostile_run["letters"]
    deep = [raw for _, raw in letters if raw == DEEP_FRAME]
    assert len(deep) == DEEP_ARMINGS, [raw[:40] for _, raw in letters]
    huge = [raw for _, raw in letters if '"t":' + "9" * 5000 in raw]
    assert len(huge) == 1, [raw[:40] for _, raw in letters]  # the --fault one
    cli = hostile_run["cli"]
    assert cli.returncode == 0, str(cli)
    listed = json.loads(cli.stdout)
    sources = [x["source"] for x in listed if x["source"].startswith(DEAD_LETTER_SOURCE)]
    assert len(sources) >= DEEP_ARMINGS + 1, listed
    assert any("nests too deep" in x["error_message"] for x in listed), listed
