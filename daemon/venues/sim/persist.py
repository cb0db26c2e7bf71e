"""The state file (``tradingd sim --state-file PATH``): the venue outlives ``SIGKILL``.

A real exchange keeps its orders, balances and trades across an outage, so
a simulator that is killed and restarted on the same ports must too. The
rule: **whatever a client could observe is in the file before those bytes
can leave the process** — an order's REST or WebSocket API answer, an
``executionReport``, a published trade or depth update, a ``myTrades`` row,
an audit record. The simulator is single-threaded Trio and an engine
operation has no checkpoint inside, so :meth:`StateStore.commit` runs at the
end of every mutating path, before anything is awaited: after each
:class:`~daemon.venues.sim.api.SimApi` call (REST and WebSocket API), after
each market step, after each ``/sim/...`` control request. Bytes reach a
socket only after a checkpoint, hence after the write.

The file (one file, mode 0600) is a header line, then frames of
``[length u32][crc32 u32][pickle]``: the first frame a snapshot of the
whole state, each later one a change (:mod:`daemon.venues.sim.simstate`).
A commit appends one frame — its cost follows what changed, not how much
history there is. When the changes outgrow the snapshot (and
:data:`COMPACT_MIN_BYTES`) a fresh snapshot is written to a temporary file
(mode 0600) in the same directory and moved over the file with
``os.replace``, so the file is always whole; a start also writes one. The
last frame may be torn if the process died inside its ``write``: it is
dropped on load (its write never returned, so nothing it covers was sent).
Any other damage, another version, or a file written for other symbols or
accounts is a startup error (:class:`StateFileError`), never a silent
fresh start. The file is trusted input (it is the user's own, mode 0600);
still, it is read with an unpickler that builds only the state's own types.

Durability: written data sits in the page cache, which survives the process
(``SIGKILL``, a crash). A *host* crash or power loss can lose the last
writes unless ``state_fsync`` is set (``fsync`` after every commit:
correct and slow).

If a write fails (disk full, permissions), the simulator cannot keep its
promise, so it stops at once (``os._exit``): continuing would let clients
see what the file does not hold.
"""

from __future__ import annotations

import glob
import io
import logging
import os
import pickle
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any, Final, NoReturn

from daemon.venues.sim.simstate import STATE_VERSION, MismatchError, Parts, Restored, Tracker

__all__ = ["COMPACT_MIN_BYTES", "EXIT_STATE_WRITE", "StateFileError", "StateStore", "read_state"]

log = logging.getLogger("tradingd.sim.persist")

#: First line of every state file (the layout's version is in it and in the snapshot).
MAGIC: Final = f"tradingd-sim-state {STATE_VERSION}\n".encode()
_FRAME: Final = struct.Struct(">II")
#: Changes smaller than this never trigger a new snapshot (nor less than the snapshot's size).
COMPACT_MIN_BYTES: Final = 4 * 1024 * 1024
#: Exit status when the state can no longer be written.
EXIT_STATE_WRITE: Final = 70
_PROTOCOL: Final = pickle.HIGHEST_PROTOCOL

#: The only globals a state file may name.
_ALLOWED: Final = frozenset(
    {
        ("decimal", "Decimal"),
        ("daemon.venues.sim.orderbook", "Order"),
        ("daemon.venues.sim.orderbook", "Fill"),
        ("daemon.venues.sim.orderbook", "Trade"),
        ("daemon.venues.sim.orderbook", "AccountTrade"),
        ("daemon.venues.sim.audit", "AuditRecord"),
    }
)


class StateFileError(Exception):
    """The state file cannot be used: unreadable, damaged, another version or another config."""


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"unexpected type {module}.{name}")
        return super().find_class(module, name)


def _loads(payload: bytes) -> Any:
    return _Unpickler(io.BytesIO(payload)).load()


def _frame(value: Mapping[str, Any]) -> bytes:
    payload = pickle.dumps(value, protocol=_PROTOCOL)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _frames(path: str, data: bytes) -> tuple[list[bytes], bool]:
    """The frames' payloads and whether a torn last frame was dropped."""
    if not data.startswith(MAGIC):
        first = data.split(b"\n", 1)[0][:40]
        if first.startswith(b"tradingd-sim-state "):
            raise StateFileError(
                f"{path}: written by another version ({first.decode(errors='replace')!r}; "
                f"this simulator reads {MAGIC.strip().decode()!r})"
            )
        raise StateFileError(f"{path}: not a simulator state file")
    payloads: list[bytes] = []
    pos = len(MAGIC)
    while pos < len(data):
        if len(data) - pos < _FRAME.size:
            return payloads, True
        length, crc = _FRAME.unpack_from(data, pos)
        start, end = pos + _FRAME.size, pos + _FRAME.size + length
        if end > len(data):
            return payloads, True
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            if end == len(data):
                return payloads, True
            raise StateFileError(f"{path}: damaged record at byte {pos} (checksum)")
        payloads.append(payload)
        pos = end
    return payloads, False


