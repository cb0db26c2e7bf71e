"""Unhealthy for a lasting reason: health says so, the systemd watchdog does not restart.

A full disk makes the store unhealthy (its writes fail), but a restart cannot
make room: under systemd (``WatchdogSec=``) it would only turn the daemon into
a restart loop until someone frees space, dropping what is in memory each
time. So the store's check gives its reason as a
:class:`~daemon.health.LastingReason`: ``/health`` still says unhealthy with
the reason, :attr:`~daemon.health.HealthReport.restart_level` (what
:func:`~daemon.health.run_watchdog` follows) counts it as degraded, and any
other unhealthy check still stops the pings.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import pytest
import trio
import trio.testing

from daemon.health import (
    CheckOutcome,
    HealthLevel,
    HealthModel,
    LastingReason,
    WatchdogStats,
    run_watchdog,
)
from daemon.store.service import StoreService
from tests.helpers.app import make_config
from tests.helpers.store import open_store, page_count, trade

H, D, U = HealthLevel.HEALTHY, HealthLevel.DEGRADED, HealthLevel.UNHEALTHY


class Notifier:
    def __init__(self, interval_s: float) -> None:
        self.watchdog_interval_s = interval_s
        self.t0 = trio.current_time()
        self.pings: list[float] = []

    def watchdog(self) -> bool:
        self.pings.append(trio.current_time() - self.t0)
        return True

    def status(self, text: str) -> bool:
        return True


def test_a_lasting_reason_is_unhealthy_but_not_for_a_restart() -> None:
    model = HealthModel()
    outcome: dict[str, CheckOutcome] = {"store": (U, LastingReason("store x: disk full"))}
    model.add_check("store", lambda: outcome["store"])
    model.add_check("other", lambda: outcome.get("other", (H, None)))
    report = model.evaluate()
    assert (report.level, report.reasons) == (U, ("store x: disk full",))
    assert report.restart_level is D
    assert report.to_dict()["checks"]["store"] == {
        "level": "unhealthy",
        "reasons": ["store x: disk full"],
    }
    # A plain reason beside it in the same check: a restart may help.
    outcome["store"] = (U, (LastingReason("store x: disk full"), "store x: closed"))
    assert model.evaluate().restart_level is U
    # Another check unhealthy for a plain reason: unhealthy for the watchdog too.
    outcome["store"] = (U, LastingReason("store x: disk full"))
    outcome["other"] = (U, "root/feed: heartbeat stale")
    assert model.evaluate().restart_level is U


async def test_the_watchdog_pings_on_through_a_full_disk_only(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tradingd.health")
    model = HealthModel()
    outcome: dict[str, CheckOutcome] = {"store": (H, None), "feed": (H, None)}
    model.add_check("store", lambda: outcome["store"])
    model.add_check("feed", lambda: outcome["feed"])
    notifier = Notifier(1.0)
    stats = WatchdogStats()
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(run_watchdog, notifier, model, stats=stats))
        await trio.sleep_until(t0 + 1.5)
        outcome["store"] = (U, LastingReason("store x: disk full"))
        await trio.sleep_until(t0 + 3.5)
        assert notifier.pings == [0.0, 1.0, 2.0, 3.0]
        assert (stats.lasting, stats.suppressing) == (True, False)
        outcome["feed"] = (U, "root/feed: heartbeat stale")
        await trio.sleep_until(t0 + 5.5)
        assert notifier.pings == [0.0, 1.0, 2.0, 3.0]  # 4 and 5 suppressed
        assert stats.suppressing
        outcome["feed"] = (H, None)
        outcome["store"] = (H, None)
        await trio.sleep_until(t0 + 6.5)
        nursery.cancel_scope.cancel()
    assert notifier.pings == [0.0, 1.0, 2.0, 3.0, 6.0]
    assert (stats.pings_suppressed, stats.lasting, stats.suppressing) == (2, False, False)
    lasting = [r.getMessage() for r in caplog.records if "no restart would cure" in r.getMessage()]
    assert lasting == [
        "health is unhealthy, but no restart would cure it: systemd watchdog pings go on: "
        "store x: disk full"
    ]


async def test_the_store_check_calls_a_full_disk_lasting(tmp_path: Path) -> None:
    service = StoreService(make_config(tmp_path))
    async with await open_store(tmp_path / "store.db") as store:
        service.current.value = store
        await store.market.insert_trades([trade(1)])
        assert service.check() == (H, None)
        pages = await page_count(store)
        await store.call(lambda c: c.execute(f"PRAGMA max_page_count = {pages}").fetchall())
        await store.market.insert_trades([trade(i) for i in range(2, 5000)])
        level, reason = service.check()
        assert level is U and isinstance(reason, LastingReason), reason
        assert "disk full" in reason
        # Closed: a plain reason (a restart reopens it).
        service.current.value = None
        await store.aclose()
        service.current.value = store
        level, reason = service.check()
        assert level is U and not isinstance(reason, LastingReason), reason
