"""Settings (the ``[marketdata]`` section): defaults, the loader's checks, and the metrics."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from daemon import config as configmod
from daemon.channels import Queues
from daemon.config import MarketDataConfig
from daemon.errors import ConfigError
from daemon.marketdata import MarketDataService
from daemon.metrics import Registry
from tests.helpers.marketdata_fakes import StaticLink

_HEAD = """\
[venues.sim]
rest_url = "http://127.0.0.1:1"
ws_url = "ws://127.0.0.1:1"

[marketdata]
venue = "sim"
"""


def _load(body: str) -> MarketDataConfig:
    return configmod.loads(_HEAD + body, source="t.toml").marketdata


def test_defaults_follow_the_issue() -> None:
    s = MarketDataConfig(symbols=("BTCUSDT",))
    assert s.symbols == ("BTCUSDT",)
    assert (s.chunk_size, s.trades_queue_capacity, s.backfill_limit) == (1000, 10_000, 1000)
    assert (s.stream_queue_capacity, s.book_snapshot_limit, s.lag_window) == (1000, 1000, 10_000)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("symbols = []", "marketdata.symbols: capture needs at least one symbol"),
        ('symbols = ["btcusdt"]', "marketdata.symbols.0: 'btcusdt' is not a symbol"),
        ('symbols = ["BTCUSDT", "BTCUSDT"]', "marketdata.symbols: lists a symbol twice"),
        ('symbols = ["BTCUSDT"]\nchunk_size = 0', "marketdata.chunk_size"),
        ('symbols = ["BTCUSDT"]\nbackfill_limit = 1001', "marketdata.backfill_limit"),
        ('symbols = ["BTCUSDT"]\ntrades_queue_capacity = 0', "marketdata.trades_queue_capacity"),
        ('symbols = ["BTCUSDT"]\nflush_interval_s = 0', "marketdata.flush_interval_s"),
        ('symbols = ["BTCUSDT"]\nsnapshot_interval_s = -1', "marketdata.snapshot_interval_s"),
        ('symbols = ["BTCUSDT"]\nflush_interval_s = nan', "marketdata.flush_interval_s"),
        ('symbols = "BTCUSDT"', "marketdata.symbols"),
        ('symbols = ["BTCUSDT"]\nchunk_size = 1.5', "marketdata.chunk_size"),
        # Internal tunables are not keys: the file cannot set them.
        ('symbols = ["BTCUSDT"]\nlag_window = 5', "marketdata.lag_window: unknown key"),
        ('symbols = ["BTCUSDT"]\nbook_snapshot_limit = 5', "marketdata.book_snapshot_limit"),
    ],
)
def test_invalid_settings_are_refused_by_the_loader_with_the_key_and_line(
    body: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _load(body)
    assert any(p.startswith("t.toml:") and message in p for p in info.value.problems), (
        info.value.problems
    )


def test_the_loaded_section_is_the_settings() -> None:
    section = _load(
        """\
symbols = ["BTCUSDT", "ETHUSDT"]
chunk_size = 25
trades_queue_capacity = 200
flush_interval_s = 0.1
snapshot_interval_s = 0
snapshot_depth = 10
backfill_limit = 100
"""
    )
    assert section.symbols == ("BTCUSDT", "ETHUSDT")
    assert (section.chunk_size, section.trades_queue_capacity) == (25, 200)
    assert (section.flush_interval_s, section.snapshot_interval_s) == (0.1, 0)
    assert (section.snapshot_depth, section.backfill_limit) == (10, 100)
    assert section.heartbeat_interval_s == 5.0  # internal tunables keep their defaults
    assert attrs.evolve(section, heartbeat_interval_s=1.0).heartbeat_interval_s == 1.0


def test_the_resync_snapshot_is_never_shallower_than_a_stored_snapshot() -> None:
    assert MarketDataConfig(symbols=("BTCUSDT",), snapshot_depth=20).book_snapshot_limit == 1000
    assert MarketDataConfig(symbols=("BTCUSDT",), snapshot_depth=2500).book_snapshot_limit == 2500
    assert _load('symbols = ["BTCUSDT"]\nsnapshot_depth = 3000').book_snapshot_limit == 3000


def test_metrics_render_in_the_prometheus_format() -> None:
    class Store:
        market: Any = None

    service = MarketDataService(
        "sim",
        StaticLink(None),
        Store(),
        None,  # type: ignore[arg-type]
        Queues(),
        MarketDataConfig(symbols=("BTCUSDT", "ETHUSDT"), snapshot_interval_s=0),
    )
    service.symbol_stats["BTCUSDT"].lag.extend([5, 10, 2000])
    registry = Registry()
    registry.register_collector(service.metrics)
    text = registry.render()
    assert (
        'tradingd_marketdata_commit_lag_seconds{stat="max",symbol="BTCUSDT",venue="sim"} 2.0'
        in text
    )
    assert (
        'tradingd_marketdata_gaps_total{state="unrecoverable",symbol="ETHUSDT",venue="sim"} 0.0'
        in text
    )
    assert 'tradingd_marketdata_stream_connected{venue="sim"} 0.0' in text
    assert 'tradingd_marketdata_put_wait_seconds_total{venue="sim"} 0.0' in text
    status = service.status()
    assert status["symbols"]["BTCUSDT"]["lag_ms"]["p50"] == 10
    assert status["queues"]["trades"]["capacity"] == 10_000
