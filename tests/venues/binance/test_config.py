"""BinanceConfig validation and the Venue protocol wiring."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.secrets import Secret, SecretRef
from daemon.venues.base import StreamKind, Subscription, Venue
from daemon.venues.binance import BinanceConfig, BinanceVenue, stream_names
from daemon.venues.binance.config import TESTNET_REST_URL, TESTNET_WS_URL
from tests.helpers.venues import binance_config, venue_defaults

KEY = Secret(ref=SecretRef("credential", "binance-key"), value="the-api-key-value")
SECRET = Secret(ref=SecretRef("credential", "binance-secret"), value="the-api-secret-value")


def test_defaults_are_binance_spot() -> None:
    config = binance_config()
    assert config.rest_url == "https://api.binance.com"
    assert config.ws_url == "wss://stream.binance.com:9443"
    assert config.recv_window_ms == 5000 and config.max_connection_age_s == 23.5 * 3600
    assert not config.has_credentials


def test_testnet_preset() -> None:
    config = BinanceConfig.spot_testnet(api_key=KEY, api_secret=SECRET, **venue_defaults())
    assert (config.rest_url, config.ws_url) == (TESTNET_REST_URL, TESTNET_WS_URL)
    assert config.name == "binance_testnet" and config.has_credentials


def test_secrets_never_show_in_reprs() -> None:
    config = binance_config(api_key=KEY, api_secret=SECRET)
    text = repr(config) + str(config)
    assert "the-api-key-value" not in text and "the-api-secret-value" not in text
    assert "binance-key" in text  # the reference is fine to show


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"recv_window_ms": 0}, "recv_window_ms"),
        ({"recv_window_ms": 60001}, "recv_window_ms"),
        ({"max_connection_age_s": 24 * 3600.0}, "24-hour"),
        ({"stale_after_s": 0}, "stale_after_s"),
        ({"request_timeout_s": float("inf")}, "request_timeout_s"),
        ({"rest_url": "ftp://x"}, "rest_url"),
        ({"rest_url": "https://api.binance.com/"}, "trailing"),
        ({"ws_url": "https://x"}, "ws_url"),
        ({"ws_url": "wss://x/ws?x=1"}, "query"),
        ({"api_key": KEY}, "together"),
        ({"api_key": "plain-string", "api_secret": SECRET}, "Secret"),
        ({"reconnect_initial_s": 10.0, "reconnect_max_s": 5.0}, "reconnect_max_s"),
        ({"retry_base_delay_s": 10.0, "retry_max_delay_s": 5.0}, "retry_max_delay_s"),
        ({"retry_max_attempts": 0}, "retry_max_attempts"),
        ({"name": "bad name"}, "name"),
    ],
)
def test_invalid_values_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message) as info:
        binance_config(**overrides)
    assert "plain-string" not in str(info.value)


async def test_binance_venue_is_a_venue() -> None:
    venue = BinanceVenue(binance_config(ws_url="ws://127.0.0.1:9"))
    assert isinstance(venue, Venue)
    subs = [Subscription(StreamKind.TRADES, "ethbtc"), Subscription(StreamKind.DEPTH, "ETHBTC")]
    assert stream_names(subs) == ["ethbtc@trade", "ethbtc@depth@100ms"]
    stream = venue.market_stream(subs)
    assert stream.url == "ws://127.0.0.1:9/stream?streams=ethbtc@trade/ethbtc@depth@100ms"
    single = venue.market_stream(subs[:1])
    assert single.url == "ws://127.0.0.1:9/ws/ethbtc@trade"
    await venue.aclose()
