"""The raw baselines of ``tradingd bench orders``: a signed new order between two FULL commits.

One baseline per order transport, so that each of tradingd's latency rows is
compared with the same venue round trip done by hand:

* :class:`Baseline` (``--transport rest``) — a signed ``POST /api/v3/order``
  over a plain keep-alive httpx2 client (:func:`signed_order_target`);
* :class:`WsBaseline` (``--transport ws-api``) — a signed ``order.place``
  request on one kept-open WebSocket API connection (a bare trio-websocket
  client), waiting for the answer with its ``id`` (:func:`signed_order_params`).

Both share :class:`_BaselineStore`: the two ``synchronous=FULL`` commits (a
fresh sqlite3 file in WAL mode, one INSERT each, in a worker thread behind a
one-thread limiter, as the store's thread lane does) — or, when tradingd's
store is PostgreSQL (``--store postgres``), two committed single-row INSERTs
on a plain psycopg connection to the same server with ``synchronous_commit``
on (:mod:`daemon.bench.orders_pg`), so that each ratio compares like with like.
Nothing of tradingd is used — neither its venue client nor its codec: the
signatures are written out here from Binance's documentation. The load generator process
(:mod:`daemon.bench.orders_load`) runs them, alone in its Trio loop.

For ``--profile``, a :class:`StageClock` takes the main thread's CPU
(``time.thread_time``) at each step of an order — commit, build and sign,
the venue request, decode, commit — so that the baseline's CPU per stage
stands beside tradingd's (:mod:`daemon.bench.orders_profile`) without a
profiler inflating it; off, it does nothing.
"""

from __future__ import annotations

import abc
import hashlib
import hmac
import itertools
import json
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import Any, Final

import httpx2
import trio
import trio_websocket

from daemon.bench.common import BenchError
from daemon.bench.orders_pg import PgCommits, PgTarget

__all__ = [
    "PRICE",
    "QUANTITY",
    "STAGE_KEYS",
    "SYMBOL",
    "WS_API_PATH",
    "Baseline",
    "SqliteCommits",
    "StageClock",
    "WsBaseline",
    "signed_order_params",
    "signed_order_target",
    "ws_api_url",
]

SYMBOL: Final = "BTCUSDT"
#: Far below the simulator's start price (30000): rests on the book, never fills.
PRICE: Final = "20000.00"
#: 20 USDT an order: above the simulator's 5 USDT minimum notional.
QUANTITY: Final = "0.00100"
#: ``recvWindow`` of the baseline's orders (tradingd's default ``recv_window_ms``).
RECV_WINDOW_MS: Final = 5000
#: Where the WebSocket API listens under a streams base URL that is not Binance's
#: own (the simulator; tradingd derives the same URL from ``ws_url``).
WS_API_PATH: Final = "/ws-api/v3"
#: Bound of one baseline request (tradingd's default ``request_timeout_s``).
REQUEST_TIMEOUT_S: Final = 10.0
#: Longest frame the WebSocket baseline reads (an ``order.place`` answer is ~1 KB).
MAX_FRAME_BYTES: Final = 1 << 20


#: The steps of one baseline order :class:`StageClock` times, in order.
STAGE_KEYS: Final = ("commit_intent", "build_sign", "http_client", "decode", "commit_answer")


class StageClock:
    """The main thread's CPU per step of the baseline's orders, summed (off: does nothing).

    :meth:`mark` starts an order; each :meth:`lap` adds the thread CPU since
    the previous mark or lap to a step of :data:`STAGE_KEYS`.
    """

    def __init__(self, *, enabled: bool = False) -> None:
        self.enabled = enabled
        self.seconds: dict[str, float] = dict.fromkeys(STAGE_KEYS, 0.0)
        self._at = 0.0

    def mark(self) -> None:
        if self.enabled:
            self._at = time.thread_time()

    def lap(self, stage: str) -> None:
        if self.enabled:
            now = time.thread_time()
            self.seconds[stage] += now - self._at
            self._at = now

    def take(self) -> dict[str, float]:
        """The sums so far, reset to zero."""
        seconds, self.seconds = self.seconds, dict.fromkeys(STAGE_KEYS, 0.0)
        return seconds


def ws_api_url(ws_url: str) -> str:
    """The WebSocket API endpoint under the simulator's streams base URL."""
    return ws_url.rstrip("/") + WS_API_PATH


def _order_params(client_order_id: str) -> list[tuple[str, str]]:
    """The new order's parameters, the same for both transports (``FULL`` answer)."""
    return [
        ("symbol", SYMBOL),
        ("side", "BUY"),
        ("type", "LIMIT"),
        ("timeInForce", "GTC"),
        ("quantity", QUANTITY),
        ("price", PRICE),
        ("newClientOrderId", client_order_id),
        ("newOrderRespType", "FULL"),
    ]


