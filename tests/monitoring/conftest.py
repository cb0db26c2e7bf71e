"""Fixtures of the monitoring tests: the real Prometheus tools, and one real ``/metrics``.

``exposition`` is the ``/metrics`` body of a real ``tradingd run`` (against a ``tradingd sim``
process, with capture, the order pipeline, the Redis intake and systemd's watchdog protocol),
scraped once per session: the names every rule and dashboard expression may read.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.process import await_until, open_harness, short_sockdir
from tests.helpers.sim import sim_process
from tests.monitoring.support import (
    SYMBOL,
    exposed_names,
    free_port,
    monitored_daemon,
    require_tool,
    scrape,
)

#: Families that appear only once their component runs; the scrape waits for them.
WAIT_FOR = (
    "tradingd_marketdata_trades_stored_total",
    "tradingd_orders_submissions_total",
    "tradingd_intake_connected",
    "tradingd_watchdog_last_ping_timestamp_seconds",
    "tradingd_venue_rate_limit_used",
    "tradingd_store_commits_total",
)


@pytest.fixture
def promtool() -> str:
    return require_tool("promtool")


@pytest.fixture
def prometheus() -> str:
    return require_tool("prometheus")


def _committed(exposition: str) -> bool:
    """Whether the store has committed once (its counters then have something to show)."""
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "tradingd_store_commits_total" and sample.value >= 1:
                return True
    return False


async def _scrape_running_daemon(tmp_path: Path) -> str:
    with trio.fail_after(60), short_sockdir() as sockdir:
        async with (
            open_harness(tmp_path, sockdir) as h,
            sim_process(tmp_path, "--symbols", SYMBOL) as sim,
        ):
            # Redis is pointed at a closed port: the intake's families exist all the same.
            redis_url = f"redis://127.0.0.1:{free_port()}/0"
            daemon, url = await monitored_daemon(h, sim, intake_redis_url=redis_url)
            last = ""

            async def complete() -> str | None:
                nonlocal last
                last = await scrape(url)
                names = exposed_names(last)
                ready = all(name in names for name in WAIT_FOR) and _committed(last)
                return last if ready else None

            def missing() -> str:
                names = exposed_names(last)
                absent = [name for name in WAIT_FOR if name not in names]
                return f"missing {absent}\n{daemon.diag()}"

            text = await await_until(
                complete, what="every family on /metrics", timeout_s=20, poll_s=0.2, diag=missing
            )
            assert await daemon.stop() == 0, daemon.diag()
            return text


@pytest.fixture(scope="session")
def exposition() -> str:
    """``GET /metrics`` of a real daemon, scraped once per session."""
    with tempfile.TemporaryDirectory(prefix="tradingd-monitoring-") as tmp:
        return trio.run(_scrape_running_daemon, Path(tmp))


@pytest.fixture(scope="session")
def exposed(exposition: str) -> dict[str, str]:
    """The metric names of :func:`exposition`, with their types."""
    return exposed_names(exposition)
