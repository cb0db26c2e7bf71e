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
with its URLs; :class:`SimProcess` is a client of its control API.
:func:`sim_key_files` writes the simulator's default account keys as the secret
files a daemon configuration refers to.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
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
    MarketConfig,
    SimConfig,
)
from daemon.venues.sim.server import SimServer
from tests.helpers.process import child_env, wait_until
from tests.helpers.sim_api import running_sim_server
from tests.helpers.venues import binance_config

SYMBOL = "BTCUSDT"
#: Polling interval of :meth:`SimHarness.wait_until` (a condition, never a guess).
POLL_S = 0.01


def secret(value: str, name: str = "SIM") -> Secret:
    """A :class:`~daemon.secrets.Secret` holding ``value`` (as if read from ``$name``)."""
    return Secret(ref=SecretRef("env", name), value=value)


def sim_config(**overrides: Any) -> SimConfig:
    """A simulator on ports 0 with BTCUSDT only, the market paused, one docs account."""
    fields: dict[str, Any] = {
        "rest_port": 0,
        "ws_port": 0,
        "market": MarketConfig(paused=True),
        "symbols": (SYMBOL_PRESETS[SYMBOL],),
        "accounts": (AccountConfig(),),
    }
    fields.update(overrides)
    return SimConfig(**fields)


@attrs.define
class SimHarness:
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

    async def arm(self, **spec: Any) -> dict[str, Any]:
        """Arm one fault (``POST /sim/faults``); returns it with its id."""
        armed = await self.control("POST", "/sim/faults", spec)
        return armed["armed"][0]  # type: ignore[no-any-return]

    async def faults(self) -> list[dict[str, Any]]:
        return (await self.control("GET", "/sim/faults"))["faults"]  # type: ignore[no-any-return]

    async def audit(self, client_order_id: str | None = None) -> list[dict[str, Any]]:
        """Orders the venue accepted (all, or those with ``client_order_id``)."""
        path = "/sim/audit"
        if client_order_id is not None:
            path += f"?clientOrderId={client_order_id}"
        return (await self.control("GET", path))["orders"]  # type: ignore[no-any-return]

    async def status(self) -> dict[str, Any]:
        return await self.control("GET", "/sim/status")  # type: ignore[no-any-return]

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

    async def set_market(self, *, paused: bool | None = None, steps: int = 0) -> dict[str, Any]:
        body: dict[str, Any] = {"steps": steps}
        if paused is not None:
            body["paused"] = paused
        return await self.control("POST", "/sim/market", body)  # type: ignore[no-any-return]

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
#: Largest page ``GET /sim/trades`` serves.
SIM_TRADES_PAGE = 100_000


@attrs.frozen
class PublishedTrade:
    """One trade as the simulator published it (``GET /sim/trades``)."""

    trade_id: int
    price: Decimal
    quantity: Decimal
    buyer_is_maker: bool
    trade_time_ms: int


@attrs.define
class SimProcess:
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

    async def arm(self, **spec: Any) -> dict[str, Any]:
        """Arm one fault (``POST /sim/faults``); returns it as the sim shows it."""
        answer = await self.control("POST", "/sim/faults", spec)
        armed: dict[str, Any] = answer["armed"][0]
        return armed

    async def faults(self) -> list[dict[str, Any]]:
        faults: list[dict[str, Any]] = (await self.control("GET", "/sim/faults"))["faults"]
        return faults

    async def clear_faults(self) -> None:
        await self.control("DELETE", "/sim/faults")

    async def set_market(self, *, paused: bool | None = None, steps: int = 0) -> dict[str, Any]:
        body: dict[str, Any] = {"steps": steps}
        if paused is not None:
            body["paused"] = paused
        state: dict[str, Any] = await self.control("POST", "/sim/market", body)
        return state

    async def drop_streams(self, mode: str = "close") -> None:
        """Drop every stream connection now (``POST /sim/streams/drop``)."""
        await self.control("POST", "/sim/streams/drop", {"mode": mode})

    async def status(self) -> dict[str, Any]:
        status: dict[str, Any] = await self.control("GET", "/sim/status")
        return status

    async def last_ids(self, symbols: Sequence[str]) -> dict[str, int]:
        """Each symbol's last published trade id (0: none yet)."""
        market = await self.control("GET", "/sim/market")
        return {s: int(market["symbols"][s]["lastTradeId"] or 0) for s in symbols}

    async def published(self, symbol: str, from_id: int, to_id: int) -> list[PublishedTrade]:
        """The published trades ``from_id..to_id`` (what the sim's audit log still holds)."""
        out: list[PublishedTrade] = []
        next_id = from_id
        while next_id <= to_id:
            limit = min(SIM_TRADES_PAGE, to_id - next_id + 1)
            answer = await self.control(
                "GET", f"/sim/trades?symbol={symbol}&fromId={next_id}&limit={limit}"
            )
            page = [t for t in answer["trades"] if next_id <= int(t["id"]) <= to_id]
            if not page:
                break
            out.extend(
                PublishedTrade(
                    trade_id=int(t["id"]),
                    price=Decimal(t["price"]),
                    quantity=Decimal(t["qty"]),
                    buyer_is_maker=bool(t["isBuyerMaker"]),
                    trade_time_ms=int(t["time"]),
                )
                for t in page
            )
            next_id = out[-1].trade_id + 1
        return out

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
    ``finally``); a sim that fails to start is killed here.
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


def sim_key_files(secrets_dir: Path) -> tuple[Path, Path]:
    """Write the sim's default account key and secret (Binance's docs example) as files."""
    secrets_dir.mkdir(parents=True, exist_ok=True)
    key_file = secrets_dir / "sim-api-key"
    secret_file = secrets_dir / "sim-api-secret"
    key_file.write_text(DOCS_API_KEY + "\n")
    secret_file.write_text(DOCS_SECRET_KEY + "\n")
    return key_file, secret_file
