"""The orders bench's load generator process: the raw baseline and the HTTP clients.

``tradingd bench orders`` starts it as ``python -m daemon.bench.orders
--load-generator ADMIN_URL --token-file PATH`` (:class:`LoadGeneratorProcess`)
and drives it over a pipe, one JSON command a line (:class:`LoadGenerator`
lists them). It runs

* the **baseline** of the run's order transport
  (:mod:`daemon.bench.orders_baseline`: a signed new order to the simulator,
  over REST or the WebSocket API, between two ``synchronous=FULL`` SQLite
  commits, or two PostgreSQL commits with ``--store postgres``), alone in
  its Trio loop, so that it pays nothing for the daemon's tasks or its
  instruments;
* the **HTTP clients** of ``POST /orders``, whose own CPU use it reports.

The bench orders themselves (:func:`order_request`) are defined here too: a
LIMIT BUY far below the market, which rests and never fills.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import httpx2
import trio

from daemon.bench.common import (
    BenchError,
    open_module_process,
    quantiles,
    read_line,
    self_cpu_s,
)
from daemon.bench.orders_baseline import PRICE, QUANTITY, SYMBOL, Baseline, WsBaseline
from daemon.bench.orders_pg import PgTarget
from daemon.orders.ledger import LatencyLog

__all__ = [
    "FIRST_ACCOUNT",
    "LoadGenerator",
    "LoadGeneratorProcess",
    "account_names",
    "order_request",
    "serve_load_generator",
]

#: Bench accounts are named ``main``, ``acct1``, ``acct2``, ...
FIRST_ACCOUNT: Final = "main"
#: Bound of one control call to the load generator (a burst of thousands included).
LOADGEN_TIMEOUT_S: Final = 300.0
#: Pause before a submission that was refused as saturated (503) is retried.
SATURATED_RETRY_S: Final = 0.005


# ------------------------------------------------------------------ the bench orders


def order_request(message_id: str, account: str = FIRST_ACCOUNT) -> dict[str, str]:
    """One bench order as both entry APIs take it: a LIMIT BUY that rests, never fills."""
    return {
        "message_id": message_id,
        "account": account,
        "symbol": SYMBOL,
        "side": "BUY",
        "type": "LIMIT",
        "quantity": QUANTITY,
        "price": PRICE,
        "time_in_force": "GTC",
    }


def account_names(count: int) -> list[str]:
    """The bench's ``count`` account names: ``main``, ``acct1``, ``acct2``, ..."""
    return [FIRST_ACCOUNT, *(f"acct{i}" for i in range(1, count))]


# ------------------------------------------------------------------ the load generator process


