"""Settings validation, the config mapping, and the metrics rendering."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.channels import Queues
from daemon.config import MarketDataConfig
from daemon.marketdata import MarketDataService, MarketDataSettings
from daemon.metrics import Registry

from .fakes import StaticLink


def test_defaults_follow_the_issue() -> None:
    s = MarketDataSettings(symbols=["BTCUSDT"])
    assert s.symbols == ("BTCUSDT",)
    assert (s.chunk_size, s.trades_queue_capacity, s.backfill_limit) == (1000, 10_000, 1000)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"symbols": ()}, "at least one symbol"),
        ({"symbols": ("btcusdt",)}, "not a venue symbol"),
        ({"symbols": ("BTCUSDT", "BTCUSDT")}, "duplicates"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"backfill_limit": 1001}, "backfill_limit"),
        ({"trades_queue_capacity": 0}, "trades_queue_capacity"),
        ({"flush_interval_s": 0}, "flush_interval_s"),
        ({"snapshot_interval_s": -1}, "snapshot_interval_s"),
        ({"flush_interval_s": float("nan")}, "flush_interval_s"),
        ({"retry_initial_s": 2.0, "retry_max_s": 1.0}, "retry_max_s"),
        ({"snapshot_depth": 50, "book_snapshot_limit": 20}, "book_snapshot_limit"),
    ],
)
def test_invalid_settings_are_refused_with_the_field_named(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        MarketDataSettings(**{"symbols": ("BTCUSDT",), **fields})


def test_wrong_types_are_refused() -> None:
    with pytest.raises(TypeError):
        MarketDataSettings(symbols="BTCUSDT")
    with pytest.raises(TypeError):
        MarketDataSettings(symbols=("BTCUSDT",), chunk_size=1.5)  # type: ignore[arg-type]


def test_from_the_daemon_config_section() -> None:
    section = MarketDataConfig(
        venue="sim",
        symbols=("BTCUSDT", "ETHUSDT"),
        chunk_size=25,
        trades_queue_capacity=200,
        flush_interval_s=0.1,
        snapshot_interval_s=0,
        snapshot_depth=10,
        backfill_limit=100,
    )
    s = MarketDataSettings.from_config(section, heartbeat_interval_s=1.0)
    assert s.symbols == ("BTCUSDT", "ETHUSDT")
    assert (s.chunk_size, s.trades_queue_capacity, s.flush_interval_s) == (25, 200, 0.1)
    assert (s.snapshot_interval_s, s.snapshot_depth, s.backfill_limit) == (0, 10, 100)
    assert s.heartbeat_interval_s == 1.0


def test_metrics_render_in_the_prometheus_format() -> None:
    class Store:
        market: Any = None

    service = MarketDataService(
        "sim",
        StaticLink(None),
        Store(),
        None,  # type: ignore[arg-type]
        Queues(),
        MarketDataSettings(symbols=("BTCUSDT", "ETHUSDT"), snapshot_interval_s=0),
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
