"""Venue links against the real simulator: up, down (health degraded), recovery."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio

from daemon.config import VenueConfig
from daemon.health import HealthLevel
from daemon.secrets import SecretRef
from daemon.supervise import ChildSpec, Supervisor
from daemon.venues.link import VenueLink, binance_config
from daemon.venues.sim.config import DOCS_API_KEY, DOCS_SECRET_KEY, SimConfig
from daemon.venues.sim.server import serve_sim

ENV = {"K": DOCS_API_KEY, "S": DOCS_SECRET_KEY}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def venue(rest_url: str, ws_url: str) -> VenueConfig:
    return VenueConfig(
        rest_url=rest_url,
        ws_url=ws_url,
        api_key=SecretRef("env", "K"),
        api_secret=SecretRef("env", "S"),
        request_timeout_s=2.0,
    )


async def wait_state(link: VenueLink, state: str) -> None:
    await link.state.wait_value(state)


def test_binance_config_resolves_secrets_and_strips_slashes() -> None:
    cfg = binance_config("sim", venue("http://127.0.0.1:1/", "ws://127.0.0.1:2/"), ENV)
    assert cfg.rest_url == "http://127.0.0.1:1"
    assert cfg.ws_url == "ws://127.0.0.1:2"
    assert cfg.api_key is not None and cfg.api_key.reveal() == DOCS_API_KEY
    assert DOCS_SECRET_KEY not in repr(cfg)


async def test_link_up_down_and_recovery(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K", DOCS_API_KEY)
    monkeypatch.setenv("S", DOCS_SECRET_KEY)
    rest_port, ws_port = free_port(), free_port()
    sim = SimConfig(rest_port=rest_port, ws_port=ws_port)
    link = VenueLink(
        "sim",
        venue(f"http://127.0.0.1:{rest_port}", f"ws://127.0.0.1:{ws_port}"),
        refresh_interval_s=0.2,
        retry_initial_s=0.05,
        retry_max_s=0.2,
    )
    sup = Supervisor("venues", [ChildSpec("link:sim", link.run)])
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            # The venue is down at start: the link still reports ready (the daemon
            # must start), and health says why it is degraded.
            await nursery.start(sup.run)
            await wait_state(link, "down")
            level, reason = link.check()
            assert level is HealthLevel.DEGRADED
            assert reason is not None and reason.startswith("venue sim unreachable:")

            async with trio.open_nursery() as sim_nursery:
                await sim_nursery.start(serve_sim, sim)
                client = await link.wait_up()
                assert link.check() == (HealthLevel.HEALTHY, None)
                assert link.exchange_info is not None
                assert set(link.exchange_info.symbols) == {"BTCUSDT", "ETHUSDT"}
                status: dict[str, Any] = link.status()
                assert status["state"] == "up" and status["symbols"] == 2
                assert DOCS_SECRET_KEY not in str(status)
                assert (await client.server_time()) > 0
                sim_nursery.cancel_scope.cancel()

            await wait_state(link, "down")  # the venue went away again
            sup.request_stop()
    assert link.client is None, "the client is closed when the link stops"
