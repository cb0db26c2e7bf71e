"""``python -m daemon.bench.resilience`` (:mod:`daemon.bench.resilience`): it runs and reports.

A benchmark is not a test: nothing here looks at a timing beyond "positive".
"""

from __future__ import annotations

import subprocess
import sys

import trio

from daemon.bench.resilience import measure

CASES = {
    "checkpoint",
    "token_bucket.acquire",
    "token_bucket async with",
    "sliding_window.acquire",
    "breaker.protect (empty body)",
    "breaker.call(checkpoint)",
}


def test_benchmark_smoke() -> None:
    results = trio.run(measure, 200, 1)
    assert set(results) == CASES
    assert all(value > 0 for value in results.values())


def test_module_entry_point_prints_one_row_per_case() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "daemon.bench.resilience", "--iterations", "200", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["case", "ns/op", "x", "checkpoint"]
    assert {row[:32].strip() for row in rows} == CASES
    assert rows[0].split()[-1] == "1.00"  # the checkpoint against itself
