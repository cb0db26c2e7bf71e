"""``tradingd torture --profile ci``: the bounded torture run of the test suite.

The real command runs as a subprocess: it starts the simulator and ``tradingd
run`` as processes for each scenario, applies its seeded schedule of faults
(kills, freezes, drains, venue outages, venue and stream faults, clock skew
and, as root, a full disk), settles and checks every invariant from the
witnesses; then the negative control, whose duplicate the checker must see.
The test asserts the command's verdict and reads its JSON results, so a
broken invariant fails here with the runner's own evidence.
``TD_TORTURE_SEED`` replays another seed (it is printed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from daemon.torture.record import ScenarioResult

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("TD_TORTURE_SEED", "20261206"))
#: The whole CI profile: one scenario of faults and the negative control (~1 minute).
BUDGET_S = 300.0


async def test_the_ci_profile_holds_every_invariant(tmp_path: Path) -> None:
    results, report = tmp_path / "results.json", tmp_path / "RELIABILITY.md"
    with trio.fail_after(BUDGET_S):
        done = await trio.run_process(
            [
                sys.executable,
                "-m",
                "daemon",
                "torture",
                "--profile",
                "ci",
                "--seed",
                str(SEED),
                "--json",
                str(results),
                "--report",
                str(report),
                "--dir",
                str(tmp_path),
            ],
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out = done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")
    print(out)
    assert done.returncode == 0, out
    data = json.loads(results.read_text())
    scenarios = [ScenarioResult.from_json(s) for s in data["scenarios"]]
    runs = [s for s in scenarios if s.kind == "faults"]
    control = [s for s in scenarios if s.kind == "negative-control"]
    assert len(runs) == 1 and len(control) == 1, out
    for run in runs:
        assert run.ok, (run.violations, run.error)
        assert run.events and run.counts["accepted by a client"] > 0, out
        assert run.counts["trades stored"] > 0, out
    assert sum(r.kills for r in runs) > 0, "premise: the daemon was killed"
    assert control[0].ok, ("the negative control saw no duplicate", control[0].violations)
    text = report.read_text()
    assert "## The negative control" in text and "saw the duplicates" in text


async def test_sigterm_stops_the_run_and_cleans_up(tmp_path: Path) -> None:
    """SIGTERM mid-scenario: exit 130, the programs stopped, the tmpfs unmounted."""
    with trio.fail_after(60.0):
        proc = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "daemon",
                "torture",
                "--scenarios",
                "1",
                "--no-negative-control",
                "--dir",
                str(tmp_path),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while not _daemon_up(tmp_path):
                assert proc.poll() is None, "the run ended early"
                await trio.sleep(0.1)
            proc.terminate()
            assert await proc.wait() == 130
        finally:
            if proc.returncode is None:
                proc.kill()
    assert str(tmp_path) not in _mounts(), "a tmpfs is still mounted"
    assert not _processes_under(tmp_path), "processes of the run are still running"


def _daemon_up(base: Path) -> bool:
    """The first scenario's daemon is up (its log has the admin URL)."""
    return any(
        "admin API on" in p.read_text(errors="replace")
        for p in base.glob("tradingd-torture-*/s0-*/daemon0.log")
    )


def _mounts() -> str:
    return Path("/proc/mounts").read_text()


def _processes_under(base: Path) -> list[Path]:
    """Processes whose command line names a path under ``base``."""
    return [p for p in Path("/proc").iterdir() if p.name.isdigit() and str(base) in _cmdline(p)]


def _cmdline(proc_dir: Path) -> str:
    try:
        return (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