def signed_order_target(secret: bytes, client_order_id: str, timestamp_ms: int) -> str:
    """Path and signed query of the REST baseline's new order, signed as Binance specifies.

    ``signature`` is the hex HMAC-SHA256 of the query string, keyed with the
    secret, appended last.
    """
    query = urllib.parse.urlencode(
        [
            *_order_params(client_order_id),
            ("recvWindow", str(RECV_WINDOW_MS)),
            ("timestamp", str(timestamp_ms)),
        ]
    )
    signature = hmac.new(secret, query.encode("ascii"), hashlib.sha256).hexdigest()
    return f"/api/v3/order?{query}&signature={signature}"


def signed_order_params(
    api_key: str, secret: bytes, client_order_id: str, timestamp_ms: int
) -> dict[str, str | int]:
    """The ``params`` of the WebSocket baseline's ``order.place``, signed as Binance specifies.

    Unlike REST, the WebSocket API signs its params object: every parameter
    but ``signature`` (``apiKey`` included), sorted by name, written
    ``name=value`` and joined with ``&``, not percent-encoded; ``signature``
    is the hex HMAC-SHA256 of that, keyed with the secret. ``recvWindow`` and
    ``timestamp`` are JSON numbers, as in the documentation's examples.
    """
    params: dict[str, str | int] = dict(_order_params(client_order_id))
    params.update(apiKey=api_key, recvWindow=RECV_WINDOW_MS, timestamp=timestamp_ms)
    payload = "&".join(f"{name}={params[name]}" for name in sorted(params))
    params["signature"] = hmac.new(secret, payload.encode("utf-8"), hashlib.sha256).hexdigest()
    return params


class SqliteCommits:
    """The baseline's durable side on SQLite: a fresh file in WAL mode, ``synchronous=FULL``."""

    def __init__(self, db_path: Path) -> None:
        self._db_path = db_path
        self._conn: sqlite3.Connection | None = None

    def open(self) -> None:
        conn = sqlite3.connect(self._db_path, isolation_level=None, check_same_thread=False)
        mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        if mode.lower() != "wal":
            raise BenchError(f"baseline database {self._db_path}: WAL refused (mode {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, client_order_id TEXT, "
            "kind TEXT, at_ms INTEGER)"
        )
        self._conn = conn

    def commit(self, client_order_id: str, kind: str) -> float:
        """One transaction; returns the seconds of its COMMIT statement (the fsyncs)."""
        conn = self._conn
        assert conn is not None, "open() first"
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO orders (client_order_id, kind, at_ms) VALUES (?, ?, ?)",
            (client_order_id, kind, time.time_ns() // 1_000_000),
        )
        started = time.perf_counter()
        conn.execute("COMMIT")
        return time.perf_counter() - started

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class _BaselineStore(abc.ABC):
    """The baseline's durable side: two durable commits around each order.

    On SQLite (:class:`SqliteCommits`, the default) or, with ``pg`` (the
    ``--store postgres`` run), on the same PostgreSQL server as tradingd's
    store (:class:`~daemon.bench.orders_pg.PgCommits`), in a worker thread
    behind a one-thread limiter, as the store's thread lane does.
    """

    def __init__(self, db_path: Path, pg: PgTarget | None = None) -> None:
        self._db: SqliteCommits | PgCommits = (
            SqliteCommits(db_path) if pg is None else PgCommits(pg)
        )
        self._limiter = trio.CapacityLimiter(1)
        self.clock = StageClock()

    async def open(self) -> None:
        await trio.to_thread.run_sync(self._db.open, limiter=self._limiter)

    async def commit(self, client_order_id: str, kind: str) -> float:
        """One durable commit in the worker thread: the seconds of its COMMIT statement."""
        return await trio.to_thread.run_sync(
            self._db.commit, client_order_id, kind, limiter=self._limiter
        )

    @abc.abstractmethod
    async def send_order(self, client_order_id: str) -> None:
        """Send the signed new order and wait for its answer (parsed, checked)."""

    async def one(self, client_order_id: str) -> tuple[float, float, float, float]:
        """One order: commit, signed new order (answer parsed), commit.

        Returns:
            Seconds in all, in the two commits (thread calls), in the venue
            request, and in the two COMMIT statements.
        """
        clock = self.clock
        clock.mark()
        started = time.perf_counter()
        first = await self.commit(client_order_id, "intent")
        posted = time.perf_counter()
        clock.lap("commit_intent")
        await self.send_order(client_order_id)  # laps build_sign, http_client, decode
        answered = time.perf_counter()
        second = await self.commit(client_order_id, "answer")
        done = time.perf_counter()
        clock.lap("commit_answer")
        commits = (posted - started) + (done - answered)
        return done - started, commits, answered - posted, first + second

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self._db.close, limiter=self._limiter)


