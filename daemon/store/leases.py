"""Account leases in SQLite: claim, release, read, and the fencing check.

The rules are :mod:`daemon.store.lease_rules`; this module reads the rows
and writes the rules' answers. With SQLite one daemon owns the file, so its
leases are always granted — but they run the same code as PostgreSQL's
(:mod:`daemon.store.pg_leases`), and every order change checks its fencing
token the same way. The store's clock is SQLite's ``julianday('now')`` (the
host's), unless a test passes ``now_ms``.

Pure functions of a :class:`sqlite3.Connection`, run inside the owner's
write transaction (``BEGIN IMMEDIATE``: one writer at a time, so the row read
is the row written).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Final

from daemon.errors import LeaseLostError
from daemon.store.lease_rules import (
    Claim,
    LeaseGrant,
    LeaseRow,
    decide,
    fence_ok,
    released,
    vacant,
)

__all__ = ["check_fence", "claim", "read_leases", "release", "server_now_ms"]

_COLUMNS: Final = "account, owner, holder, token, expires_at_ms, acquired_at_ms, renewed_at_ms"
_NOW: Final = "SELECT CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
_SAVE: Final = (
    "UPDATE account_leases SET owner = ?, holder = ?, token = ?, expires_at_ms = ?, "
    "acquired_at_ms = ?, renewed_at_ms = ? WHERE account = ? AND token = ? AND holder = ?"
)


def server_now_ms(conn: sqlite3.Connection, now_ms: int | None = None) -> int:
    """The store's clock in epoch milliseconds (``now_ms`` if given: tests)."""
    if now_ms is not None:
        return now_ms
    return int(conn.execute(_NOW).fetchone()[0])


def _row(conn: sqlite3.Connection, account: str) -> LeaseRow | None:
    found = conn.execute(
        f"SELECT {_COLUMNS} FROM account_leases WHERE account = ?", (account,)
    ).fetchone()
    return None if found is None else LeaseRow(*found)


def _save(conn: sqlite3.Connection, new: LeaseRow, old: LeaseRow) -> None:
    cursor = conn.execute(
        _SAVE,
        (
            new.owner,
            new.holder,
            new.token,
            new.expires_at_ms,
            new.acquired_at_ms,
            new.renewed_at_ms,
            old.account,
            old.token,
            old.holder,
        ),
    )
    if cursor.rowcount != 1:  # pragma: no cover - BEGIN IMMEDIATE: nobody moved it
        raise sqlite3.OperationalError(f"lease row of {old.account!r} changed under its writer")


def claim(
    conn: sqlite3.Connection,
    accounts: Iterable[str],
    *,
    owner: str,
    holder: str,
    ttl_ms: int,
    claim: Claim,
    now_ms: int | None = None,
) -> list[LeaseGrant]:
    """Claim (take, start or renew) the leases of ``accounts``, in account order.

    Returns one :class:`~daemon.store.lease_rules.LeaseGrant` per account:
    held or not, the row before and after. A refused claim changes nothing.
    """
    now = server_now_ms(conn, now_ms)
    grants = []
    for account in sorted(set(accounts)):
        current = _row(conn, account)
        if current is None:
            conn.execute(
                f"INSERT INTO account_leases ({_COLUMNS}) VALUES (?, '', '', 0, 0, 0, 0)",
                (account,),
            )
            current = vacant(account)
        new = decide(current, owner=owner, holder=holder, now_ms=now, ttl_ms=ttl_ms, claim=claim)
        if new is None:
            grants.append(LeaseGrant(account, False, current, current, now))
            continue
        _save(conn, new, current)
        grants.append(LeaseGrant(account, True, new, current, now))
    return grants


def release(
    conn: sqlite3.Connection,
    accounts: Iterable[str],
    *,
    owner: str,
    holder: str,
    now_ms: int | None = None,
) -> list[str]:
    """Give up the leases of ``accounts`` this holder holds (expired now); the released ones."""
    now = server_now_ms(conn, now_ms)
    done = []
    for account in sorted(set(accounts)):
        current = _row(conn, account)
        if current is None:
            continue
        new = released(current, owner=owner, holder=holder, now_ms=now)
        if new is not None:
            _save(conn, new, current)
            done.append(account)
    return done


def read_leases(conn: sqlite3.Connection, now_ms: int | None = None) -> tuple[int, list[LeaseRow]]:
    """Every lease row (by account) and the store's clock."""
    now = server_now_ms(conn, now_ms)
    rows = conn.execute(f"SELECT {_COLUMNS} FROM account_leases ORDER BY account").fetchall()
    return now, [LeaseRow(*row) for row in rows]


def check_fence(conn: sqlite3.Connection, account: str, owner: str, token: int | None) -> None:
    """Raise :class:`~daemon.errors.LeaseLostError` unless ``account``'s lease still carries
    ``(owner, token)``; inside the caller's write transaction, before it writes."""
    row = _row(conn, account)
    if token is None or not fence_ok(row, owner=owner, token=token):
        raise LeaseLostError(account, _why(row, owner, token), holder=_who(row))


def _who(row: LeaseRow | None) -> str | None:
    return None if row is None else f"{row.owner or '(nobody)'} (token {row.token})"


def _why(row: LeaseRow | None, owner: str, token: int | None) -> str:
    if token is None:
        return f"{owner} does not hold it here (standby or released)"
    if row is None:
        return "no lease row"
    return f"held by {_who(row)}, not {owner} (token {token})"
