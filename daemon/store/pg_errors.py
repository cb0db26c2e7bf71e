"""PostgreSQL's errors as store errors, and the DSN as it may be shown.

:func:`translate_pg_error` is the PostgreSQL counterpart of
:func:`~daemon.store.errors.translate_error`: called once, inside the owner's
lane, so nothing above the store sees a raw :class:`psycopg.Error`. It maps
by SQLSTATE class:

* the connection (``08…``, a lost socket, ``57P01`` admin shutdown, ``57P02``
  crash shutdown, ``57P03`` cannot connect now, system errors ``58…``) →
  :class:`~daemon.store.errors.StoreIOError` (transient; the owner drops the
  connection and opens a new one on its next call);
* contention (``40001`` serialization failure, ``40P01`` deadlock, ``55P03``
  lock timeout, ``57014`` statement timeout, ``53200``/``53300``/``53400``
  out of memory, too many connections, a configured limit) →
  :class:`~daemon.store.errors.StoreBusyError` (the owner retries the first
  two itself);
* ``53100`` disk full → :class:`~daemon.store.errors.StoreFullError`;
  ``25006`` read-only transaction (a hot standby) and ``42501`` missing
  privilege → :class:`~daemon.store.errors.StoreReadOnlyError`;
* ``XX001``/``XX002`` data or index corrupted → :class:`~daemon.store.errors.StoreCorruptError`;
* ``22…`` data exceptions and ``23…`` constraint violations, or a value the
  driver cannot send → :class:`~daemon.store.errors.StoreDataError`;
* ``28…`` authentication, ``3D000`` no such database → :class:`~daemon.store.errors.StoreOpenError`;
* ``42…`` (syntax, undefined objects) and driver misuse are bugs: ``None``,
  so they propagate untranslated, as SQLite's ``ProgrammingError`` does.

:func:`public_dsn` is the DSN with its password removed: the owner's
``path``, in every error message, log line and status document.
"""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from daemon.store.errors import (
    StoreBusyError,
    StoreCorruptError,
    StoreDataError,
    StoreError,
    StoreFullError,
    StoreIOError,
    StoreOpenError,
    StoreReadOnlyError,
)

__all__ = ["RETRYABLE", "is_connection_error", "public_dsn", "translate_pg_error"]

#: SQLSTATEs a write transaction is retried for (the whole function again).
RETRYABLE = frozenset({"40001", "40P01"})

_EXACT: dict[str, tuple[type[StoreError], str]] = {
    "57P01": (StoreIOError, "the server is shutting down (admin shutdown)"),
    "57P02": (StoreIOError, "the server crashed (crash shutdown)"),
    "57P03": (StoreIOError, "the server cannot accept connections now"),
    "57014": (StoreBusyError, "statement timeout (query canceled)"),
    "55P03": (StoreBusyError, "lock timeout: a row or table is locked by another connection"),
    "40001": (StoreBusyError, "serialization failure (a concurrent transaction won)"),
    "40P01": (StoreBusyError, "deadlock with another connection"),
    "53100": (StoreFullError, "the server's disk is full"),
    "53200": (StoreBusyError, "the server is out of memory"),
    "53300": (StoreBusyError, "too many connections to the server"),
    "53400": (StoreBusyError, "a configured server limit was exceeded"),
    "25006": (StoreReadOnlyError, "the server is read-only (a standby?)"),
    "42501": (StoreReadOnlyError, "permission denied"),
    "XX001": (StoreCorruptError, "data corrupted on the server"),
    "XX002": (StoreCorruptError, "index corrupted on the server"),
    "3D000": (StoreOpenError, "no such database"),
}
_BY_CLASS: dict[str, tuple[type[StoreError], str]] = {
    "08": (StoreIOError, "the connection to the server failed"),
    "58": (StoreIOError, "I/O error on the server"),
    "22": (StoreDataError, "a value the schema refuses"),
    "23": (StoreDataError, "a row violates a constraint"),
    "28": (StoreOpenError, "authentication failed"),
}


def public_dsn(dsn: str) -> str:
    """``dsn`` with its password removed (a URL or ``key=value`` DSN), for errors and logs.

    A DSN that does not parse is shown as ``"<unparsable DSN>"``: it may hold
    a password in a shape the parser did not recognise.
    """
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "<unparsable DSN>"
    params.pop("password", None)
    shown = {k: v for k, v in params.items() if k in _SHOWN and v is not None}
    return make_conninfo(**{k: str(v) for k, v in shown.items()}) or "<default DSN>"


#: The DSN parameters :func:`public_dsn` shows (never ``password``, ``passfile``, keys).
_SHOWN = ("host", "hostaddr", "port", "dbname", "user", "options", "application_name")


def is_connection_error(exc: BaseException, conn: psycopg.Connection[object] | None) -> bool:
    """True when ``exc`` means the connection is unusable (drop it, reconnect next time)."""
    if conn is not None and (conn.closed or conn.broken):
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate or ""
    return (
        state.startswith("08")
        or state in ("57P01", "57P02", "57P03")
        or (isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and not state)
    )


def translate_pg_error(exc: BaseException, where: str, *, action: str) -> StoreError | None:
    """The typed store error for a psycopg error, or ``None`` when it is a bug.

    Args:
        exc: What psycopg (or the OS) raised.
        where: The owner's public DSN, named in the message.
        action: What the store was doing ("inserting trades").
    """
    if isinstance(exc, StoreError):
        return exc
    head = f"store {where}"
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate or ""
        found = _EXACT.get(state) or _BY_CLASS.get(state[:2])
        detail = (exc.diag.message_primary or str(exc)).strip().splitlines()[0] if str(exc) else ""
        if found is not None:
            cls, what = found
            return cls(f"{head}: {what} while {action} [{state}: {detail}]", path=where)
        if not state:
            if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                return StoreIOError(
                    f"{head}: the connection to the server failed while {action} [{exc}]",
                    path=where,
                )
            if isinstance(exc, psycopg.DataError):
                return StoreDataError(
                    f"{head}: cannot send a value while {action} [{exc}]", path=where
                )
            return None
        if state.startswith("42"):
            return None
        return StoreError(f"{head}: {action} failed [{state}: {detail}]", path=where)
    if isinstance(exc, OverflowError):
        return StoreDataError(f"{head}: value out of range while {action} [{exc}]", path=where)
    if isinstance(exc, OSError):
        return StoreIOError(f"{head}: I/O error while {action} [{exc}]", path=where)
    return None
