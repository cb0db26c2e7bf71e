"""The exchange simulator for tests: in process (:func:`running_sim`) or a subprocess.

In process, :func:`running_sim` runs a :class:`~daemon.venues.sim.server.SimServer`
on 127.0.0.1 (ports 0) inside the test's nursery and yields a :class:`SimHarness`:
the simulator's control API (``/sim/...``) — faults, the audit log, the
published trades, the synthetic market — through a plain httpx2 client, so what
the venue *really* did is read independently of what the client under test
believes. :func:`client_config` and :func:`rest_client` point the project's
Binance client at it. Nothing here is a pytest fixture: each test builds the
simulator it needs inside its own ``trio.fail_after``.

As a process, :func:`start_sim` starts ``tradingd sim`` and waits for the line
with its URLs (:func:`sim_process`: for the duration of a block);
:class:`SimProcess` is a client of its control API. Both sides read that API
the same way (:class:`~tests.helpers.sim_control.SimControl`).
:func:`sim_key_files` writes the simulator's default account keys as the secret
files a daemon configuration refers to; :func:`venue_table` the ``[venues.NAME]``
table that does.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import httpx2
import trio

from daemon.secrets import Secret, SecretRef
from daemon.venues.binance import BinanceConfig, BinanceRestClient
from daemon.venues.sim.config import (
    DOCS_API_KEY,
    DOCS_SECRET_KEY,
    SYMBOL_PRESETS,
    AccountConfig,
    SimConfig,
)
from daemon.venues.sim.server import SimServer
from tests.helpers.process import child_env, wait_until
from tests.helpers.sim_api import make_config, running_sim_server
from tests.helpers.sim_control import SimControl
from tests.helpers.venues import binance_config

SYMBOL = "BTCUSDT"
#: Polling interval of :meth:`SimHarness.wait_until` (a condition, never a guess).
POLL_S = 0.01


def secret(value: str, name: str = "SIM") -> Secret:
    """A :class:`~daemon.secrets.Secret` holding ``value`` (as if read from ``$name``)."""
    return Secret(ref=SecretRef("env", name), value=value)


def sim_config(**overrides: Any) -> SimConfig:
    """A simulator on ports 0 with BTCUSDT only, the market paused, one docs account.

    :func:`~tests.helpers.sim_api.make_config` with one symbol and one account.
    """
    fields: dict[str, Any] = {"symbols": (SYMBOL_PRESETS[SYMBOL],), "accounts": (AccountConfig(),)}
    return make_config(**(fields | overrides))


@attrs.define
class SimHarness(SimControl):
    """A running simulator plus a plain HTTP client of its control API."""

    server: SimServer
    http: httpx2.AsyncClient

    @property
    def rest_url(self) -> str:
        assert self.server.rest_url is not None
        return self.server.rest_url

    @property
    def ws_url(self) -> str:
        assert self.server.ws_url is not None
        return self.server.ws_url

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.http.request(method, path, json=body)
        assert response.status_code < 300, f"{method} {path}: {response.text}"
        return response.json()

    async def requests(self) -> int:
        """``/api/v3`` requests the simulator has received so far."""
        return int((await self.status())["requests"])

    async def published_trades(
        self, from_id: int, limit: int, symbol: str = SYMBOL
    ) -> list[dict[str, Any]]:
        """The venue's own record of its trades (``GET /sim/trades``)."""
        answer = await self.control(
            "GET", f"/sim/trades?symbol={symbol}&fromId={from_id}&limit={limit}"
        )
        return answer["trades"]  # type: ignore[no-any-return]

    async def market(self) -> dict[str, Any]:
        return await self.control("GET", "/sim/market")  # type: ignore[no-any-return]

    async def market_order(self, side: str, quantity: str, symbol: str = SYMBOL) -> list[int]:
        """A synthetic market order (someone else trading); returns the trade ids it made."""
        answer = await self.control(
            "POST",
            "/sim/market/order",
            {"symbol": symbol, "side": side, "quantity": quantity},
        )
        return answer["tradeIds"]  # type: ignore[no-any-return]

    async def balances(self, api_key: str = DOCS_API_KEY) -> dict[str, dict[str, Decimal]]:
        answer = await self.control("GET", "/sim/balances")
        return {
            asset: {k: Decimal(v) for k, v in amounts.items()}
            for asset, amounts in answer["accounts"][api_key].items()
        }

    @staticmethod
    async def wait_until(condition: Callable[[], Awaitable[bool]]) -> None:
        """Poll ``condition()`` until it is true; the caller's ``fail_after`` bounds the wait.

        Polling, because the condition lives in another service (read over HTTP).
        """
        while not await condition():  # noqa: ASYNC110 - remote state, no event to wait on
            await trio.sleep(POLL_S)

    async def wait_for_stream_connections(self, n: int) -> None:
        """Wait until the simulator has attached ``n`` stream connections.

        A client's handshake completes a moment before the server side is
        subscribed, so a message published in between would not reach it.
        """

        async def attached() -> bool:
            return int((await self.status())["streamConnections"]) == n

        await self.wait_until(attached)


@asynccontextmanager
async def running_sim(
    config: SimConfig | None = None, *, wall_clock: Callable[[], int] | None = None
) -> AsyncIterator[SimHarness]:
    """A simulator on 127.0.0.1 (ports 0) for the duration of the block."""
    async with running_sim_server(config or sim_config(), wall_clock=wall_clock) as server:
        assert server.rest_url is not None
        async with httpx2.AsyncClient(base_url=server.rest_url, timeout=10) as http:
            yield SimHarness(server, http)