class LoadGenerator:
    """The load generator's side: commands in on stdin, one JSON answer per line on stdout.

    Commands (one JSON object a line):

    * ``{"op": "baseline", "ids", "prefix", "transport", "sim_url", "ws_api_url",
      "credentials_file", "db"}`` (with ``"pg_dsn"`` and, optionally,
      ``"pg_password_file"``: the commits go to PostgreSQL,
      :class:`~daemon.bench.orders_pg.PgTarget`) → ``{"seconds", "commit_seconds", "post_seconds",
      "commit_statement_seconds"}``, lists with one value per order (``post_seconds``:
      the venue request, a REST POST or a WebSocket API ``order.place``), and
      ``cpu_s``, this process's CPU for them all (the baseline of ``transport``,
      ``"rest"`` when absent, is set up on first use); with ``"stages": true``
      also ``cpu_stages_s``, the main thread's CPU per step of the orders
      (:class:`~daemon.bench.orders_baseline.StageClock`), the worker
      threads' and the process's;
    * ``{"op": "post", "body"}`` → ``{"status", "seconds", "client_order_id"}``:
      one ``POST /orders`` on a kept-alive connection;
    * ``{"op": "burst", "count", "prefix", "accounts", "concurrency"}`` →
      statuses, wall time, this process's CPU, client-side latency.
    """

    def __init__(self, admin_url: str, token: str, nursery: trio.Nursery) -> None:
        self.admin_url = admin_url
        self._nursery = nursery
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.http = httpx2.AsyncClient(
            base_url=admin_url,
            headers=self._headers,
            timeout=30.0,
            limits=httpx2.Limits(max_connections=1, max_keepalive_connections=1),
            trust_env=False,
        )
        self.baselines: dict[str, Baseline | WsBaseline] = {}

    async def handle(self, command: Mapping[str, Any]) -> dict[str, Any]:
        op = command.get("op")
        if op == "baseline":
            return await self._baseline(command)
        if op == "post":
            return await self._post(json.dumps(command["body"]).encode())
        if op == "burst":
            return await self._burst(command)
        raise BenchError(f"load generator: unknown op {op!r}")

    async def _open_baseline(self, command: Mapping[str, Any]) -> Baseline | WsBaseline:
        transport = command.get("transport", "rest")
        creds_path = trio.Path(command["credentials_file"])
        creds = json.loads(await creds_path.read_text(encoding="utf-8"))
        key, secret, db = creds["api_key"], creds["api_secret"], Path(command["db"])
        pg = PgTarget.from_command(command)
        baseline: Baseline | WsBaseline
        if transport == "rest":
            baseline = Baseline(command["sim_url"], key, secret, db, pg)
        elif transport == "ws-api":
            baseline = WsBaseline(command["ws_api_url"], key, secret, db, self._nursery, pg=pg)
        else:
            raise BenchError(f"load generator: unknown transport {transport!r}")
        self.baselines[transport] = baseline  # closed by aclose() even if open() fails
        await baseline.open()
        return baseline

    async def _baseline(self, command: Mapping[str, Any]) -> dict[str, Any]:
        baseline = self.baselines.get(command.get("transport", "rest"))
        if baseline is None:
            baseline = await self._open_baseline(command)
        prefix = command["prefix"]
        stages = bool(command.get("stages", False))
        baseline.clock.enabled = stages
        baseline.clock.take()
        cpu_before, main_before = sum(self_cpu_s()), time.thread_time()
        rows = [await baseline.one(f"{prefix}{i}") for i in command["ids"]]
        cpu_s, main_s = sum(self_cpu_s()) - cpu_before, time.thread_time() - main_before
        answer: dict[str, Any] = {}
        if stages:
            answer["cpu_stages_s"] = {
                **baseline.clock.take(),
                "worker_threads": max(0.0, cpu_s - main_s),
                "process": cpu_s,
            }
        return {
            **answer,
            "cpu_s": cpu_s,
            "seconds": [r[0] for r in rows],
            "commit_seconds": [r[1] for r in rows],
            "post_seconds": [r[2] for r in rows],
            "commit_statement_seconds": [r[3] for r in rows],
        }

    async def _post(self, body: bytes) -> dict[str, Any]:
        started = time.perf_counter()
        response = await self.http.post("/orders", content=body)
        seconds = time.perf_counter() - started
        answer: dict[str, Any] = {"status": response.status_code, "seconds": seconds}
        if response.status_code in (200, 202):
            answer["client_order_id"] = response.json()["client_order_id"]
        else:
            answer["error"] = response.text[:500]
        return answer

    async def _burst(self, command: Mapping[str, Any]) -> dict[str, Any]:
        count = int(command["count"])
        concurrency = int(command["concurrency"])
        accounts = list(command["accounts"])
        prefix = command["prefix"]
        bodies = [
            json.dumps(order_request(f"{prefix}{i}", accounts[i % len(accounts)])).encode()
            for i in range(count)
        ]
        statuses: Counter[int] = Counter()
        retries = 0
        errors: list[str] = []
        latency = LatencyLog()
        next_index = 0
        async with httpx2.AsyncClient(
            base_url=self.admin_url,
            headers=self._headers,
            timeout=30.0,
            limits=httpx2.Limits(
                max_connections=concurrency, max_keepalive_connections=concurrency
            ),
            trust_env=False,
        ) as http:

            async def warm() -> None:
                await http.get("/health")

            async with trio.open_nursery() as nursery:  # open the connections before the clock
                for _ in range(concurrency):
                    nursery.start_soon(warm)

            async def worker() -> None:
                nonlocal next_index, retries
                while next_index < count:
                    index = next_index
                    next_index += 1
                    while True:
                        started = time.perf_counter()
                        response = await http.post("/orders", content=bodies[index])
                        if response.status_code == 503:
                            retries += 1
                            await trio.sleep(SATURATED_RETRY_S)
                            continue
                        latency.add(time.perf_counter() - started)
                        statuses[response.status_code] += 1
                        if response.status_code not in (200, 202) and len(errors) < 3:
                            errors.append(f"{response.status_code}: {response.text[:200]}")
                        break

            cpu_before = self_cpu_s()
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    nursery.start_soon(worker)
            wall = time.perf_counter() - started
            cpu_after = self_cpu_s()
        return {
            "requests": count,
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "accepted": statuses[202] + statuses[200],
            "retried_503": retries,
            "errors": errors,
            "wall_s": wall,
            "cpu_user_s": cpu_after[0] - cpu_before[0],
            "cpu_sys_s": cpu_after[1] - cpu_before[1],
            "latency": quantiles(latency),
        }

    async def aclose(self) -> None:
        await self.http.aclose()
        for baseline in self.baselines.values():
            await baseline.aclose()


