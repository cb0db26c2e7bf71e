"""The control socket: how ``tradingd reload``/``status`` talk to a running daemon.

A Unix stream socket (mode 0600, so only the daemon's user and root can use
it) speaking one JSON object per line: the client sends a request
``{"cmd": "reload"}`` and reads one answer ``{"ok": true, ...}``, then the
connection closes.

Whatever a client sends, the answer is one line with ``"ok"``, and the server
keeps serving: a line that is not a JSON object with a string ``cmd`` (bad
UTF-8, nesting deeper than :data:`MAX_REQUEST_DEPTH`, numbers beyond the
int-string limit, longer than :data:`MAX_MESSAGE_BYTES`), a request not sent
within :data:`REQUEST_TIMEOUT_S`, arguments of the wrong type
(:class:`RequestError`, built with :class:`Args`) all get
``{"ok": false, "error": ...}`` on that connection and nothing else. At most
:data:`MAX_CONNECTIONS` connections are served at once; more are answered
"busy". The client side (:func:`request`) holds the daemon to the same
standard: an answer that is not one JSON object within the limits is a
:class:`~daemon.errors.ControlError`. A Unix socket rather than the admin HTTP port because it
works when the admin API is disabled, is protected by file permissions, and
lets ``ExecReload=`` wait for the reload to be *done* rather than requested.

At start the daemon refuses to take over a socket another live daemon still
answers on (two daemons on one state directory would corrupt it), and removes a
stale socket file left by a crash.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import trio

from daemon.decode import DecodeError, json_loads
from daemon.errors import ControlError

log = logging.getLogger("tradingd.control")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

#: Longest request line (without its newline).
MAX_MESSAGE_BYTES: Final = 64 * 1024
#: Deepest nesting of a request (requests are flat: a list of ids at most).
MAX_REQUEST_DEPTH: Final = 8
#: Time a client gets to send its request line (in all, however slowly it drips).
REQUEST_TIMEOUT_S: Final = 5.0
#: Time a client gets to take the answer (a client that never reads is dropped).
SEND_TIMEOUT_S: Final = 10.0
#: Connections served at once; more are answered "busy" and closed.
MAX_CONNECTIONS: Final = 32
#: Pause of the accept loop when the process is out of file descriptors.
ACCEPT_BACKOFF_S: Final = 0.1
#: Default time ``tradingd reload`` waits for the answer (a reload is quick).
CLIENT_TIMEOUT_S: Final = 60.0
#: Longest answer the client accepts (a status tree, a page of dead letters).
MAX_ANSWER_BYTES: Final = 32 * 1024 * 1024
#: Deepest nesting the client accepts in an answer (the status tree nests).
MAX_ANSWER_DEPTH: Final = 64
#: Longest rendering of a bad value quoted back in an error.
SHOWN_CHARS: Final = 80

_ACCEPT_CAPACITY_ERRNOS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
)
#: Largest integer argument (SQLite's INTEGER is a signed 64-bit value).
_MAX_INT: Final = 2**63 - 1


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters, for quoting bad input back in errors."""
    try:
        text = repr(value)
    except Exception:  # a repr that fails (or a too-large int) must not fail the answer
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


class RequestError(ValueError):
    """A malformed control request: answered ``ok: false`` listing the problems, not logged
    as a failure.

    Attributes:
        problems: Every problem found, one sentence each.
    """

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems) or ("bad request",)
        super().__init__("; ".join(self.problems))


