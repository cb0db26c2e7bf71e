"""The control socket: request/answer, stale sockets, a second daemon refused."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from daemon import control
from daemon.errors import ControlError


async def echo_handler(message: dict[str, Any]) -> dict[str, Any]:
    if message["cmd"] == "boom":
        raise RuntimeError("handler failed")
    return {"ok": True, "echo": message}


async def ask(path: Path, message: dict[str, Any]) -> Any:
    return await trio.to_thread.run_sync(lambda: control.request(path, message, timeout_s=5))


async def test_request_answer_and_permissions(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            assert await nursery.start(control.serve_control, path, echo_handler) == path
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert await ask(path, {"cmd": "x", "n": 1}) == {
                "ok": True,
                "echo": {"cmd": "x", "n": 1},
            }
            answer = await ask(path, {"cmd": "boom"})
            assert answer == {"ok": False, "error": "RuntimeError: handler failed"}
            # The server survives a failing handler.
            assert (await ask(path, {"cmd": "again"}))["ok"] is True
            nursery.cancel_scope.cancel()
    assert not path.exists(), "socket file removed at shutdown"


async def test_bad_requests_get_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(control.serve_control, path, echo_handler)
            for raw in (b"not json\n", b"[1, 2]\n", b'{"cmd": 3}\n'):
                stream = await trio.open_unix_socket(os.fspath(path))
                async with stream:
                    await stream.send_all(raw)
                    data = await stream.receive_some(4096)
                assert data.startswith(b'{"ok": false, "error": "bad request')
            nursery.cancel_scope.cancel()


async def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(os.fspath(path))
    stale.close()  # bound but nobody listens: what a SIGKILLed daemon leaves behind
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(control.serve_control, path, echo_handler)
            assert (await ask(path, {"cmd": "x"}))["ok"] is True
            nursery.cancel_scope.cancel()


async def test_second_daemon_on_same_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(control.serve_control, path, echo_handler)
            with pytest.raises(ControlError, match="another tradingd is already running"):
                await control.serve_control(path, echo_handler)
            assert (await ask(path, {"cmd": "still-mine"}))["ok"] is True
            nursery.cancel_scope.cancel()


async def test_path_that_is_not_a_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    path.write_text("precious")
    with trio.fail_after(10), pytest.raises(ControlError, match="is not a socket"):
        await control.serve_control(path, echo_handler)
    assert path.read_text() == "precious"


def test_client_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="no daemon is running"):
        control.request(tmp_path / "none.sock", {"cmd": "x"})
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(os.fspath(tmp_path / "stale.sock"))
    stale.close()
    with pytest.raises(ControlError, match="stale socket"):
        control.request(tmp_path / "stale.sock", {"cmd": "x"})
