"""The witnesses a scenario is judged by, read from outside the daemon.

The daemon never vouches for itself. :func:`read_venue` reads what the venue
really did through the simulator's own record — every order it accepted
(``GET /sim/audit``, with ``clientOrderId`` and parameters), every trade it
published (``GET /sim/trades``) — and the account's executions through a
signed ``GET /api/v3/myTrades`` made with the standard library.
:func:`read_store` reads the daemon's SQLite file read-only (``mode=ro``, the
standard library, nothing from :mod:`daemon.store`) after the daemon stopped,
and runs ``PRAGMA integrity_check`` on it.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
import time
import urllib.parse
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import trio

from daemon.torture.procs import SimProc, TortureError
from daemon.torture.setup import SYMBOL, VENUE
from daemon.venues.sim.config import DOCS_API_KEY, DOCS_SECRET_KEY

__all__ = [
    "Fill",
    "StoreView",
    "VenueOrder",
    "VenueView",
    "last_stored_trade_id",
    "read_store",
    "read_venue",
]

PAGE = 1000


@attrs.frozen
class VenueOrder:
    order_id: int
    client_order_id: str
    symbol: str
    side: str
    type: str
    price: Decimal | None
    quantity: Decimal


@attrs.frozen
class Fill:
    trade_id: int
    order_id: int
    price: Decimal
    quantity: Decimal
    is_buyer: bool


@attrs.frozen
class Trade:
    trade_id: int
    price: Decimal
    quantity: Decimal
    time_ms: int
    buyer_is_maker: bool


@attrs.define
class VenueView:
    orders: list[VenueOrder]
    fills: list[Fill]
    #: Every published trade of :data:`SYMBOL`, by id.
    trades: dict[int, Trade]


@attrs.frozen
class Intent:
    client_order_id: str
    message_id: str
    account: str
    symbol: str
    side: str
    type: str
    quantity: Decimal
    price: Decimal | None
    state: str
    venue_order_id: int | None
    executed: Decimal
    cancel_requested: bool


@attrs.define
class StoreView:
    intents: dict[str, Intent]
    #: client_order_id -> [(from_state, to_state, reason, at_ms)] in order.
    history: dict[str, list[tuple[str | None, str, str, int]]]
    fills: list[tuple[str, Fill]]
    positions: dict[tuple[str, str], Decimal]
    trades: dict[int, Trade]
    #: (from_id, to_id, state) of every recorded gap.
    gaps: list[tuple[int, int, str]]
    integrity: str


def _decimal(value: Any) -> Decimal | None:
    return None if value in (None, "") else Decimal(str(value))


async def read_venue(sim: SimProc) -> VenueView:
    """The venue's record (the simulator must be running)."""
    orders: list[VenueOrder] = []
    from_seq = 0
    while True:
        page = (
            await sim.control(
                "GET", f"/sim/audit?apiKey={DOCS_API_KEY}&fromSeq={from_seq}&limit={PAGE}"
            )
        )["orders"]
        for r in page:
            params = r.get("params", {})
            orders.append(
                VenueOrder(
                    order_id=int(r["orderId"]),
                    client_order_id=str(r["clientOrderId"]),
                    symbol=str(r["symbol"]),
                    side=str(params.get("side")),
                    type=str(params.get("type")),
                    price=_decimal(params.get("price")),
                    quantity=Decimal(str(params.get("quantity"))),
                )
            )
        if len(page) < PAGE:
            break
        from_seq = int(page[-1]["seq"]) + 1
    trades: dict[int, Trade] = {}
    from_id: int | None = None
    while True:
        query = f"/sim/trades?symbol={SYMBOL}&limit=100000"
        if from_id is not None:
            query += f"&fromId={from_id}"
        rows = (await sim.control("GET", query))["trades"]
        for t in rows:
            trades[int(t["id"])] = Trade(
                int(t["id"]),
                Decimal(t["price"]),
                Decimal(t["qty"]),
                int(t["time"]),
                bool(t["isBuyerMaker"]),
            )
        if len(rows) < 100000:
            break
        from_id = int(rows[-1]["id"]) + 1
    return VenueView(orders, await _my_trades(sim), trades)