def read_state(path: str) -> Restored | None:
    """The state in ``path`` (``None`` if there is no such file).

    Raises:
        StateFileError: it cannot be read or is damaged, or of another version.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    payloads, torn = _frames(path, data)
    if not payloads:
        raise StateFileError(f"{path}: no complete snapshot in it (damaged)")
    try:
        snapshot = _loads(payloads[0])
        if not isinstance(snapshot, dict) or snapshot.get("version") != STATE_VERSION:
            raise StateFileError(f"{path}: snapshot of another version")
        state = Restored(snapshot)
        for payload in payloads[1:]:
            state.apply(_loads(payload))
    except StateFileError:
        raise
    except Exception as exc:  # any malformed content is the same error
        raise StateFileError(f"{path}: damaged: {exc!r}") from None
    if torn:
        log.warning("%s: dropped a torn last record (its write never finished)", path)
    return state


def _exit(exc: BaseException) -> NoReturn:
    log.critical("cannot write the state file: %s; stopping at once", exc)
    print(f"tradingd sim: cannot write the state file: {exc}; stopping", file=sys.stderr)
    os._exit(EXIT_STATE_WRITE)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class StateStore:
    """Keeps one simulator's state in ``path``: restore at start, then every change.

    Args:
        fsync: ``fsync`` after every write (survives a host crash; slower).
        fatal: called when a write fails; by default the process exits at once.
    """

    def __init__(
        self,
        path: str,
        parts: Parts,
        *,
        fsync: bool = False,
        fatal: Callable[[BaseException], NoReturn] = _exit,
    ) -> None:
        self.path = os.path.abspath(path)
        self.parts = parts
        self.fsync = fsync
        self._fatal = fatal
        self._tracker = Tracker(parts)
        self._fd: int | None = None
        self._snapshot_bytes = 0
        self._change_bytes = 0
        #: Counters for ``/sim/status`` and measurements.
        self.writes = 0
        self.snapshots = 0
        self.bytes_written = 0
        self.cpu_s = 0.0

    def restore(self) -> bool:
        """Load the file into the (not yet seeded) simulator; ``False`` when there is none.

        Raises:
            StateFileError: the file cannot be used (see :func:`read_state`).
        """
        state = read_state(self.path)
        if state is None:
            log.info("no state file at %s: starting afresh", self.path)
            return False
        try:
            state.install(self.parts)
        except MismatchError as exc:
            raise StateFileError(f"{self.path}: {exc}") from None
        except Exception as exc:
            raise StateFileError(f"{self.path}: damaged: {exc!r}") from None
        self._tracker.seq = state.seq
        log.info("restored the venue's state from %s (record %d)", self.path, state.seq)
        return True

    def start(self) -> None:
        """Write a snapshot of the current state and start appending changes."""
        for stale in glob.glob(os.path.join(glob.escape(self._dir()), self._temp_pattern())):
            try:
                os.unlink(stale)
            except OSError:
                pass
        self._guarded(self._snapshot)

    def commit(self) -> None:
        """Append what changed since the last write (nothing when nothing did)."""
        if self._fd is None:
            return
        self._guarded(self._append)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def stats(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "writes": self.writes,
            "snapshots": self.snapshots,
            "bytes": self.bytes_written,
            "cpuS": round(self.cpu_s, 6),
        }

    # -- writing ----------------------------------------------------------------------

    def _guarded(self, write: Callable[[], None]) -> None:
        began = time.process_time()
        try:
            write()
        except Exception as exc:
            self._fatal(exc)
        finally:
            self.cpu_s += time.process_time() - began

    def _dir(self) -> str:
        return os.path.dirname(self.path)

    def _temp_pattern(self) -> str:
        return f".{glob.escape(os.path.basename(self.path))}.*.tmp"

    def _append(self) -> None:
        change = self._tracker.change()
        if change is None:
            return
        assert self._fd is not None
        data = _frame(change)
        _write_all(self._fd, data)
        if self.fsync:
            os.fsync(self._fd)
        self.writes += 1
        self.bytes_written += len(data)
        self._change_bytes += len(data)
        if self._change_bytes > max(COMPACT_MIN_BYTES, self._snapshot_bytes):
            self._snapshot()

    def _snapshot(self) -> None:
        data = MAGIC + _frame(self._tracker.snapshot())
        directory = self._dir()
        fd, temp = tempfile.mkstemp(
            dir=directory, prefix=f".{os.path.basename(self.path)}.", suffix=".tmp"
        )
        try:
            try:
                _write_all(fd, data)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, self.path)
        except BaseException:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise
        if self.fsync:
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self.close()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.writes += 1
        self.snapshots += 1
        self.bytes_written += len(data)
        self._snapshot_bytes = len(data)
        self._change_bytes = 0