class Args:
    """Typed access to a request's arguments that collects every problem.

    Each getter returns the value (or the default) and records a problem when
    the value has the wrong type or range; :meth:`check` then raises one
    :class:`RequestError` listing them all. ``None`` means "not given".

    Args:
        message: the decoded request.
        known: the argument names the command takes (``cmd`` is implied);
            any other name is a problem. ``None``: extra names are ignored.
    """

    def __init__(self, message: Mapping[str, Any], known: Iterable[str] | None = None) -> None:
        self.message = message
        self.problems: list[str] = []
        if known is not None:
            allowed = {"cmd", *known}
            for name in message:
                if name not in allowed:
                    self.problems.append(f"unknown argument {shown(name)}")

    def _bad(self, name: str, expected: str, value: object) -> None:
        self.problems.append(f"{name} must be {expected}, got {shown(value)}")

    def string(self, name: str, *, max_chars: int = 256, required: bool = False) -> str | None:
        """A non-empty string of at most ``max_chars`` characters."""
        value = self.message.get(name)
        if value is None:
            if required:
                self.problems.append(f"{name} is required")
            return None
        if not isinstance(value, str) or not value or len(value) > max_chars:
            self._bad(name, f"a non-empty string of at most {max_chars} characters", value)
            return None
        return value

    def integer(
        self,
        name: str,
        *,
        lo: int = 0,
        hi: int = _MAX_INT,
        default: int | None = None,
        required: bool = False,
    ) -> int | None:
        """An integer (not a bool, not a float, not a string) in ``lo..hi``."""
        value = self.message.get(name)
        if value is None:
            if required:
                self.problems.append(f"{name} is required")
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self._bad(name, f"an integer in {lo}..{hi}", value)
            return default
        return value

    def number(
        self, name: str, *, lo: float, hi: float, default: float | None = None
    ) -> float | None:
        """A finite number in ``lo..hi``."""
        value = self.message.get(name)
        if value is None:
            return default
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not lo <= value <= hi
        ):
            self._bad(name, f"a number in {lo:g}..{hi:g}", value)
            return default
        return float(value)

    def integers(self, name: str, *, max_items: int = 10_000) -> list[int] | None:
        """A non-empty list of at most ``max_items`` integers in ``0..2**63-1``."""
        value = self.message.get(name)
        if value is None:
            return None
        if (
            not isinstance(value, list)
            or not 0 < len(value) <= max_items
            or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _MAX_INT for v in value
            )
        ):
            self._bad(name, f"a list of 1 to {max_items} integers in 0..{_MAX_INT}", value)
            return None
        return value

    def flag(self, name: str) -> bool:
        """``true`` or ``false`` (``None``: false)."""
        value = self.message.get(name)
        if value is None:
            return False
        if not isinstance(value, bool):
            self._bad(name, "true or false", value)
            return False
        return value

    def check(self) -> None:
        """Raise :class:`RequestError` with every problem found so far."""
        if self.problems:
            raise RequestError(self.problems)


def _probe_live(path: Path) -> bool:
    """True when something accepts connections on ``path`` (blocking, quick)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(os.fspath(path))
        except OSError:
            return False
        return True


def prepare_socket_path(path: Path) -> None:
    """Make ``path`` free for binding, or raise ControlError if a daemon owns it.

    Blocking (file system); call from a thread.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError(f"control socket path {path} exists and is not a socket")
    if _probe_live(path):
        raise ControlError(
            f"another tradingd is already running with control socket {path} "
            "(two daemons must not share a state directory)"
        )
    log.info("removing stale control socket %s", path)
    path.unlink()