async def serve_load_generator(admin_url: str, token: str) -> None:
    """Answer commands from stdin until it closes (the load generator process's main)."""
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    stdout = trio.lowlevel.FdStream(os.dup(sys.stdout.fileno()))
    buffer = bytearray()
    async with trio.open_nursery() as nursery:  # the WebSocket baseline's connection
        generator = LoadGenerator(admin_url, token, nursery)
        try:
            while True:
                line = await read_line(stdin, buffer)
                if line is None:
                    return
                try:
                    answer = await generator.handle(json.loads(line))
                except (BenchError, httpx2.HTTPError, KeyError, ValueError, OSError) as exc:
                    answer = {"error": f"{type(exc).__name__}: {exc}"}
                await stdout.send_all(json.dumps(answer).encode() + b"\n")
        finally:
            await generator.aclose()
            await stdin.aclose()
            await stdout.aclose()
            nursery.cancel_scope.cancel()


class LoadGeneratorProcess:
    """The bench's handle on the load generator subprocess (started by :meth:`start`)."""

    def __init__(self, proc: trio.Process, stderr_path: Path) -> None:
        self.proc = proc
        self.stderr_path = stderr_path
        self._buffer = bytearray()

    @classmethod
    async def start(cls, admin_url: str, token_file: Path, workdir: Path) -> LoadGeneratorProcess:
        stderr_path = workdir / "loadgen.log"
        proc = await open_module_process(
            ["daemon.bench.orders", "--load-generator", admin_url, "--token-file", str(token_file)],
            log_path=stderr_path,
            cwd=workdir,
            pipes=True,
        )
        return cls(proc, stderr_path)

    async def call(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """Send one command and wait for its answer."""
        await self.send(command)
        return await self.answer(command)

    async def send(self, command: Mapping[str, Any]) -> None:
        """Send one command; :meth:`answer` reads what it answers."""
        stdin = self.proc.stdin
        assert stdin is not None
        with trio.fail_after(LOADGEN_TIMEOUT_S):
            try:
                await stdin.send_all(json.dumps(command).encode() + b"\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise BenchError(f"the load generator exited:\n{self._stderr_tail()}") from None

    async def answer(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """The answer to the command sent last."""
        stdout = self.proc.stdout
        assert stdout is not None
        with trio.fail_after(LOADGEN_TIMEOUT_S):
            try:
                line = await read_line(stdout, self._buffer)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                line = None
        if line is None:
            raise BenchError(f"the load generator exited:\n{self._stderr_tail()}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer and "status" not in answer:
            raise BenchError(f"load generator, {command.get('op')}: {answer['error']}")
        return answer

    def _stderr_tail(self) -> str:
        try:
            return self.stderr_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        except OSError:
            return "(no stderr)"

    async def aclose(self) -> None:
        """Close its stdin (it exits) and reap it; killed when it does not."""
        with trio.CancelScope(shield=True):
            if self.proc.stdin is not None:
                try:
                    await self.proc.stdin.aclose()
                except trio.BrokenResourceError:
                    pass
            with trio.move_on_after(10):
                await self.proc.wait()
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
