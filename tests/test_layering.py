"""The import rule: running the daemon loads no benchmark and no simulator module.

``daemon.bench`` (the benchmarks) and ``daemon.venues.sim`` (the exchange
simulator) are tools run on demand. ``tradingd run`` must not import them:
not through ``daemon.app``, not through the command line (which imports them
only inside the ``bench`` and ``sim`` commands), and not lazily while the
tree runs.

Two checks:

* fast: a fresh interpreter imports ``daemon.app`` and ``daemon.cli`` and
  builds the command line's parser (every subcommand declared);
* process-level: the real ``tradingd run`` with ``PYTHONPROFILEIMPORTTIME``
  set, so that the interpreter itself writes every module it imports, at any
  time, to stderr. The daemon captures from the simulator, accepts an order
  through ``POST /orders`` and sends it, answers ``/status``, ``/metrics``
  and the control socket, then stops on SIGTERM; only then is the list read.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trio

from tests.helpers.capture import VENUE, capture_config, capture_status
from tests.helpers.process import (
    SECRET,
    WAIT_S,
    Harness,
    NotifyListener,
    await_until,
    http_get,
    open_harness,
)
from tests.helpers.sim import sim_process

#: Module name prefixes ``tradingd run`` must never import.
FORBIDDEN = ("daemon.bench", "daemon.torture", "daemon.venues.sim")
ACCOUNT = "main"
#: A LIMIT BUY far below the simulator's start price (30000): accepted, rests, never fills.
ORDER = {
    "message_id": "layering-1",
    "account": ACCOUNT,
    "symbol": "BTCUSDT",
    "side": "BUY",
    "type": "LIMIT",
    "quantity": "0.00100",
    "price": "20000.00",
    "time_in_force": "GTC",
}


def forbidden(modules: Iterable[str]) -> list[str]:
    """The names among ``modules`` that are, or are inside, a forbidden package."""
    return sorted(
        name
        for name in modules
        if any(name == prefix or name.startswith(prefix + ".") for prefix in FORBIDDEN)
    )


def test_forbidden_matches_packages_not_prefixes_of_names() -> None:
    assert forbidden(["daemon.bench", "daemon.bench.orders", "daemon.venues.sim.cli"]) == [
        "daemon.bench",
        "daemon.bench.orders",
        "daemon.venues.sim.cli",
    ]
    assert forbidden(["daemon.benchmarks_elsewhere", "daemon.venues.simple", "daemon.app"]) == []


def test_importing_the_app_and_the_command_line_loads_no_bench_or_simulator() -> None:
    script = (
        "import json, sys\n"
        "import daemon.app, daemon.cli\n"
        "daemon.cli.build_parser()\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    modules = json.loads(done.stdout)
    assert {"daemon.app", "daemon.cli", "daemon.venues.link"} <= set(modules)
    assert forbidden(modules) == []


# --------------------------------------------------------------------------- process level


class ImportProfilingHarness(Harness):
    """:class:`Harness` whose daemons write every import to stderr (``-X importtime``)."""

    def env(self, notify: NotifyListener | None) -> dict[str, str]:
        env = super().env(notify)
        env["PYTHONPROFILEIMPORTTIME"] = "1"
        return env


def imported_modules(stderr: str) -> list[str]:
    """Module names from ``-X importtime`` lines: ``import time: SELF | CUMULATIVE | NAME``."""
    names = []
    for line in stderr.splitlines():
        if line.startswith("import time:"):
            name = line.rpartition("|")[2].strip()
            if name != "imported package":  # the header line
                names.append(name)
    return names


async def _exercise(h: Harness, url: str, headers: dict[str, str]) -> None:
    """Capture, one order sent and accepted, status, metrics, the control socket."""

    async def capturing() -> bool:
        md = capture_status((await http_get(f"{url}/status")).json(), VENUE)
        return md is not None and bool(md["feed"]["connected"])

    await await_until(capturing, what="the capture stream to connect", poll_s=0.1)
    async with httpx2.AsyncClient(base_url=url, headers=headers, trust_env=False) as http:
        with trio.fail_after(WAIT_S):
            posted = await http.post("/orders", json=ORDER)
        assert posted.status_code == 202, posted.text
        coid = posted.json()["client_order_id"]

        async def accepted() -> dict[str, Any] | None:
            with trio.fail_after(WAIT_S):
                answer = await http.get(f"/orders/{coid}")
            assert answer.status_code == 200, answer.text
            body: dict[str, Any] = answer.json()
            return body if "ACCEPTED" in json.dumps(body) else None

        await await_until(accepted, what=f"order {coid} to be ACCEPTED", poll_s=0.05)
        with trio.fail_after(WAIT_S):
            metrics = await http.get("/metrics")
        assert metrics.status_code == 200
    status = await h.control({"cmd": "status"})
    assert status, "the control socket answered"


@pytest.mark.slow
async def test_tradingd_run_never_imports_a_bench_or_simulator_module(
    tmp_path: Path, sockdir: Path
) -> None:
    with trio.fail_after(4 * WAIT_S):
        async with (
            sim_process(tmp_path, "--symbols", "BTCUSDT") as sim,
            open_harness(tmp_path, sockdir, ImportProfilingHarness) as h,
        ):
            h.config_path.write_text(
                capture_config(
                    h,
                    sim=sim,
                    symbols=["BTCUSDT"],
                    chunk_size=100,
                    trades_queue_capacity=1000,
                )
                # Start-up reconciliation must fit in the base config's start_timeout_s.
                + "\n[orders]\nstartup_reconcile_timeout_s = 10.0\n"
                + "\n[risk]\nmax_orders_per_window = 0\nmax_open_orders = 0\n"
                + f'\n[accounts.{ACCOUNT}]\nvenue = "{VENUE}"\n'
            )
            daemon = await h.start()
            await daemon.wait_ready()
            url = await daemon.admin_url()
            await _exercise(h, url, {"Authorization": f"Bearer {SECRET}"})
            assert await daemon.stop() == 0, daemon.diag()
    modules = imported_modules(daemon.log())
    # The profile worked: the daemon's own modules are listed, the tree's included.
    assert {"daemon.cli", "daemon.app", "daemon.venues.link", "daemon.orders.executor"} <= set(
        modules
    ), "no import profile on stderr"
    assert forbidden(modules) == [], "tradingd run imported " + ", ".join(forbidden(modules))
