"""Helpers of the market-data capture process tests (``tests/test_capture_process.py``).

Three independent witnesses, so that the daemon under test is never asked to
vouch for itself:

* :class:`SimProcess` — ``tradingd sim`` as a subprocess and a plain HTTP
  client of its control API (``/sim/trades`` is the venue's own record of
  what it published, ``/sim/faults`` arms stream faults and counts their hits);
* :class:`StoreReader` — the daemon's SQLite file opened **read-only** with the
  standard library (``mode=ro``), independent of :mod:`daemon.store`;
* :func:`rss_bytes` — the kernel's view of the daemon's memory
  (``/proc/PID/status``).

The daemon side (notify socket, READY, log, config file) is the harness of
``tests/test_process.py``; :func:`capture_config` adds the ``[store]``,
``[marketdata]`` and ``[venues.sim]`` sections to its base configuration.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import httpx2
import trio
from test_process import HOSTILE_ENV, config_text, wait_until

from daemon.venues.sim.config import DOCS_API_KEY, DOCS_SECRET_KEY

__all__ = [
    "VENUE",
    "PublishedTrade",
    "SimProcess",
    "StoreReader",
    "StoredTrade",
    "capture_config",
    "capture_status",
    "missing_ids",
    "rss_bytes",
    "start_sim",
]

#: The ``[venues.NAME]`` the daemon captures from (and the ``venue`` of every stored trade).
VENUE = "sim"
#: Bound of one control-API request (the sim answers in microseconds when healthy).
SIM_REQUEST_TIMEOUT_S = 10.0
#: The sim's CLI prints this line once it listens.
SIM_URLS_RE = re.compile(r"tradingd sim: REST (http://\S+)\s+streams (ws://\S+)")
#: Largest page ``GET /sim/trades`` serves.
SIM_TRADES_PAGE = 100_000


def sim_env() -> dict[str, str]:
    """The test's environment minus what would make a child think it runs under systemd."""
    env = {k: v for k, v in os.environ.items() if k not in HOSTILE_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------- the simulator


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
            env=sim_env(),
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


# --------------------------------------------------------------------------- daemon config


def capture_config(
    *,
    state_dir: Path,
    control_socket: Path,
    token_file: Path,
    secrets_dir: Path,
    sim: SimProcess,
    symbols: Sequence[str],
    chunk_size: int,
    trades_queue_capacity: int,
    flush_interval_s: float = 0.1,
    snapshot_interval_s: float = 0.0,
    snapshot_depth: int = 5,
    backfill_limit: int = 1000,
    synchronous_market: str = "NORMAL",
    level: str = "info",
    shutdown_timeout_s: float = 10.0,
    lag_warn_s: float = 30.0,
    tail_check_interval_s: float | None = None,
    api_key: bool = True,
) -> str:
    """The base test configuration of ``test_process`` plus capture from ``sim``.

    The venue's key and secret are the simulator's default account (the
    example key of Binance's docs), given as ``{ file = ... }`` references;
    ``api_key=False`` configures the venue without any (capture needs none:
    ``historicalTrades``, the backfill, is security type NONE, as on Binance).
    ``tail_check_interval_s`` is left to its default unless given.
    """
    secrets_dir.mkdir(parents=True, exist_ok=True)
    key_file = secrets_dir / "sim-api-key"
    secret_file = secrets_dir / "sim-api-secret"
    key_file.write_text(DOCS_API_KEY + "\n")
    secret_file.write_text(DOCS_SECRET_KEY + "\n")
    q = json.dumps  # a JSON string is a valid TOML basic string for these values
    keys = (
        f"api_key = {{ file = {q(str(key_file))} }}\n"
        f"api_secret = {{ file = {q(str(secret_file))} }}\n"
        if api_key
        else ""
    )
    tail = (
        f"tail_check_interval_s = {tail_check_interval_s}\n"
        if tail_check_interval_s is not None
        else ""
    )
    base = config_text(
        state_dir=state_dir,
        control_socket=control_socket,
        token_file=token_file,
        level=level,
        shutdown_timeout_s=shutdown_timeout_s,
    )
    return (
        base
        + f"""
[store]
path = "capture.db"
synchronous_market = {q(synchronous_market)}

[marketdata]
venue = {q(VENUE)}
symbols = {q(list(symbols))}
chunk_size = {chunk_size}
trades_queue_capacity = {trades_queue_capacity}
flush_interval_s = {flush_interval_s}
snapshot_interval_s = {snapshot_interval_s}
snapshot_depth = {snapshot_depth}
backfill_limit = {backfill_limit}
lag_warn_s = {lag_warn_s}
{tail}
[venues.{VENUE}]
rest_url = {q(sim.rest_url)}
ws_url = {q(sim.ws_url)}
{keys}request_timeout_s = 5.0
stale_after_s = 10.0
"""
    )


# --------------------------------------------------------------------------- the daemon's view


def capture_status(status: Mapping[str, Any], venue: str = VENUE) -> dict[str, Any] | None:
    """The venue's ``MarketDataService.status()`` inside a ``/status`` document.

    Accepts both shapes the contract allows: ``status["marketdata"]`` being the
    service's status itself, or a mapping of venue name to it. ``None`` when
    the document has no market-data section (yet).
    """
    section = status.get("marketdata")
    if not isinstance(section, Mapping):
        return None
    if section.get("venue") == venue:
        return dict(section)
    inner = section.get(venue)
    if isinstance(inner, Mapping):
        return dict(inner)
    venues = section.get("venues")
    if isinstance(venues, Mapping) and isinstance(venues.get(venue), Mapping):
        return dict(venues[venue])
    return None


def trades_queue(status: Mapping[str, Any], venue: str = VENUE) -> dict[str, Any] | None:
    """Stats of the ``marketdata.VENUE.trades`` queue (from the daemon's queue registry)."""
    for queue in status.get("queues") or ():
        if isinstance(queue, Mapping) and queue.get("name") == f"marketdata.{venue}.trades":
            return dict(queue)
    md = capture_status(status, venue)
    if md is not None:
        queue = (md.get("queues") or {}).get("trades")
        if isinstance(queue, Mapping):
            return dict(queue)
    return None


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (``VmRSS`` of ``/proc/PID/status``)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                value, unit = line.split()[1:3]
                assert unit == "kB", line
                return int(value) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


# --------------------------------------------------------------------------- the store file


@attrs.frozen
class StoredTrade:
    trade_id: int
    price: Decimal
    quantity: Decimal
    buyer_is_maker: bool
    trade_time_ms: int


@attrs.frozen
class GapRow:
    from_id: int
    to_id: int
    state: str
    reason: str


class StoreReader:
    """Blocking read-only queries on the daemon's database file (run them in a thread).

    Each call opens its own ``mode=ro`` connection: nothing here can change the
    file, and nothing is held open across the daemon's restarts.
    """

    def __init__(self, path: Path, venue: str = VENUE) -> None:
        self.path = path
        self.venue = venue

    def _connect(self) -> sqlite3.Connection:
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=10.0, isolation_level=None)

    def exists(self) -> bool:
        return self.path.is_file()

    def last_ids(self, symbols: Sequence[str]) -> dict[str, int | None]:
        conn = self._connect()
        try:
            out: dict[str, int | None] = {}
            for symbol in symbols:
                row = conn.execute(
                    "SELECT max(trade_id) FROM trades WHERE venue = ? AND symbol = ?",
                    (self.venue, symbol),
                ).fetchone()
                out[symbol] = None if row[0] is None else int(row[0])
            return out
        finally:
            conn.close()

    def last_trade(self, symbol: str) -> StoredTrade | None:
        """The stored trade with the highest id (``None``: nothing stored)."""
        conn = self._connect()
        try:
            row = conn.execute(
                "SELECT trade_id, price, quantity, buyer_is_maker, trade_time_ms FROM trades "
                "WHERE venue = ? AND symbol = ? ORDER BY trade_id DESC LIMIT 1",
                (self.venue, symbol),
            ).fetchone()
        finally:
            conn.close()
        if row is None:
            return None
        return StoredTrade(int(row[0]), Decimal(row[1]), Decimal(row[2]), bool(row[3]), int(row[4]))

    def trades(self, symbol: str) -> list[StoredTrade]:
        conn = self._connect()
        try:
            rows = conn.execute(
                "SELECT trade_id, price, quantity, buyer_is_maker, trade_time_ms FROM trades "
                "WHERE venue = ? AND symbol = ? ORDER BY trade_id",
                (self.venue, symbol),
            ).fetchall()
        finally:
            conn.close()
        return [
            StoredTrade(int(r[0]), Decimal(r[1]), Decimal(r[2]), bool(r[3]), int(r[4]))
            for r in rows
        ]

    def gaps(self, symbol: str) -> list[GapRow]:
        conn = self._connect()
        try:
            rows = conn.execute(
                "SELECT from_id, to_id, state, reason FROM gaps "
                "WHERE venue = ? AND symbol = ? ORDER BY from_id",
                (self.venue, symbol),
            ).fetchall()
        finally:
            conn.close()
        return [GapRow(int(r[0]), int(r[1]), str(r[2]), str(r[3])) for r in rows]

    def dead_letters(self, source_prefix: str) -> list[tuple[str, str]]:
        """``(source, raw text)`` of the dead letters whose source starts with the prefix.

        A payload stored as JSON (``payload_kind = 'json'``) is decoded: a raw
        frame kept as a JSON string comes back as that string.
        """
        conn = self._connect()
        try:
            rows = conn.execute(
                "SELECT source, payload_kind, payload FROM dead_letters "
                "WHERE substr(source, 1, ?) = ? ORDER BY letter_id",
                (len(source_prefix), source_prefix),
            ).fetchall()
        finally:
            conn.close()
        out: list[tuple[str, str]] = []
        for source, kind, payload in rows:
            data = (
                payload if isinstance(payload, str) else bytes(payload).decode("utf-8", "replace")
            )
            if kind == "json":
                value = json.loads(data)
                data = value if isinstance(value, str) else json.dumps(value)
            out.append((str(source), data))
        return out

    def count_trades(self, symbol: str) -> int:
        conn = self._connect()
        try:
            row = conn.execute(
                "SELECT count(*) FROM trades WHERE venue = ? AND symbol = ?",
                (self.venue, symbol),
            ).fetchone()
            return int(row[0])
        finally:
            conn.close()


def missing_ids(stored: Sequence[int], first: int, last: int) -> list[tuple[int, int]]:
    """The ranges of ``first..last`` (inclusive) absent from sorted ``stored``."""
    out: list[tuple[int, int]] = []
    expected = first
    for trade_id in stored:
        if trade_id < first:
            continue
        if trade_id > last:
            break
        if trade_id > expected:
            out.append((expected, trade_id - 1))
        expected = max(expected, trade_id + 1)
    if expected <= last:
        out.append((expected, last))
    return out