def client_config(sim: SimHarness, **overrides: Any) -> BinanceConfig:
    """Client settings for tests: the sim's URLs and docs keys, short timeouts and delays."""
    fields: dict[str, Any] = {
        "name": "sim",
        "rest_url": sim.rest_url,
        "ws_url": sim.ws_url,
        "api_key": secret(DOCS_API_KEY, "SIM_KEY"),
        "api_secret": secret(DOCS_SECRET_KEY, "SIM_SECRET"),
        "request_timeout_s": 5.0,
        "connect_timeout_s": 2.0,
        "retry_base_delay_s": 0.01,
        "retry_max_delay_s": 0.05,
        "retry_max_elapsed_s": 5.0,
        "limiter_max_wait_s": 5.0,
        "reconnect_initial_s": 0.05,
        "reconnect_max_s": 0.2,
        "stale_after_s": 30.0,
    }
    fields.update(overrides)
    return binance_config(**fields)


@asynccontextmanager
async def rest_client(
    sim: SimHarness,
    *,
    wall_clock_ms: Callable[[], int] | None = None,
    **overrides: Any,
) -> AsyncIterator[BinanceRestClient]:
    """The real REST client pointed at ``sim`` (seeded jitter)."""
    kwargs: dict[str, Any] = {"rng": random.Random(7)}
    if wall_clock_ms is not None:
        kwargs["wall_clock_ms"] = wall_clock_ms
    async with BinanceRestClient(client_config(sim, **overrides), **kwargs) as client:
        yield client


# --------------------------------------------------------------------------- as a process

#: Bound of one control-API request (the sim answers in microseconds when healthy).
SIM_REQUEST_TIMEOUT_S = 10.0
#: The sim's CLI prints this line once it listens.
SIM_URLS_RE = re.compile(r"tradingd sim: REST (http://\S+)\s+streams (ws://\S+)")


@attrs.define
class SimProcess(SimControl):
    """A running ``tradingd sim`` subprocess and a client of its control API."""

    proc: trio.Process
    rest_url: str
    ws_url: str
    http: httpx2.AsyncClient
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        with trio.fail_after(SIM_REQUEST_TIMEOUT_S):
            response = await self.http.request(method, path, json=body)
        assert response.status_code < 300, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return response.json()

    async def aclose(self) -> None:
        """Stop the simulator (SIGKILL: its exit status is not under test)."""
        with trio.CancelScope(shield=True):
            await self.http.aclose()
            if self.proc.returncode is None:
                self.proc.kill()
                with trio.move_on_after(10):
                    await self.proc.wait()


async def start_sim(tmp_path: Path, *args: str, timeout_s: float = 20.0) -> SimProcess:
    """Start ``python -m daemon sim --rest-port 0 --ws-port 0 ARGS`` and wait for its URLs.

    The caller owns the result and must :meth:`SimProcess.aclose` it (in a
    ``finally``; :func:`sim_process` does both); a sim that fails to start is
    killed here.
    """
    log_path = tmp_path / "sim.log"
    with open(log_path, "wb") as out:  # noqa: ASYNC230 - a local file, opened once
        proc = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "daemon",
                "sim",
                "--rest-port",
                "0",
                "--ws-port",
                "0",
                "--log-level",
                "warning",
                *args,
            ],
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:

        def urls() -> re.Match[str] | None:
            if proc.poll() is not None:
                raise AssertionError(
                    f"tradingd sim exited with {proc.returncode}:\n{log_path.read_text()}"
                )
            return SIM_URLS_RE.search(log_path.read_text(encoding="utf-8", errors="replace"))

        match = await wait_until(
            urls,
            what="tradingd sim to print its URLs",
            timeout_s=timeout_s,
            poll_s=0.05,
            diag=log_path.read_text,
        )
    except BaseException:
        with trio.CancelScope(shield=True):
            proc.kill()
            with trio.move_on_after(10):
                await proc.wait()
        raise
    http = httpx2.AsyncClient(
        base_url=match.group(1), timeout=SIM_REQUEST_TIMEOUT_S, trust_env=False
    )
    return SimProcess(proc, match.group(1), match.group(2), http, log_path)


@asynccontextmanager
async def sim_process(
    tmp_path: Path, *args: str, timeout_s: float = 20.0
) -> AsyncIterator[SimProcess]:
    """:func:`start_sim` for the duration of the block, stopped at its end (even on failure)."""
    sim = await start_sim(tmp_path, *args, timeout_s=timeout_s)
    try:
        yield sim
    finally:
        await sim.aclose()


def venue_table(
    secrets_dir: Path, rest_url: str, ws_url: str, *, keys: bool = True, name: str = "sim"
) -> str:
    """The start of a ``[venues.NAME]`` table on these URLs; the caller appends its own keys.

    With ``keys``, the venue's key and secret are the simulator's default account
    (:func:`sim_key_files`, written under ``secrets_dir``), as ``{ file = ... }``
    references.
    """
    q = json.dumps  # a JSON string is a valid TOML basic string for these values
    table = f"[venues.{name}]\nrest_url = {q(rest_url)}\nws_url = {q(ws_url)}\n"
    if keys:
        key_file, secret_file = sim_key_files(secrets_dir)
        table += (
            f"api_key = {{ file = {q(str(key_file))} }}\n"
            f"api_secret = {{ file = {q(str(secret_file))} }}\n"
        )
    return table


def sim_key_files(secrets_dir: Path) -> tuple[Path, Path]:
    """Write the sim's default account key and secret (Binance's docs example) as files."""
    secrets_dir.mkdir(parents=True, exist_ok=True)
    key_file = secrets_dir / "sim-api-key"
    secret_file = secrets_dir / "sim-api-secret"
    key_file.write_text(DOCS_API_KEY + "\n")
    secret_file.write_text(DOCS_SECRET_KEY + "\n")
    return key_file, secret_file