async def serve_control(
    path: Path,
    handler: Handler,
    *,
    task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control socket until cancelled; ``started(path)`` once listening.

    No client can end this task: every failure of one connection ends that
    connection only (see :func:`_serve_one`).
    """
    await trio.to_thread.run_sync(prepare_socket_path, path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Restrictive umask while binding, so the socket never exists world-accessible.
        old_umask = os.umask(0o177)
        try:
            await sock.bind(os.fspath(path))
        finally:
            os.umask(old_umask)
        sock.listen(16)
    except OSError as exc:
        sock.close()
        raise ControlError(f"cannot listen on control socket {path}: {exc.strerror}") from exc
    listener = trio.SocketListener(sock)
    slots = trio.CapacityLimiter(MAX_CONNECTIONS)
    quiet_until = -math.inf
    try:
        async with trio.open_nursery() as nursery:
            task_status.started(path)
            async with listener:
                while True:
                    try:
                        stream = await listener.accept()
                    except OSError as exc:
                        if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                            raise
                        now = trio.current_time()
                        if now >= quiet_until:  # one line per 10 s, not one per retry
                            log.warning(
                                "control socket: cannot accept (%s); retrying", exc.strerror
                            )
                            quiet_until = now + 10.0
                        await trio.sleep(ACCEPT_BACKOFF_S)
                        continue
                    try:
                        slots.acquire_on_behalf_of_nowait(stream)
                    except trio.WouldBlock:
                        nursery.start_soon(_refuse_busy, stream)
                        continue
                    nursery.start_soon(_serve_one, stream, handler, slots)
    finally:
        # One unlink at shutdown (no await, so cancellation cannot interrupt it).
        try:
            path.unlink()  # noqa: ASYNC240 - a single metadata operation, not worth a thread
        except FileNotFoundError:
            pass


async def _refuse_busy(stream: trio.SocketStream) -> None:
    """Answer "busy" without reading (a small answer fits the socket buffer) and close."""
    with trio.move_on_after(0.5):
        try:
            async with stream:
                await stream.send_all(
                    _encode({"ok": False, "error": f"busy: {MAX_CONNECTIONS} connections open"})
                )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def _serve_one(
    stream: trio.SocketStream, handler: Handler, slots: trio.CapacityLimiter | None = None
) -> None:
    """Read one request line, answer it with one line, close; never raises."""
    try:
        async with stream:
            answer = await _answer(stream, handler)
            with trio.move_on_after(SEND_TIMEOUT_S):
                await stream.send_all(answer)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the client went away
    except Exception:  # a bug here must end this connection, never the server
        log.exception("control connection failed")
    finally:
        if slots is not None:
            slots.release_on_behalf_of(stream)


async def _answer(stream: trio.SocketStream, handler: Handler) -> bytes:
    """The encoded answer line to the request on ``stream``."""
    try:
        with trio.fail_after(REQUEST_TIMEOUT_S):
            line = await _read_line(stream)
    except trio.TooSlowError:
        return _encode({"ok": False, "error": f"no request line within {REQUEST_TIMEOUT_S:g}s"})
    except _TooLong:
        return _encode(
            {"ok": False, "error": f"request too long (more than {MAX_MESSAGE_BYTES} bytes)"}
        )
    try:
        message = parse_request(line)
    except RequestError as exc:
        return _encode({"ok": False, "error": f"bad request: {exc}"})
    cmd = message["cmd"]
    try:
        answer = await handler(message)
    except RequestError as exc:
        log.info("control command %s refused: %s", shown(cmd), exc)
        answer = {"ok": False, "error": f"bad request: {exc}"}
    except Exception as exc:  # a failing command must not kill the server
        log.exception("control command %s failed", shown(cmd))
        answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    try:
        return _encode(answer)
    except (TypeError, ValueError, RecursionError) as exc:
        log.error("control command %s: the answer cannot be encoded: %s", shown(cmd), exc)
        return _encode({"ok": False, "error": "internal error: the answer cannot be encoded"})


def parse_request(line: bytes) -> dict[str, Any]:
    """Decode one request line: a JSON object with a string ``cmd``.

    Raises:
        RequestError: anything else (the message says what).
    """
    try:
        message = json_loads(
            line, what="request", max_bytes=MAX_MESSAGE_BYTES, max_depth=MAX_REQUEST_DEPTH
        )
    except DecodeError as exc:
        raise RequestError([str(exc)]) from None
    if not isinstance(message, dict):
        raise RequestError(
            [f"expected a JSON object with a string 'cmd', got {type(message).__name__}"]
        )
    cmd = message.get("cmd")
    if not isinstance(cmd, str) or not cmd:
        raise RequestError([f"expected a JSON object with a string 'cmd', got cmd {shown(cmd)}"])
    return message


def _encode(answer: Mapping[str, Any]) -> bytes:
    return json.dumps(answer).encode("utf-8") + b"\n"


class _TooLong(Exception):
    pass


async def _read_line(stream: trio.SocketStream) -> bytes:
    """The first line (without its newline); what came before EOF if there is none."""
    buf = bytearray()
    while True:
        end = buf.find(b"\n")
        if end >= 0:
            if end > MAX_MESSAGE_BYTES:
                raise _TooLong
            return bytes(buf[:end])
        if len(buf) > MAX_MESSAGE_BYTES:
            raise _TooLong
        chunk = await stream.receive_some(65536)
        if not chunk:  # EOF (the client half-closed): the rest is the request
            return bytes(buf)
        buf += chunk


def request(path: Path, message: dict[str, Any], *, timeout_s: float = CLIENT_TIMEOUT_S) -> Any:
    """Send one request to a running daemon and return its answer, a dict (blocking; CLI side).

    ``timeout_s`` bounds the whole exchange, however slowly the answer arrives.

    Raises:
        ControlError: no daemon listens there, permission denied, timeout, or
            an answer that is not one JSON object (too long, nested too deep,
            not UTF-8, not JSON).
    """
    deadline = time.monotonic() + timeout_s
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(os.fspath(path))
            sock.sendall(json.dumps(message).encode() + b"\n")
            buf = bytearray()
            while b"\n" not in buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > MAX_ANSWER_BYTES + 1:
                    raise ControlError(
                        f"the daemon's answer is longer than {MAX_ANSWER_BYTES} bytes"
                    )
        except FileNotFoundError:
            raise ControlError(f"no daemon is running: {path} does not exist") from None
        except ConnectionRefusedError:
            raise ControlError(f"no daemon is listening on {path} (stale socket)") from None
        except PermissionError:
            raise ControlError(
                f"permission denied on {path} (run as the daemon's user or root)"
            ) from None
        except TimeoutError:
            raise ControlError(f"the daemon did not answer within {timeout_s:g}s") from None
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise ControlError(f"control socket path too long: {path}") from None
            raise ControlError(f"control socket {path}: {exc.strerror}") from None
    line = bytes(buf).split(b"\n", 1)[0]
    try:
        # The daemon's own answers may carry NaN/Infinity (Python's json writes them).
        answer = json_loads(
            line,
            what="the daemon's answer",
            max_bytes=MAX_ANSWER_BYTES,
            max_depth=MAX_ANSWER_DEPTH,
            allow_constants=True,
        )
    except DecodeError as exc:
        raise ControlError(str(exc)) from None
    if not isinstance(answer, dict):
        raise ControlError(f"the daemon's answer is not a JSON object ({type(answer).__name__})")
    return answer
