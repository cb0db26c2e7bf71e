"""The families ``daemon/app_metrics.py`` adds for the alert rules, read from a real daemon.

The watchdog's last ping (``TradingdWatchdogPingsMissing``), the venue link and its rate-limit
windows (``TradingdVenueDown``, ``TradingdVenueRequestsFrozen``, the usage panels), the store's
commits: values as the running daemon of the ``exposition`` fixture reports them.
"""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.process import PING_INTERVAL_S


def samples(exposition: str) -> dict[str, dict[frozenset[tuple[str, str]], float]]:
    out: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            out.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return out


def only(found: dict[frozenset[tuple[str, str]], float]) -> float:
    assert len(found) == 1, found
    return next(iter(found.values()))


def test_watchdog_families(exposition: str) -> None:
    s = samples(exposition)
    assert only(s["tradingd_watchdog_interval_seconds"]) == PING_INTERVAL_S
    last = only(s["tradingd_watchdog_last_ping_timestamp_seconds"])
    assert time.time() - 600 < last <= time.time()
    assert only(s["tradingd_watchdog_suppressing"]) == 0
    assert s["tradingd_watchdog_pings_total"][frozenset({("outcome", "sent")})] >= 1


def test_venue_families(exposition: str) -> None:
    s = samples(exposition)
    sim = frozenset({("venue", "sim")})
    assert s["tradingd_venue_up"] == {sim: 1.0}
    assert s["tradingd_venue_failures_total"] == {sim: 0.0}
    assert s["tradingd_venue_rate_limit_frozen_seconds"] == {sim: 0.0}
    assert s["tradingd_venue_rate_limit_freezes_total"] == {sim: 0.0}
    weight = sim | {("window", "REQUEST_WEIGHT:1M")}
    limit = s["tradingd_venue_rate_limit_limit"]
    assert limit[weight] > 0
    assert 0 < s["tradingd_venue_rate_limit_used"][weight] <= limit[weight]
    assert set(limit) == set(s["tradingd_venue_rate_limit_used"])


def test_store_families(exposition: str) -> None:
    s = samples(exposition)
    assert only(s["tradingd_store_healthy"]) == 1
    assert only(s["tradingd_store_commits_total"]) >= 1
    assert only(s["tradingd_store_commit_seconds_total"]) > 0
    assert only(s["tradingd_store_write_errors_total"]) == 0


def test_intake_families_without_redis(exposition: str) -> None:
    """The fixture's intake points at a closed port: exposed, and saying so."""
    s = samples(exposition)
    assert only(s["tradingd_intake_connected"]) == 0
    assert "tradingd_intake_redis_errors_total" in s