class Baseline(_BaselineStore):
    """The REST baseline: a signed ``POST /api/v3/order`` between two FULL commits.

    The request is signed here with :mod:`hmac` exactly as Binance specifies
    (hex HMAC-SHA256 of the query string, keyed with the secret), sent with a
    plain keep-alive httpx2 client, and its JSON answer parsed.
    """

    def __init__(
        self,
        sim_url: str,
        api_key: str,
        api_secret: str,
        db_path: Path,
        pg: PgTarget | None = None,
    ) -> None:
        super().__init__(db_path, pg)
        self.http = httpx2.AsyncClient(base_url=sim_url, timeout=REQUEST_TIMEOUT_S, trust_env=False)
        self._api_key = api_key
        self._secret = api_secret.encode("utf-8")

    async def send_order(self, client_order_id: str) -> None:
        clock = self.clock
        target = signed_order_target(self._secret, client_order_id, time.time_ns() // 1_000_000)
        clock.lap("build_sign")
        response = await self.http.post(target, headers={"X-MBX-APIKEY": self._api_key})
        clock.lap("http_client")
        answer = response.json()
        if response.status_code != 200 or "orderId" not in answer:
            raise BenchError(
                f"baseline order {client_order_id}: simulator answered "
                f"{response.status_code}: {response.text[:300]}"
            )
        clock.lap("decode")

    async def aclose(self) -> None:
        await self.http.aclose()
        await super().aclose()


class WsBaseline(_BaselineStore):
    """The WebSocket API baseline: a signed ``order.place`` between two FULL commits.

    A bare trio-websocket client on one connection kept open across orders
    (tradingd keeps one up as well): each request is the text frame
    ``{"id", "method": "order.place", "params"}`` (:func:`signed_order_params`);
    frames are read until the answer with that ``id`` (JSON-parsed, its
    ``status`` and ``result.orderId`` checked). Answers carry ``rateLimits``,
    the connection's default, as tradingd's do.

    Args:
        nursery: Where trio-websocket runs the connection's reader task (it
            must outlive the baseline: :meth:`aclose` closes the connection).
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        api_secret: str,
        db_path: Path,
        nursery: trio.Nursery,
        *,
        pg: PgTarget | None = None,
    ) -> None:
        super().__init__(db_path, pg)
        self.url = url
        self._api_key = api_key
        self._secret = api_secret.encode("utf-8")
        self._nursery = nursery
        self._ws: trio_websocket.WebSocketConnection | None = None
        self._ids = itertools.count(1)

    async def open(self) -> None:
        await super().open()
        try:
            with trio.fail_after(REQUEST_TIMEOUT_S):
                self._ws = await trio_websocket.connect_websocket_url(
                    self._nursery, self.url, max_message_size=MAX_FRAME_BYTES
                )
        except (trio.TooSlowError, trio_websocket.HandshakeError, OSError) as exc:
            raise BenchError(f"baseline: cannot connect to {self.url}: {exc!r}") from None

    async def send_order(self, client_order_id: str) -> None:
        ws = self._ws
        assert ws is not None, "open() first"
        clock = self.clock
        request_id = f"base-{next(self._ids)}"
        params = signed_order_params(
            self._api_key, self._secret, client_order_id, time.time_ns() // 1_000_000
        )
        frame = json.dumps({"id": request_id, "method": "order.place", "params": params})
        clock.lap("build_sign")
        try:
            with trio.fail_after(REQUEST_TIMEOUT_S):
                await ws.send_message(frame)
                while True:
                    message = await ws.get_message()
                    clock.lap("http_client")
                    answer: Any = json.loads(message)
                    clock.lap("decode")
                    if isinstance(answer, dict) and answer.get("id") == request_id:
                        break
        except trio.TooSlowError:
            raise BenchError(
                f"baseline order {client_order_id}: no answer within {REQUEST_TIMEOUT_S:g}s"
            ) from None
        except trio_websocket.ConnectionClosed as exc:
            raise BenchError(
                f"baseline order {client_order_id}: connection closed: {exc.reason}"
            ) from None
        result = answer.get("result")
        if answer.get("status") != 200 or not isinstance(result, dict) or "orderId" not in result:
            raise BenchError(
                f"baseline order {client_order_id}: simulator answered {json.dumps(answer)[:300]}"
            )

    async def aclose(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with trio.move_on_after(2, shield=True):
                await ws.aclose()
        await super().aclose()
