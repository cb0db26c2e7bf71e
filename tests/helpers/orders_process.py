"""The order pipeline's process-level tests: witnesses and configuration.

The daemon under test never vouches for itself here. Four witnesses:

* the simulator's **audit log** (``GET /sim/audit``, :func:`audit_orders`):
  every order the venue accepted, with its ``clientOrderId`` — including the
  ones whose answer the daemon never saw;
* the daemon's store read **read-only** (:class:`OrderStoreReader`),
  independent of :mod:`daemon.store`: the SQLite file with the standard
  library, or the PostgreSQL schema with plain psycopg
  (:class:`~tests.helpers.pg_witness.PgReadOnly`);
* the venue's record of the account's **executions** (``GET
  /api/v3/myTrades``, :func:`venue_fills`), signed with the standard library;
* the **client's own record** of which intents it had confirmed
  (:class:`OrderClient`): an intent counts as accepted only once ``POST
  /orders`` answered 200 or 202, which the daemon promises to do only after
  the intent is durable.

:func:`orders_config` writes the daemon's configuration: the base of
:class:`tests.helpers.process.Harness` plus a store, the simulator as ``[venues.sim]`` (the
example key of Binance's docs, the sim's default account) and one
``[accounts.main]`` trading on it, with short ``[orders]`` timeouts so that
ambiguous outcomes resolve in seconds (``store``: the ``[store]`` keys of a
:class:`~tests.helpers.process.StoreUnderTest`; default the SQLite file
:data:`DB_NAME`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import attrs
import httpx2
import trio

from daemon.venues.sim.config import DOCS_API_KEY, DOCS_SECRET_KEY
from tests.helpers.process import Harness, StoreWitness, as_witness
from tests.helpers.sim import SimProcess, venue_table

__all__ = [
    "ACCOUNT",
    "DB_NAME",
    "SYMBOL",
    "VENUE",
    "AuditOrder",
    "ClientAnswer",
    "Fill",
    "HistoryRow",
    "OrderClient",
    "OrderStoreReader",
    "StoredIntent",
    "audit_has",
    "audit_orders",
    "orders_config",
    "venue_fills",
]

VENUE = "sim"
ACCOUNT = "main"
SYMBOL = "BTCUSDT"
DB_NAME = "orders.db"
#: Largest page read from ``GET /sim/audit`` at once.
AUDIT_PAGE = 1000


# --------------------------------------------------------------------------- daemon config


def orders_config(
    h: Harness,
    *,
    sim: SimProcess,
    orders: Mapping[str, float | int | str],
    recv_window_ms: int,
    request_timeout_s: float,
    level: str = "info",
    shutdown_timeout_s: float = 15.0,
    user_stream: bool = True,
    order_transport: Literal["rest", "ws-api"] = "rest",
    store: str | None = None,
) -> str:
    """The base test configuration plus a store, the sim as a venue and one account.

    ``user_stream = False`` turns the venue's user data stream off (a test of
    the query rules alone: the stream would resolve an UNKNOWN order first).
    ``order_transport`` is written into the venue table: ``"ws-api"`` sends
    orders, cancels and order queries over the simulator's WebSocket API
    (``<ws_url>/ws-api/v3``, derived from the venue's ``ws_url``).

    ``orders`` is written as the ``[orders]`` table as given. Pre-trade risk
    limits are lifted (``max_orders_per_window = 0``, ``max_open_orders =
    0``): the test is about the outbox and the executor, and a risk reject
    would only make fewer intents durable.
    """
    venue = venue_table(h.tmp_path / "secrets", sim.rest_url, sim.ws_url, name=VENUE)
    q = json.dumps  # a JSON string (or number) is valid TOML for these values
    orders_table = "\n".join(f"{key} = {q(value)}" for key, value in orders.items())
    base = h.config_text(level=level, shutdown_timeout_s=shutdown_timeout_s)
    return (
        base
        + f"""
[store]
{store if store is not None else f"path = {q(DB_NAME)}"}

[orders]
{orders_table}

[risk]
max_orders_per_window = 0
max_open_orders = 0

{venue}recv_window_ms = {recv_window_ms}
user_stream = {"true" if user_stream else "false"}
order_transport = {q(order_transport)}
request_timeout_s = {request_timeout_s}

[accounts.{ACCOUNT}]
venue = {q(VENUE)}
"""
    )


# --------------------------------------------------------------------------- the venue's view


@attrs.frozen
class AuditOrder:
    """One order the simulator accepted (a record of ``GET /sim/audit``)."""

    seq: int
    #: When the venue accepted it (the sim's wall clock, epoch ms).
    time_ms: int
    order_id: int
    client_order_id: str
    symbol: str
    status: str
    side: str
    type: str
    #: How the order reached the venue: ``"rest"`` or ``"ws-api"``.
    transport: str = "rest"


async def audit_orders(sim: SimProcess, api_key: str = DOCS_API_KEY) -> list[AuditOrder]:
    """Every order the simulator accepted for ``api_key``, oldest first (paged by ``seq``)."""
    out: list[AuditOrder] = []
    from_seq = 0
    while True:
        answer = await sim.control(
            "GET", f"/sim/audit?apiKey={api_key}&fromSeq={from_seq}&limit={AUDIT_PAGE}"
        )
        page = answer["orders"]
        out.extend(
            AuditOrder(
                seq=int(r["seq"]),
                time_ms=int(r["time"]),
                order_id=int(r["orderId"]),
                client_order_id=str(r["clientOrderId"]),
                symbol=str(r["symbol"]),
                status=str(r["status"]),
                side=str(r["params"].get("side")),
                type=str(r["params"].get("type")),
                transport=str(r.get("transport", "rest")),
            )
            for r in page
        )
        if len(page) < AUDIT_PAGE:
            return out
        from_seq = out[-1].seq + 1


async def audit_has(sim: SimProcess, client_order_id: str) -> bool:
    """Whether the simulator accepted an order with this client order id (ever)."""
    answer = await sim.control("GET", f"/sim/audit?clientOrderId={client_order_id}&limit=1")
    return bool(answer["orders"])


@attrs.frozen
class Fill:
    """One execution of one of our orders, as the venue or the store tells it."""

    trade_id: int
    order_id: int
    price: Decimal
    quantity: Decimal
    is_buyer: bool


async def venue_fills(
    sim: SimProcess,
    symbol: str,
    *,
    api_key: str = DOCS_API_KEY,
    secret: str = DOCS_SECRET_KEY,
) -> list[Fill]:
    """The account's executions from the venue itself (signed ``GET /api/v3/myTrades``).

    Signed here with the standard library (HMAC-SHA256 of the query string, as
    Binance documents it), not with the daemon's client: the venue's record
    must not depend on the code under test. One page of at most 1000 holds
    every fill of the test's orders.
    """
    query = urllib.parse.urlencode(
        {"symbol": symbol, "limit": 1000, "timestamp": int(time.time() * 1000)}
    )
    signature = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    with trio.fail_after(10.0):
        response = await sim.http.get(
            f"/api/v3/myTrades?{query}&signature={signature}", headers={"X-MBX-APIKEY": api_key}
        )
    assert response.status_code == 200, f"myTrades: {response.status_code} {response.text}"
    rows = response.json()
    assert len(rows) < 1000, "more fills than one page"
    return [
        Fill(
            trade_id=int(r["id"]),
            order_id=int(r["orderId"]),
            price=Decimal(r["price"]),
            quantity=Decimal(r["qty"]),
            is_buyer=bool(r["isBuyer"]),
        )
        for r in rows
    ]


# --------------------------------------------------------------------------- the store file


@attrs.frozen
class StoredIntent:
    """The columns of ``order_intents`` the test judges."""

    client_order_id: str
    message_id: str
    account: str
    symbol: str
    type: str
    state: str
    venue_order_id: int | None
    send_attempts: int
    reject_code: int | None


@attrs.frozen
class HistoryRow:
    """One row of ``order_history`` (``source`` is ``None`` for the first)."""

    seq: int
    source: str | None
    target: str
    reason: str


class OrderStoreReader:
    """The order tables of the daemon's store, read-only (run the calls in a thread).

    ``db``: the SQLite database file, or a :class:`~tests.helpers.process.StoreWitness`
    of either backend.
    """

    def __init__(self, db: Path | StoreWitness) -> None:
        self.db = as_witness(db)

    def exists(self) -> bool:
        """Whether the daemon has created its store yet."""
        return self.db.exists()

    def _fetchall_if_created(self, sql: str) -> list[Any]:
        """The rows of ``sql``; none before the store or its tables exist."""
        return self.db.fetchall_if_created(sql)

    def state_counts(self) -> dict[str, int]:
        """Intents per state (``{}`` before the file or its tables exist)."""
        rows = self._fetchall_if_created("SELECT state, count(*) FROM order_intents GROUP BY state")
        return {str(state): int(n) for state, n in rows}

    def sending(self) -> list[tuple[str, str, int]]:
        """``(client_order_id, type, sent_at_ms)`` of the intents SENDING now."""
        rows = self._fetchall_if_created(
            "SELECT client_order_id, type, sent_at_ms FROM order_intents "
            "WHERE state = 'SENDING' ORDER BY seq"
        )
        return [(str(r[0]), str(r[1]), int(r[2] or 0)) for r in rows]

    def state(self, client_order_id: str) -> str | None:
        """The stored state of one intent (``None``: no such intent)."""
        row = self.db.fetchone(
            "SELECT state FROM order_intents WHERE client_order_id = ?", (client_order_id,)
        )
        return None if row is None else str(row[0])

    def intents(self) -> dict[str, StoredIntent]:
        rows = self.db.fetchall(
            "SELECT client_order_id, message_id, account, symbol, type, state, "
            "venue_order_id, send_attempts, reject_code FROM order_intents ORDER BY seq"
        )
        return {
            str(r[0]): StoredIntent(
                client_order_id=str(r[0]),
                message_id=str(r[1]),
                account=str(r[2]),
                symbol=str(r[3]),
                type=str(r[4]),
                state=str(r[5]),
                venue_order_id=None if r[6] is None else int(r[6]),
                send_attempts=int(r[7]),
                reject_code=None if r[8] is None else int(r[8]),
            )
            for r in rows
        }

    def fills(self) -> list[tuple[str, Fill]]:
        """``(client_order_id, fill)`` of every stored fill."""
        rows = self.db.fetchall(
            "SELECT client_order_id, trade_id, venue_order_id, price, quantity, side "
            "FROM order_fills ORDER BY trade_id"
        )
        return [
            (str(r[0]), Fill(int(r[1]), int(r[2]), Decimal(r[3]), Decimal(r[4]), r[5] == "BUY"))
            for r in rows
        ]

    def positions(self) -> dict[tuple[str, str], Decimal]:
        """The ``positions`` table: (account, symbol) -> signed base quantity."""
        rows = self.db.fetchall("SELECT account, symbol, quantity FROM positions")
        return {(str(r[0]), str(r[1])): Decimal(r[2]) for r in rows}

    def executed(self) -> dict[str, Decimal]:
        """client_order_id -> ``executed_qty`` as the intent row says."""
        rows = self.db.fetchall("SELECT client_order_id, executed_qty FROM order_intents")
        return {str(c): Decimal(q) for c, q in rows}

    def history(self) -> dict[str, list[HistoryRow]]:
        """Every intent's state history, in ``seq`` order."""
        rows = self.db.fetchall(
            "SELECT client_order_id, seq, from_state, to_state, reason FROM order_history "
            "ORDER BY client_order_id, seq"
        )
        out: dict[str, list[HistoryRow]] = {}
        for coid, seq, source, target, reason in rows:
            out.setdefault(str(coid), []).append(
                HistoryRow(int(seq), None if source is None else str(source), str(target), reason)
            )
        return out


# --------------------------------------------------------------------------- the client


@attrs.frozen
class ClientAnswer:
    """What ``POST /orders`` answered (``status`` 0: no HTTP answer at all)."""

    status: int
    body: dict[str, Any]
    retry_after_s: float | None = None
    error: str | None = None


class OrderClient:
    """A client of the admin API's order entry that follows the daemon across restarts.

    The daemon's admin port changes with every incarnation (it binds port
    0): :attr:`base_url` is set by the test when an incarnation is ready;
    until then requests go to the dead one's port and fail (connection
    refused), as a real client's would. :meth:`submit` waits for a first URL,
    then makes one attempt and reports what happened; retrying is the
    caller's policy.
    """

    def __init__(self, token: str, *, request_timeout_s: float) -> None:
        self._token = token
        self._timeout_s = request_timeout_s
        self._url: str | None = None
        self._url_set = trio.Event()
        self.http = httpx2.AsyncClient(
            trust_env=False,
            timeout=request_timeout_s,
            limits=httpx2.Limits(max_keepalive_connections=0),
        )

    @property
    def base_url(self) -> str | None:
        return self._url

    @base_url.setter
    def base_url(self, url: str | None) -> None:
        self._url = url
        if url is None:
            if self._url_set.is_set():
                self._url_set = trio.Event()
        else:
            self._url_set.set()

    async def _base(self) -> str:
        while self._url is None:
            await self._url_set.wait()
        return self._url

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    async def submit(self, body: Mapping[str, Any]) -> ClientAnswer:
        """One ``POST /orders`` attempt; transport failures come back as ``status`` 0."""
        url = await self._base()
        try:
            with trio.fail_after(self._timeout_s + 1.0):
                response = await self.http.post(
                    f"{url}/orders", json=dict(body), headers=self._headers()
                )
        except (httpx2.HTTPError, trio.TooSlowError, OSError) as exc:
            return ClientAnswer(0, {}, error=f"{type(exc).__name__}: {exc}")
        try:
            payload = response.json()
        except ValueError:
            payload = {"raw": response.text[:500]}
        retry_after = response.headers.get("retry-after")
        return ClientAnswer(
            response.status_code,
            payload if isinstance(payload, dict) else {"raw": payload},
            retry_after_s=float(retry_after) if retry_after else None,
        )

    async def get_json(self, path: str) -> tuple[int, Any]:
        """``GET path`` with the token on the current incarnation (status and JSON body)."""
        url = await self._base()
        with trio.fail_after(self._timeout_s + 1.0):
            response = await self.http.get(f"{url}{path}", headers=self._headers())
        return response.status_code, response.json()

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self.http.aclose()