async def _my_trades(sim: SimProc) -> list[Fill]:
    """The account's executions, signed ``GET /api/v3/myTrades`` paged by ``fromId``."""
    fills: list[Fill] = []
    from_id = 0
    while True:
        params = {"symbol": SYMBOL, "fromId": from_id, "limit": PAGE, "recvWindow": 60000}
        rows = await _signed_get(sim, "/api/v3/myTrades", params)
        fills.extend(
            Fill(
                int(r["id"]),
                int(r["orderId"]),
                Decimal(r["price"]),
                Decimal(r["qty"]),
                bool(r["isBuyer"]),
            )
            for r in rows
        )
        if len(rows) < PAGE:
            return fills
        from_id = int(rows[-1]["id"]) + 1


async def _signed_get(sim: SimProc, path: str, params: dict[str, Any]) -> Any:
    """A signed GET (HMAC-SHA256 of the query, as Binance documents it, with the standard
    library); waits out a 429/418: the IP's request weight is shared with the daemon."""
    deadline = trio.current_time() + 120.0
    while True:
        signed = urllib.parse.urlencode({**params, "timestamp": int(time.time() * 1000)})
        signature = hmac.new(DOCS_SECRET_KEY.encode(), signed.encode(), hashlib.sha256).hexdigest()
        with trio.fail_after(15.0):
            response = await sim.http.get(
                f"{path}?{signed}&signature={signature}", headers={"X-MBX-APIKEY": DOCS_API_KEY}
            )
        if response.status_code == 200:
            return response.json()
        if response.status_code not in (418, 429) or trio.current_time() > deadline:
            raise TortureError(f"{path}: {response.status_code} {response.text}")
        await trio.sleep(min(float(response.headers.get("retry-after") or 1), 10.0))


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)


def last_stored_trade_id(path: Path) -> int:
    """The highest trade id in the daemon's store (0: none), read-only (blocking)."""
    conn = _read_only(path)
    try:
        return int(conn.execute("SELECT max(trade_id) FROM trades").fetchone()[0] or 0)
    finally:
        conn.close()


def read_store(path: Path) -> StoreView:
    """The daemon's store, read-only (blocking: run it in a thread, the daemon stopped)."""
    conn = _read_only(path)
    try:
        q = conn.execute
        intents = {
            str(r[0]): Intent(
                client_order_id=str(r[0]),
                message_id=str(r[1]),
                account=str(r[2]),
                symbol=str(r[3]),
                side=str(r[4]),
                type=str(r[5]),
                quantity=Decimal(r[6]),
                price=_decimal(r[7]),
                state=str(r[8]),
                venue_order_id=None if r[9] is None else int(r[9]),
                executed=Decimal(r[10]),
                cancel_requested=r[11] is not None,
            )
            for r in q(
                "SELECT client_order_id, message_id, account, symbol, side, type, quantity, "
                "price, state, venue_order_id, executed_qty, cancel_requested_at_ms "
                "FROM order_intents ORDER BY seq"
            )
        }
        history: dict[str, list[tuple[str | None, str, str, int]]] = {}
        for coid, source, target, reason, at_ms in q(
            "SELECT client_order_id, from_state, to_state, reason, at_ms FROM order_history "
            "ORDER BY client_order_id, seq"
        ):
            history.setdefault(str(coid), []).append((source, str(target), str(reason), at_ms))
        fills = [
            (str(r[0]), Fill(int(r[1]), int(r[2]), Decimal(r[3]), Decimal(r[4]), r[5] == "BUY"))
            for r in q(
                "SELECT client_order_id, trade_id, venue_order_id, price, quantity, side "
                "FROM order_fills ORDER BY trade_id"
            )
        ]
        positions = {
            (str(a), str(s)): Decimal(n)
            for a, s, n in q("SELECT account, symbol, quantity FROM positions")
        }
        trades = {
            int(r[0]): Trade(int(r[0]), Decimal(r[1]), Decimal(r[2]), int(r[3]), bool(r[4]))
            for r in q(
                "SELECT trade_id, price, quantity, trade_time_ms, buyer_is_maker FROM trades "
                "WHERE venue = ? AND symbol = ?",
                (VENUE, SYMBOL),
            )
        }
        gaps = [
            (int(a), int(b), str(s))
            for a, b, s in q(
                "SELECT from_id, to_id, state FROM gaps WHERE venue = ? AND symbol = ?",
                (VENUE, SYMBOL),
            )
        ]
        integrity = "; ".join(str(r[0]) for r in q("PRAGMA integrity_check"))
    finally:
        conn.close()
    return StoreView(intents, history, fills, positions, trades, gaps, integrity)
