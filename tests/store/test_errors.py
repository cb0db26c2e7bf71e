"""translate_error: sqlite3 and OS errors become typed store errors, once, at the edge."""

from __future__ import annotations

import errno
import sqlite3

import pytest

from daemon.errors import PermanentError, TransientError
from daemon.resilience import Outcome, Verdict, classify_by_taxonomy
from daemon.store import (
    StoreBusyError,
    StoreClosedError,
    StoreCorruptError,
    StoreDataError,
    StoreError,
    StoreFullError,
    StoreIOError,
    StoreOpenError,
    StoreReadOnlyError,
    StoreUnavailableError,
)
from daemon.store.errors import translate_error

PATH = "/var/lib/tradingd/store.db"


def sqlite_error(code: int, name: str, message: str = "boom") -> sqlite3.Error:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    error.sqlite_errorname = name
    return error


@pytest.mark.parametrize(
    ("code", "name", "expected"),
    [
        (5, "SQLITE_BUSY", StoreBusyError),
        (5 | (1 << 8), "SQLITE_BUSY_RECOVERY", StoreBusyError),
        (6, "SQLITE_LOCKED", StoreBusyError),
        (8, "SQLITE_READONLY", StoreReadOnlyError),
        (3, "SQLITE_PERM", StoreReadOnlyError),
        (10 | (3 << 8), "SQLITE_IOERR_WRITE", StoreIOError),
        (13, "SQLITE_FULL", StoreFullError),
        (11, "SQLITE_CORRUPT", StoreCorruptError),
        (26, "SQLITE_NOTADB", StoreCorruptError),
        (14, "SQLITE_CANTOPEN", StoreOpenError),
        (19 | (1 << 8), "SQLITE_CONSTRAINT_CHECK", StoreDataError),
        (18, "SQLITE_TOOBIG", StoreDataError),
    ],
)
def test_sqlite_codes_map_to_typed_errors(code: int, name: str, expected: type) -> None:
    cause = sqlite_error(code, name)
    error = translate_error(cause, PATH, action="inserting trades")
    assert type(error) is expected
    assert error is not None
    assert error.path == PATH
    assert error.sqlite_error == name
    assert PATH in str(error) and "inserting trades" in str(error) and name in str(error)


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (errno.ENOSPC, StoreFullError),
        (errno.EDQUOT, StoreFullError),
        (errno.EROFS, StoreReadOnlyError),
        (errno.EACCES, StoreReadOnlyError),
        (errno.EIO, StoreIOError),
    ],
)
def test_os_errors_map_to_typed_errors(number: int, expected: type) -> None:
    error = translate_error(OSError(number, "x"), PATH, action="writing")
    assert type(error) is expected
    assert error is not None and PATH in str(error)


def test_other_errors() -> None:
    assert isinstance(translate_error(OverflowError("big"), PATH, action="a"), StoreDataError)
    assert isinstance(
        translate_error(sqlite3.InterfaceError("bad parameter"), PATH, action="a"), StoreDataError
    )
    closed = sqlite3.ProgrammingError("Cannot operate on a closed database.")
    assert isinstance(translate_error(closed, PATH, action="a"), StoreClosedError)
    # Bugs are not store errors.
    bug = sqlite3.ProgrammingError("Incorrect number of bindings")
    assert translate_error(bug, PATH, action="a") is None
    assert translate_error(KeyError("x"), PATH, action="a") is None
    unknown = translate_error(sqlite_error(1, "SQLITE_ERROR"), PATH, action="a")
    assert type(unknown) is StoreError
    already = StoreFullError("full", path=PATH)
    assert translate_error(already, PATH, action="a") is already


def test_the_taxonomy_drives_retries() -> None:
    """Transient store errors are retried by the resilience toolkit; permanent ones are not."""
    assert issubclass(StoreUnavailableError, TransientError)
    for cls in (StoreCorruptError, StoreDataError, StoreOpenError, StoreClosedError):
        assert issubclass(cls, PermanentError)
    busy = classify_by_taxonomy(Outcome(error=StoreBusyError("busy", path=PATH)))
    assert busy.verdict is Verdict.RETRY
    corrupt = classify_by_taxonomy(Outcome(error=StoreCorruptError("bad", path=PATH)))
    assert corrupt.verdict is Verdict.GIVE_UP
