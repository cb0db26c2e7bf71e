"""The WebSocket API endpoint in the configuration: ``[venues.NAME] ws_api_url`` → BinanceConfig."""

from __future__ import annotations

from typing import Any

import pytest

from daemon import config as c
from daemon.config import VenueConfig
from daemon.secrets import SecretRef
from daemon.venues.binance import BinanceConfig
from daemon.venues.binance.config import (
    MAINNET_WS_API_URL,
    TESTNET_WS_API_URL,
    derive_ws_api_url,
)
from daemon.venues.link import binance_config as link_config
from tests.helpers.venues import binance_config, venue_defaults


@pytest.mark.parametrize(
    ("ws_url", "ws_api_url"),
    [
        ("wss://stream.binance.com:9443", MAINNET_WS_API_URL),
        ("wss://stream.binance.com:443", MAINNET_WS_API_URL),
        ("wss://STREAM.binance.com", MAINNET_WS_API_URL),
        ("wss://stream.testnet.binance.vision", TESTNET_WS_API_URL),
        ("ws://127.0.0.1:8901", "ws://127.0.0.1:8901/ws-api/v3"),
        ("ws://127.0.0.1:8901/", "ws://127.0.0.1:8901/ws-api/v3"),
        ("wss://proxy.example/binance", "wss://proxy.example/binance/ws-api/v3"),
    ],
)
def test_the_endpoint_is_derived_from_the_stream_url(ws_url: str, ws_api_url: str) -> None:
    assert derive_ws_api_url(ws_url) == ws_api_url


def test_binance_config_derives_unless_given() -> None:
    assert binance_config().ws_api_url == MAINNET_WS_API_URL
    assert binance_config(ws_url="ws://127.0.0.1:9").ws_api_url == "ws://127.0.0.1:9/ws-api/v3"
    given = binance_config(ws_url="ws://127.0.0.1:9", ws_api_url="ws://10.0.0.1:7/x/ws-api/v3")
    assert given.ws_api_url == "ws://10.0.0.1:7/x/ws-api/v3"
    assert BinanceConfig.spot_testnet(**venue_defaults()).ws_api_url == TESTNET_WS_API_URL
    assert binance_config().ws_api_ping_interval_s == 15.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ws_api_url": "https://ws-api.binance.com/ws-api/v3"}, "ws_api_url"),
        ({"ws_api_url": "wss://ws-api.binance.com/ws-api/v3/"}, "trailing"),
        ({"ws_api_url": "wss://ws-api.binance.com/ws-api/v3?returnRateLimits=false"}, "query"),
        ({"ws_api_url": "wss://"}, "ws_api_url"),
        ({"ws_api_ping_interval_s": 0}, "ws_api_ping_interval_s"),
    ],
)
def test_invalid_values_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        binance_config(**overrides)


def _venue(**fields: Any) -> VenueConfig:
    return VenueConfig(rest_url="http://127.0.0.1:1", ws_url="ws://127.0.0.1:2/", **fields)


def test_the_venue_key_reaches_the_client_config() -> None:
    assert link_config("sim", _venue()).ws_api_url == "ws://127.0.0.1:2/ws-api/v3"
    explicit = link_config(
        "sim", _venue(ws_api_url="wss://ws-api.testnet.binance.vision/ws-api/v3/")
    )
    assert explicit.ws_api_url == TESTNET_WS_API_URL
    testnet = VenueConfig(
        rest_url="https://testnet.binance.vision",
        ws_url="wss://stream.testnet.binance.vision",
        api_key=SecretRef("env", "K"),
        api_secret=SecretRef("env", "S"),
    )
    assert link_config("t", testnet, {"K": "k", "S": "s"}).ws_api_url == TESTNET_WS_API_URL


def test_the_key_loads_from_toml() -> None:
    loaded = c.loads(
        '[venues.sim]\nrest_url = "http://h:1"\nws_url = "ws://h:2"\n'
        'ws_api_url = "ws://h:3/ws-api/v3"\n'
    )
    assert loaded.venues["sim"].ws_api_url == "ws://h:3/ws-api/v3"
    assert (
        c.loads('[venues.sim]\nrest_url = "http://h:1"\nws_url = "ws://h:2"\n')
        .venues["sim"]
        .ws_api_url
        == ""
    )
