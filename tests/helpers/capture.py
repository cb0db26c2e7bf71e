"""The market-data capture process tests' witnesses and configuration.

Independent witnesses, so that the daemon under test is never asked to vouch
for itself:

* :class:`~tests.helpers.sim.SimProcess` — ``tradingd sim`` as a subprocess and
  a plain HTTP client of its control API (``/sim/trades`` is the venue's own
  record of what it published, ``/sim/faults`` arms stream faults and counts
  their hits);
* :class:`StoreReader` — the daemon's store read **read-only**, independent of
  :mod:`daemon.store`: the SQLite file with the standard library (``mode=ro``,
  :class:`~tests.helpers.process.ReadOnlyDatabase`) or the PostgreSQL schema
  with plain psycopg (:class:`~tests.helpers.pg_witness.PgReadOnly`);
* :func:`rss_bytes` — the kernel's view of the daemon's memory
  (``/proc/PID/status``).

The daemon side (notify socket, READY, log, config file) is
:class:`tests.helpers.process.Harness`; :func:`capture_config` adds the
``[store]``, ``[marketdata]`` and ``[venues.sim]`` sections to its base
configuration (``store``: the ``[store]`` keys of a
:class:`~tests.helpers.process.StoreUnderTest`; default the SQLite file
``capture.db``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

from tests.helpers.process import Harness, StoreWitness, as_witness
from tests.helpers.sim import SimProcess, venue_table

#: The ``[venues.NAME]`` the daemon captures from (and the ``venue`` of every stored trade).
VENUE = "sim"
#: The database file of the SQLite runs (under the daemon's state_dir).
DB_NAME = "capture.db"


# --------------------------------------------------------------------------- daemon config


def capture_config(
    h: Harness,
    *,
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
    store: str | None = None,
) -> str:
    """``h``'s base test configuration plus capture from ``sim``.

    The venue's key and secret are the simulator's default account (the
    example key of Binance's docs), given as ``{ file = ... }`` references;
    ``api_key=False`` configures the venue without any (capture needs none:
    ``historicalTrades``, the backfill, is security type NONE, as on Binance).
    ``tail_check_interval_s`` is left to its default unless given.
    """
    q = json.dumps  # a JSON string is a valid TOML basic string for these values
    venue = venue_table(h.tmp_path / "secrets", sim.rest_url, sim.ws_url, keys=api_key, name=VENUE)
    tail = (
        f"tail_check_interval_s = {tail_check_interval_s}\n"
        if tail_check_interval_s is not None
        else ""
    )
    base = h.config_text(level=level, shutdown_timeout_s=shutdown_timeout_s)
    return (
        base
        + f"""
[store]
{store if store is not None else f"path = {q(DB_NAME)}"}
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
{venue}request_timeout_s = 5.0
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
    """The market-data tables of the daemon's store, read-only (run the calls in a thread).

    ``db``: the SQLite database file, or a :class:`~tests.helpers.process.StoreWitness`
    of either backend.
    """

    def __init__(self, db: Path | StoreWitness, venue: str = VENUE) -> None:
        self.db = as_witness(db)
        self.venue = venue

    def exists(self) -> bool:
        """Whether the daemon has created its store yet."""
        return self.db.exists()

    def last_ids(self, symbols: Sequence[str]) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for symbol in symbols:
            row = self.db.fetchone(
                "SELECT max(trade_id) FROM trades WHERE venue = ? AND symbol = ?",
                (self.venue, symbol),
            )
            out[symbol] = None if row[0] is None else int(row[0])
        return out

    def last_trade(self, symbol: str) -> StoredTrade | None:
        """The stored trade with the highest id (``None``: nothing stored)."""
        row = self.db.fetchone(
            "SELECT trade_id, price, quantity, buyer_is_maker, trade_time_ms FROM trades "
            "WHERE venue = ? AND symbol = ? ORDER BY trade_id DESC LIMIT 1",
            (self.venue, symbol),
        )
        if row is None:
            return None
        return StoredTrade(int(row[0]), Decimal(row[1]), Decimal(row[2]), bool(row[3]), int(row[4]))

    def trades(self, symbol: str) -> list[StoredTrade]:
        rows = self.db.fetchall(
            "SELECT trade_id, price, quantity, buyer_is_maker, trade_time_ms FROM trades "
            "WHERE venue = ? AND symbol = ? ORDER BY trade_id",
            (self.venue, symbol),
        )
        return [
            StoredTrade(int(r[0]), Decimal(r[1]), Decimal(r[2]), bool(r[3]), int(r[4]))
            for r in rows
        ]

    def gaps(self, symbol: str) -> list[GapRow]:
        rows = self.db.fetchall(
            "SELECT from_id, to_id, state, reason FROM gaps "
            "WHERE venue = ? AND symbol = ? ORDER BY from_id",
            (self.venue, symbol),
        )
        return [GapRow(int(r[0]), int(r[1]), str(r[2]), str(r[3])) for r in rows]

    def dead_letters(self, source_prefix: str) -> list[tuple[str, str]]:
        """``(source, raw text)`` of the dead letters whose source starts with the prefix.

        A payload stored as JSON (``payload_kind = 'json'``) is decoded: a raw
        frame kept as a JSON string comes back as that string.
        """
        rows = self.db.fetchall(
            "SELECT source, payload_kind, payload FROM dead_letters "
            "WHERE substr(source, 1, ?) = ? ORDER BY letter_id",
            (len(source_prefix), source_prefix),
        )
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
        row = self.db.fetchone(
            "SELECT count(*) FROM trades WHERE venue = ? AND symbol = ?", (self.venue, symbol)
        )
        return int(row[0])


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
