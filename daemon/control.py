"""The control socket: how ``tradingd reload``/``status`` talk to a running daemon.

A Unix stream socket (mode 0600, so only the daemon's user and root can use
it) speaking one JSON object per line: the client sends a request
``{"cmd": "reload"}`` and reads one answer ``{"ok": true, ...}``, then the
connection closes. A Unix socket rather than the admin HTTP port because it
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
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from daemon.errors import ControlError

log = logging.getLogger("tradingd.control")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

MAX_MESSAGE_BYTES = 64 * 1024
#: Time a client gets to send its request line.
REQUEST_TIMEOUT_S = 5.0
#: Default time ``tradingd reload`` waits for the answer (a reload is quick).
CLIENT_TIMEOUT_S = 60.0


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
    path.parent.mkdir(parents=True, exist_ok=True)
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
    """Serve the control socket until cancelled; ``started(path)`` once listening."""
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
    try:
        async with trio.open_nursery() as nursery:
            task_status.started(path)
            async with listener:
                while True:
                    stream = await listener.accept()
                    nursery.start_soon(_serve_one, stream, handler)
    finally:
        # One unlink at shutdown (no await, so cancellation cannot interrupt it).
        try:
            path.unlink()  # noqa: ASYNC240 - a single metadata operation, not worth a thread
        except FileNotFoundError:
            pass


async def _serve_one(stream: trio.SocketStream, handler: Handler) -> None:
    async with stream:
        try:
            with trio.fail_after(REQUEST_TIMEOUT_S):
                request = await _read_line(stream)
            try:
                message = json.loads(request)
                if not isinstance(message, dict) or not isinstance(message.get("cmd"), str):
                    raise ValueError("expected a JSON object with a string 'cmd'")
            except ValueError as exc:
                answer: dict[str, Any] = {"ok": False, "error": f"bad request: {exc}"}
            else:
                try:
                    answer = await handler(message)
                except Exception as exc:  # a bad command must not kill the server
                    log.exception("control command %r failed", message.get("cmd"))
                    answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            await stream.send_all(json.dumps(answer).encode() + b"\n")
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        except _TooLong:
            try:
                await stream.send_all(b'{"ok": false, "error": "request too long"}\n')
            except trio.BrokenResourceError:
                pass


class _TooLong(Exception):
    pass


async def _read_line(stream: trio.SocketStream) -> bytes:
    buf = bytearray()
    while b"\n" not in buf:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_MESSAGE_BYTES:
            raise _TooLong
    return bytes(buf.split(b"\n", 1)[0])


def request(path: Path, message: dict[str, Any], *, timeout_s: float = CLIENT_TIMEOUT_S) -> Any:
    """Send one request to a running daemon and return its answer (blocking; CLI side).

    Raises:
        ControlError: no daemon listens there, permission denied, timeout, or
            an answer that is not JSON.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(os.fspath(path))
            sock.sendall(json.dumps(message).encode() + b"\n")
            buf = bytearray()
            while b"\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
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
    try:
        return json.loads(bytes(buf))
    except ValueError:
        raise ControlError("the daemon's answer was not valid JSON") from None
