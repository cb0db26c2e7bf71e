"""Store errors, and the one place where sqlite3/OS errors are translated into them.

The classes are defined in :mod:`daemon.errors` and drawn there, in the one
exception tree: :class:`StoreError` with :class:`StoreUnavailableError` (busy,
full, read-only, I/O; also a ``TransientError``, so ``except TransientError``
keeps working) and the permanent ones (corrupt, version, open, migration,
data, closed, gap transition; also ``PermanentError`` s). They are re-exported
here.

:func:`translate_error` is called once, at the edge (inside the store's thread
lane), so nothing above the store ever sees a raw :class:`sqlite3.Error`.
"""

from __future__ import annotations

import errno
import sqlite3

from daemon.errors import (
    GapTransitionError,
    StoreBusyError,
    StoreClosedError,
    StoreCorruptError,
    StoreDataError,
    StoreError,
    StoreFullError,
    StoreIOError,
    StoreMigrationError,
    StoreOpenError,
    StoreReadOnlyError,
    StoreUnavailableError,
    StoreVersionError,
)

__all__ = [
    "GapTransitionError",
    "StoreBusyError",
    "StoreClosedError",
    "StoreCorruptError",
    "StoreDataError",
    "StoreError",
    "StoreFullError",
    "StoreIOError",
    "StoreMigrationError",
    "StoreOpenError",
    "StoreReadOnlyError",
    "StoreUnavailableError",
    "StoreVersionError",
    "translate_error",
]


# SQLite primary result codes (extended code & 0xFF).
_SQLITE_PERM = 3
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_TOOBIG = 18
_SQLITE_CONSTRAINT = 19
_SQLITE_MISMATCH = 20
_SQLITE_RANGE = 25
_SQLITE_NOTADB = 26

_BY_CODE: dict[int, tuple[type[StoreError], str]] = {
    _SQLITE_BUSY: (StoreBusyError, "database is locked by another connection"),
    _SQLITE_LOCKED: (StoreBusyError, "database table is locked"),
    _SQLITE_READONLY: (StoreReadOnlyError, "database is read-only"),
    _SQLITE_PERM: (StoreReadOnlyError, "access permission denied"),
    _SQLITE_IOERR: (StoreIOError, "disk I/O error"),
    _SQLITE_FULL: (StoreFullError, "disk full"),
    _SQLITE_CORRUPT: (StoreCorruptError, "database is corrupt (malformed)"),
    _SQLITE_NOTADB: (StoreCorruptError, "file is not a database"),
    _SQLITE_CANTOPEN: (StoreOpenError, "cannot open the database file"),
    _SQLITE_TOOBIG: (StoreDataError, "value too big"),
    _SQLITE_CONSTRAINT: (StoreDataError, "a row violates a constraint"),
    _SQLITE_MISMATCH: (StoreDataError, "datatype mismatch"),
    _SQLITE_RANGE: (StoreDataError, "parameter out of range"),
}

_BY_ERRNO: dict[int, tuple[type[StoreError], str]] = {
    errno.ENOSPC: (StoreFullError, "disk full"),
    errno.EDQUOT: (StoreFullError, "disk quota exceeded"),
    errno.EROFS: (StoreReadOnlyError, "read-only file system"),
    errno.EACCES: (StoreReadOnlyError, "permission denied"),
    errno.EPERM: (StoreReadOnlyError, "operation not permitted"),
}


def translate_error(exc: BaseException, path: str, *, action: str) -> StoreError | None:
    """The typed store error for a library error, or ``None`` when it is not one.

    Args:
        exc: What the sqlite3 module (or the OS) raised.
        path: The database file, named in the message.
        action: What the store was doing ("inserting trades"), for the message.

    Returns ``exc`` itself when it already is a :class:`StoreError`, and
    ``None`` for anything else (bugs are not store errors: they propagate).
    """
    if isinstance(exc, StoreError):
        return exc
    where = f"store {path}"
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        name = getattr(exc, "sqlite_errorname", None)
        if isinstance(code, int) and (code & 0xFF) in _BY_CODE:
            cls, what = _BY_CODE[code & 0xFF]
            return cls(
                f"{where}: {what} while {action} [{name}: {exc}]", path=path, sqlite_error=name
            )
        if isinstance(exc, sqlite3.InterfaceError):
            return StoreDataError(f"{where}: cannot bind a value while {action} [{exc}]", path=path)
        if isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc):
            return StoreClosedError(f"{where}: the connection is closed", path=path)
        if isinstance(exc, sqlite3.ProgrammingError):
            return None
        return StoreError(f"{where}: {action} failed [{name}: {exc}]", path=path, sqlite_error=name)
    if isinstance(exc, OverflowError):
        return StoreDataError(f"{where}: value out of range while {action} [{exc}]", path=path)
    if isinstance(exc, OSError):
        cls, what = _BY_ERRNO.get(exc.errno or 0, (StoreIOError, "I/O error"))
        return cls(f"{where}: {what} while {action} [{exc}]", path=path)
    return None
