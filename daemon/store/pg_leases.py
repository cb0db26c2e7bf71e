"""Account leases in PostgreSQL: claim, release, read, and the fencing check.

The rules are :mod:`daemon.store.lease_rules` (as for SQLite,
:mod:`daemon.store.leases`). What PostgreSQL adds, because several daemons
write at once:

* **the server's clock**: expiry is decided with ``clock_timestamp()`` of the
  server, never a daemon's clock, so daemons on hosts whose clocks differ
  agree on when a lease has run out;
* **row locks**: a claim reads the lease row ``FOR UPDATE`` (two daemons
  claiming at once are serialised: the second sees the first's result) and
  writes it back with a compare-and-set on the token and holder it read;
* **the fencing check holds the row** ``FOR SHARE`` until the order change's
  transaction ends (:func:`check_fence`), so a takeover (an ``UPDATE`` of
  that row) waits for every change already checked to commit, and every
  change checked after it sees the new token and fails. An order change and
  a takeover are thus strictly ordered: no change of the old holder commits
  after the new holder took the account.

Lock order: an order change locks its intent row, then the lease row
(:mod:`daemon.store.pg_orders_transitions`); a claim locks only lease rows,
in account order. No cycle, no deadlock.

Pure functions of a :class:`psycopg.Connection`, run inside the owner's
write transaction (see :mod:`daemon.store.pg_lane`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from daemon.errors import LeaseLostError
from daemon.store.lease_rules import Claim, LeaseGrant, LeaseRow, decide, fence_ok, released

__all__ = ["check_fence", "claim", "read_leases", "release", "server_now_ms"]

Conn = Any  # psycopg.Connection

_COLUMNS: Final = "account, owner, holder, token, expires_at_ms, acquired_at_ms, renewed_at_ms"
_NOW: Final = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
_SAVE: Final = (
    "UPDATE account_leases SET owner = %s, holder = %s, token = %s, expires_at_ms = %s, "
    "acquired_at_ms = %s, renewed_at_ms = %s WHERE account = %s AND token = %s AND holder = %s"
)


def server_now_ms(conn: Conn, now_ms: int | None = None) -> int:
    """The server's clock in epoch milliseconds (``now_ms`` if given: tests)."""
    if now_ms is not None:
        return now_ms
    return int(conn.execute(_NOW).fetchone()[0])


def _row(conn: Conn, account: str, lock: str) -> LeaseRow | None:
    found = conn.execute(
        f"SELECT {_COLUMNS} FROM account_leases WHERE account = %s FOR {lock}", (account,)
    ).fetchone()
    return None if found is None else LeaseRow(*found)


def _save(conn: Conn, new: LeaseRow, old: LeaseRow) -> None:
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
    if cursor.rowcount != 1:  # pragma: no cover - the row is locked FOR UPDATE
        raise RuntimeError(f"lease row of {old.account!r} changed under its writer")


def claim(
    conn: Conn,
    accounts: Iterable[str],
    *,
    owner: str,
    holder: str,
    ttl_ms: int,
    claim: Claim,
    now_ms: int | None = None,
) -> list[LeaseGrant]:
    """Claim (take, start or renew) the leases of ``accounts``, in account order.

    See :func:`daemon.store.leases.claim`. The clock is read after the rows
    are locked, so a claim that waited for another one decides on the time
    it actually runs.
    """
    wanted = sorted(set(accounts))
    if wanted:
        with conn.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO account_leases ({_COLUMNS}) VALUES (%s, '', '', 0, 0, 0, 0) "
                "ON CONFLICT (account) DO NOTHING",
                [(account,) for account in wanted],
            )
    rows = {}
    for account in wanted:
        row = _row(conn, account, "UPDATE")
        assert row is not None  # inserted above (or already there)
        rows[account] = row
    now = server_now_ms(conn, now_ms)
    grants = []
    for account in wanted:
        current = rows[account]
        new = decide(current, owner=owner, holder=holder, now_ms=now, ttl_ms=ttl_ms, claim=claim)
        if new is None:
            grants.append(LeaseGrant(account, False, current, current, now))
            continue
        _save(conn, new, current)
        grants.append(LeaseGrant(account, True, new, current, now))
    return grants


def release(
    conn: Conn, accounts: Iterable[str], *, owner: str, holder: str, now_ms: int | None = None
) -> list[str]:
    """Give up the leases of ``accounts`` this holder holds (expired now); the released ones."""
    done = []
    wanted = sorted(set(accounts))
    rows = [row for account in wanted if (row := _row(conn, account, "UPDATE")) is not None]
    now = server_now_ms(conn, now_ms)
    for current in rows:
        new = released(current, owner=owner, holder=holder, now_ms=now)
        if new is not None:
            _save(conn, new, current)
            done.append(current.account)
    return done


def read_leases(conn: Conn, now_ms: int | None = None) -> tuple[int, list[LeaseRow]]:
    """Every lease row (by account) and the server's clock."""
    now = server_now_ms(conn, now_ms)
    rows = conn.execute(
        f'SELECT {_COLUMNS} FROM account_leases ORDER BY account COLLATE "C"'
    ).fetchall()
    return now, [LeaseRow(*row) for row in rows]


def check_fence(conn: Conn, account: str, owner: str, token: int | None) -> None:
    """Raise :class:`~daemon.errors.LeaseLostError` unless ``account``'s lease still carries
    ``(owner, token)``; the row stays locked ``FOR SHARE`` until the caller's
    transaction ends (see the module docstring)."""
    row = _row(conn, account, "SHARE")
    if token is None or not fence_ok(row, owner=owner, token=token):
        who = None if row is None else f"{row.owner or '(nobody)'} (token {row.token})"
        if token is None:
            detail = f"{owner} does not hold it here (standby or released)"
        elif row is None:
            detail = "no lease row"
        else:
            detail = f"held by {who}, not {owner} (token {token})"
        raise LeaseLostError(account, detail, holder=who)
