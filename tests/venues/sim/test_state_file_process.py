"""``tradingd sim --state-file``: the venue survives SIGKILL and a restart on the same ports.

A real ``python -m daemon sim`` runs its market while a client (standard
library only: urllib and hmac, so no simulator or daemon code is on the
client's side) places, fills and cancels orders; at seeded random moments
the simulator is killed with SIGKILL and started again on the same ports.
Afterwards every order whose answer the client received exists with the
same or a later status, the audit log holds everything it held, no trade id
is reused with other content, and the market moves on from where it was.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from daemon.venues.sim.config import DOCS_API_KEY, DOCS_SECRET_KEY
from tests.helpers.process import child_env

pytestmark = pytest.mark.slow

SEED = 20240607
KILLS = 3
#: Later statuses of an order than each one (its answer may be overtaken, never undone).
LATER: dict[str, set[str]] = {
    "NEW": {"NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED"},
    "PARTIALLY_FILLED": {"PARTIALLY_FILLED", "FILLED", "CANCELED"},
    "FILLED": {"FILLED"},
    "CANCELED": {"CANCELED"},
    "EXPIRED": {"EXPIRED"},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Client:
    """A Binance REST client in a few lines of the standard library."""

    def __init__(self, rest_port: int) -> None:
        self.base = f"http://127.0.0.1:{rest_port}"

    def call(self, method: str, path: str, params: dict[str, str] | None = None) -> Any:
        """The decoded answer; raises ``OSError`` (incl. HTTPError) when there is none."""
        query = urllib.parse.urlencode(params or {})
        request = urllib.request.Request(f"{self.base}{path}?{query}", method=method)
        with urllib.request.urlopen(request, timeout=3) as response:
            return json.loads(response.read())

    def signed(self, method: str, path: str, **params: str) -> Any:
        fields = {**params, "timestamp": str(time.time_ns() // 1_000_000)}
        query = urllib.parse.urlencode(fields)
        signature = hmac.new(DOCS_SECRET_KEY.encode(), query.encode(), hashlib.sha256).hexdigest()
        request = urllib.request.Request(
            f"{self.base}{path}?{query}&signature={signature}",
            method=method,
            headers={"X-MBX-APIKEY": DOCS_API_KEY},
        )
        with urllib.request.urlopen(request, timeout=3) as response:
            return json.loads(response.read())


class Trader(threading.Thread):
    """Places, takes and cancels orders until told to stop; keeps every answer it got."""

    def __init__(self, client: Client, rng: random.Random, tag: str) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.rng = rng
        self.tag = tag
        self.stop = threading.Event()
        self.answers: list[dict[str, Any]] = []
        self.resting: list[int] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            pick = self.rng.random()
            try:
                if pick < 0.15 and self.resting:
                    order_id = self.resting.pop(self.rng.randrange(len(self.resting)))
                    body = self.client.signed(
                        "DELETE", "/api/v3/order", symbol="BTCUSDT", orderId=str(order_id)
                    )
                elif pick < 0.55:
                    body = self._place(f"{self.tag}r{n}", "BUY", "LIMIT", price="29000")
                elif pick < 0.8:
                    body = self._place(f"{self.tag}s{n}", "SELL", "LIMIT", price="29900")
                else:
                    body = self._place(f"{self.tag}m{n}", "BUY", "MARKET")
            except (OSError, ValueError):
                time.sleep(0.02)  # killed, or an error answer: nothing to hold the venue to
                continue
            self.answers.append(body)
            if body.get("status") == "NEW" and body.get("side") == "BUY" and pick < 0.55:
                self.resting.append(body["orderId"])
            time.sleep(0.01)

    def _place(self, client_id: str, side: str, kind: str, price: str | None = None) -> Any:
        params = {
            "symbol": "BTCUSDT",
            "side": side,
            "type": kind,
            "quantity": "0.001",
            "newClientOrderId": client_id,
            "newOrderRespType": "FULL",
        }
        if price is not None:
            params |= {"price": price, "timeInForce": "GTC"}
        return self.client.signed("POST", "/api/v3/order", **params)


class Sim:
    """One ``python -m daemon sim`` process on fixed ports."""

    def __init__(self, tmp_path: Path, state: Path, rest_port: int, ws_port: int) -> None:
        self.log = tmp_path / "sim.log"
        with open(self.log, "ab") as out:
            out.write(b"--- start\n")
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "daemon",
                    "sim",
                    "--state-file",
                    str(state),
                    "--rest-port",
                    str(rest_port),
                    "--ws-port",
                    str(ws_port),
                    "--symbols",
                    "BTCUSDT",
                    "--events-per-s",
                    "50",
                    "--orders-limit-10s",
                    "100000",
                    "--log-level",
                    "warning",
                ],
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        self.client = Client(rest_port)
        deadline = time.monotonic() + 10
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                self.client.call("GET", "/api/v3/ping")
                return
            except OSError:
                assert time.monotonic() < deadline, f"sim did not start:\n{self.log.read_text()}"
                time.sleep(0.05)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def _trades(client: Client) -> dict[int, dict[str, Any]]:
    body = client.call("GET", "/sim/trades", {"symbol": "BTCUSDT", "limit": "100000"})
    return {t["id"]: t for t in body["trades"]}


def test_state_survives_sigkill_and_restart_on_the_same_ports(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    state = tmp_path / "venue.state"
    rest_port, ws_port = _free_port(), _free_port()
    answers: list[dict[str, Any]] = []
    audit: dict[int, dict[str, Any]] = {}
    trades: dict[int, dict[str, Any]] = {}
    last_trade_id = 0
    began = time.monotonic()
    sim = Sim(tmp_path, state, rest_port, ws_port)
    try:
        for round_ in range(KILLS + 1):
            client = sim.client
            # What the venue said before the kill is still so after the restart.
            for body in answers:
                now = client.signed(
                    "GET", "/api/v3/order", symbol="BTCUSDT", orderId=str(body["orderId"])
                )
                assert now["clientOrderId"] == body.get("origClientOrderId", body["clientOrderId"])
                assert now["status"] in LATER[body["status"]], (body, now)
                assert float(now["executedQty"]) >= float(body["executedQty"]), (body, now)
            kept = {r["seq"]: r for r in client.call("GET", "/sim/audit")["orders"]}
            assert all(kept.get(seq) == record for seq, record in audit.items())
            published = _trades(client)
            assert all(published.get(i) == t for i, t in trades.items())
            ids = sorted(published)
            assert ids == list(range(ids[0], ids[-1] + 1)) if ids else not trades
            # The market moves on from where it was.
            deadline = time.monotonic() + 5
            while client.call("GET", "/sim/market")["symbols"]["BTCUSDT"]["lastTradeId"] <= (
                last_trade_id
            ):
                assert time.monotonic() < deadline, "the market did not move after the restart"
                time.sleep(0.05)
            if round_ == KILLS:
                break
            trader = Trader(client, random.Random(rng.random()), f"k{round_}")
            trader.start()
            time.sleep(rng.uniform(0.4, 1.2))
            # Observations made while it runs: each of them must survive.
            audit.update({r["seq"]: r for r in client.call("GET", "/sim/audit")["orders"]})
            trades.update(_trades(client))
            last_trade_id = max(trades)
            time.sleep(rng.uniform(0.0, 0.3))
            sim.kill()
            trader.stop.set()
            trader.join(timeout=10)
            answers.extend(trader.answers)
            assert trader.answers, "no order was answered before the kill"
            sim = Sim(tmp_path, state, rest_port, ws_port)
        # Trade ids after the restarts never repeat with other content.
        final = _trades(sim.client)
        assert all(final[i] == t for i, t in trades.items() if i in final)
        assert max(final) > last_trade_id
        assert len(answers) > 10
    finally:
        sim.stop()
    assert time.monotonic() - began < 60
