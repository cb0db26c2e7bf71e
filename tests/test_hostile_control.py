"""Hostile input on the control socket (issue 13, finding 2).

Whatever a client sends, it gets one answer line with ``"ok"`` on its own
connection and the server goes on serving: nesting deep enough to overflow
the JSON parser, bad UTF-8, lines longer than the limit, no newline, a
client that drips bytes or never reads, a handler that raises or answers
something that cannot be encoded, arguments of the wrong type. The CLI side
(:func:`daemon.control.request`) treats a hostile answer as a
:class:`~daemon.errors.ControlError`.

Three levels: :func:`~daemon.control.serve_control` on a real Unix socket
with small handlers; a hypothesis fuzzer against a real in-process
:class:`~daemon.app.Daemon` (its own ``_control`` handler); and the real
``tradingd run`` process fed garbage in a row (``slow``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from daemon import control
from daemon.app import Daemon
from daemon.control import (
    MAX_CONNECTIONS,
    MAX_MESSAGE_BYTES,
    REQUEST_TIMEOUT_S,
    Args,
    RequestError,
)
from daemon.errors import ControlError
from daemon.notify import Notifier
from daemon.orders.control import OperatorInputError, parse_limit
from tests.helpers.app import NotifyListener, make_config, notifier_for
from tests.helpers.fuzzing import fuzz_settings, hostile_bytes, hostile_json_text, json_values
from tests.helpers.process import open_harness

TIMEOUT_S = 20
#: One request line nesting far beyond the interpreter's recursion limit (under the size limit).
DEEP = b"[" * 50_000
DEEP_OBJECT = b'{"a":' * 10_000 + b"1" + b"}" * 10_000


async def echo_handler(message: dict[str, Any]) -> dict[str, Any]:
    cmd = message["cmd"]
    if cmd == "boom":
        raise RuntimeError("handler failed")
    if cmd == "unencodable":
        return {"ok": True, "value": object()}
    if cmd == "nan":
        return {"ok": True, "value": float("nan")}
    if cmd == "typed":
        args = Args(message, known=("limit", "name"))
        args.integer("limit", lo=1, hi=10)
        args.string("name")
        args.check()
    return {"ok": True, "echo": message}


@asynccontextmanager
async def serving(
    path: Path, handler: control.Handler = echo_handler, clock: trio.testing.MockClock | None = None
) -> AsyncIterator[trio.Nursery]:
    """``serve_control`` in a nursery; fails the test if the server task ever ends early.

    With ``clock`` (the autojump clock), time stands still while the server
    starts (it binds in a worker thread, which the clock would jump over) and
    jumps from then on.
    """
    if clock is not None:
        clock.autojump_threshold = math.inf
    async with trio.open_nursery() as nursery:
        await nursery.start(control.serve_control, path, handler)
        if clock is not None:
            clock.autojump_threshold = 0
        yield nursery
        nursery.cancel_scope.cancel()


async def exchange(path: Path, raw: bytes) -> bytes:
    """Send ``raw`` on a new connection and return everything the server sent until EOF."""
    stream = await trio.open_unix_socket(os.fspath(path))
    received = bytearray()
    async with stream:
        try:
            await stream.send_all(raw)
            await stream.send_eof()
        except trio.BrokenResourceError:
            pass  # the server answered and closed before reading everything
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:  # ECONNRESET after the answer
                break
            if not chunk:
                break
            received += chunk
    return bytes(received)


def one_answer(data: bytes) -> dict[str, Any]:
    """The single answer line in ``data`` (exactly one line, a JSON object with a bool ``ok``)."""
    assert data.endswith(b"\n") and data.count(b"\n") == 1, data[:300]
    answer = json.loads(data)
    assert isinstance(answer, dict) and isinstance(answer.get("ok"), bool), answer
    return answer


async def ping(path: Path) -> dict[str, Any]:
    return one_answer(await exchange(path, b'{"cmd": "ping"}\n'))


# --------------------------------------------------------------------------- the server


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (DEEP + b"\n", "nests too deep"),
        (DEEP_OBJECT + b"\n", "nests too deep"),
        (b'{"cmd": "x", "a": ' + b"[" * 20 + b"]" * 20 + b"}\n", "deeper than"),
        (b'{"cmd": "x", "n": ' + b"9" * 5000 + b"}\n", "not valid JSON"),
        (b'{"cmd": "\xff\xfe"}\n', "not valid UTF-8"),
        (b'{"cmd": NaN}\n', "NaN"),
        (b"not json\n", "not valid JSON"),
        (b"[1, 2]\n", "expected a JSON object"),
        (b'{"cmd": 3}\n', "expected a JSON object"),
        (b'{"cmd": ""}\n', "expected a JSON object"),
        (b"\n", "not valid JSON"),
        (b"\x00" * 100 + b"\n", "not valid JSON"),
    ],
)
async def test_malformed_line_gets_an_error_answer_and_the_server_goes_on(
    tmp_path: Path, raw: bytes, error: str
) -> None:
    path = tmp_path / "c.sock"
    with trio.fail_after(TIMEOUT_S):
        async with serving(path):
            answer = one_answer(await exchange(path, raw))
            assert answer["ok"] is False
            assert answer["error"].startswith("bad request: "), answer
            assert error in answer["error"], answer
            assert (await ping(path))["ok"] is True


async def test_deep_lines_in_a_row_do_not_end_the_server(tmp_path: Path) -> None:
    """The crash of issue 13: each deep line raised RecursionError out of the server task."""
    path = tmp_path / "c.sock"
    with trio.fail_after(TIMEOUT_S):
        async with serving(path):
            for _ in range(10):
                assert one_answer(await exchange(path, DEEP + b"\n"))["ok"] is False
            assert (await ping(path))["ok"] is True


async def test_too_long_line_and_no_newline(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    with trio.fail_after(TIMEOUT_S):
        async with serving(path):
            # Longer than the limit, with or without a newline at the end.
            for raw in (b"x" * (MAX_MESSAGE_BYTES + 10), b"y" * (MAX_MESSAGE_BYTES + 1) + b"\n"):
                answer = one_answer(await exchange(path, raw))
                assert "request too long" in answer["error"], answer
            # A request without a newline, then EOF (half-closed): it is the request.
            answer = one_answer(await exchange(path, b'{"cmd": "eof"}'))
            assert answer == {"ok": True, "echo": {"cmd": "eof"}}
            # Only the first line counts.
            answer = one_answer(await exchange(path, b'{"cmd": "a"}\n{"cmd": "b"}\n'))
            assert answer["echo"] == {"cmd": "a"}
            # A client that connects and goes away without a word.
            silent = await trio.open_unix_socket(os.fspath(path))
            await silent.aclose()
            assert (await ping(path))["ok"] is True


async def test_slow_client_gets_a_timeout_answer(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A client dripping a byte a second never completes its line: cut off after the budget."""
    path = tmp_path / "c.sock"
    with trio.fail_after(120):
        async with serving(path, clock=autojump_clock):
            stream = await trio.open_unix_socket(os.fspath(path))
            async with stream:
                start = trio.current_time()
                received = b""
                with trio.move_on_after(60):
                    for _ in range(60):
                        await stream.send_all(b" ")
                        with trio.move_on_after(1.0):
                            received += await stream.receive_some(4096)
                        if received:
                            break
                elapsed = trio.current_time() - start
            answer = one_answer(received)
            assert answer["ok"] is False and "no request line within" in answer["error"]
            assert REQUEST_TIMEOUT_S <= elapsed <= REQUEST_TIMEOUT_S + 2
            assert (await ping(path))["ok"] is True


async def test_handler_failures_are_answered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.sock"
    with trio.fail_after(TIMEOUT_S):
        async with serving(path):
            answer = one_answer(await exchange(path, b'{"cmd": "boom"}\n'))
            assert answer == {"ok": False, "error": "RuntimeError: handler failed"}
            answer = one_answer(await exchange(path, b'{"cmd": "unencodable"}\n'))
            assert answer == {
                "ok": False,
                "error": "internal error: the answer cannot be encoded",
            }
            # Bad arguments: every problem listed, logged below ERROR, no traceback.
            caplog.clear()
            bad = b'{"cmd": "typed", "limit": "5", "name": {"a": [1]}, "extra": 1}\n'
            answer = one_answer(await exchange(path, bad))
            assert answer["ok"] is False
            assert answer["error"] == (
                "bad request: unknown argument 'extra'; "
                "limit must be an integer in 1..10, got '5'; "
                "name must be a non-empty string of at most 256 characters, got {'a': [1]}"
            )
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert not [r for r in caplog.records if r.exc_info]
            answer = one_answer(await exchange(path, b'{"cmd": "typed", "limit": 3}\n'))
            assert answer["ok"] is True
            assert (await ping(path))["ok"] is True


async def test_client_that_never_reads_is_dropped(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """An answer bigger than the socket buffers, to a client that never reads: the task ends."""
    big = "z" * (8 * 1024 * 1024)
    finished = trio.Event()

    async def handler(message: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "big": big}

    path = tmp_path / "c.sock"
    with trio.fail_after(120):
        async with serving(path, handler, clock=autojump_clock) as nursery:
            stream = await trio.open_unix_socket(os.fspath(path))
            async with stream:
                await stream.send_all(b'{"cmd": "big"}\n')

                async def others() -> None:
                    # Meanwhile and afterwards, everybody else is served.
                    one_answer(await exchange(path, b"junk\n"))
                    await trio.sleep(control.SEND_TIMEOUT_S + 1)
                    finished.set()

                nursery.start_soon(others)
                await finished.wait()
                # The server gave up on us: what we can still read ends short of the answer.
                received = 0
                with trio.move_on_after(5):
                    while chunk := await stream.receive_some(1 << 20):
                        received += len(chunk)
                assert received < len(big)


async def test_connections_beyond_the_limit_are_told_busy(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    with trio.fail_after(TIMEOUT_S):
        async with serving(path):
            idle = [await trio.open_unix_socket(os.fspath(path)) for _ in range(MAX_CONNECTIONS)]
            try:
                answer = one_answer(await exchange(path, b'{"cmd": "ping"}\n'))
                assert answer["ok"] is False and answer["error"].startswith("busy"), answer
            finally:
                for stream in idle:
                    await stream.aclose()
            # Slots free again once those connections are gone.
            await trio.sleep(0.1)
            assert (await ping(path))["ok"] is True


async def test_daemon_commands_list_every_bad_argument(tmp_path: Path) -> None:
    """The daemon's own commands check argument types: no TypeError, every problem named."""
    daemon = Daemon(make_config(tmp_path), notifier=Notifier.from_environ({}))

    async def problems(message: dict[str, Any]) -> tuple[str, ...]:
        with pytest.raises(RequestError) as info:
            await daemon._control(message)
        return info.value.problems

    assert await problems(
        {
            "cmd": "dead-letters",
            "action": "list",
            "limit": "5",
            "after_id": [1],
            "source": {"a": "b"},
            "x": 1,
        }
    ) == (
        "unknown argument 'x'",
        "source must be a non-empty string of at most 256 characters, got {'a': 'b'}",
        "after_id must be an integer in 0..9223372036854775807, got [1]",
        "limit must be an integer in 1..1000, got '5'",
    )
    assert await problems({"cmd": "dead-letters", "action": "show"}) == ("id is required",)
    assert await problems({"cmd": "dead-letters", "action": "show", "id": 2**64}) == (
        f"id must be an integer in 0..9223372036854775807, got {2**64}",
    )
    assert await problems(
        {"cmd": "dead-letters", "action": "purge", "ids": [1, "2"], "all": "yes"}
    ) == (
        "ids must be a list of 1 to 10000 integers in 0..9223372036854775807, got [1, '2']",
        "all must be true or false, got 'yes'",
    )
    assert await problems(
        {"cmd": "dead-letters", "action": "purge", "failed_before": float("nan")}
    ) == ("failed_before must be a number in -1e+12..1e+12, got nan",)
    assert await problems({"cmd": "fault", "kind": {"a": 1}, "seconds": "x"}) == (
        "kind must be a non-empty string of at most 256 characters, got {'a': 1}",
        "seconds must be a number in 0.001..3600, got 'x'",
    )
    # Unknown names are answered, quoted short.
    answer = await daemon._control({"cmd": "dead-letters", "action": "z" * 500})
    assert answer["ok"] is False and len(answer["error"]) < 200, answer
    answer = await daemon._control({"cmd": "y" * 5000})
    assert answer["ok"] is False and len(answer["error"]) < 200, answer
    # A valid request still goes through to the (closed) store.
    answer = await daemon._control({"cmd": "dead-letters", "action": "list", "limit": 5})
    assert answer == {"ok": False, "error": "the store is not open"}


#: Arabic-Indic and full-width digits: ``int()`` takes them, the limit must not.
OTHER_DIGITS = [chr(0x661) + chr(0x662), chr(0xFF11)]


@pytest.mark.parametrize("limit", ["9" * 5000, *OTHER_DIGITS, "1e3", "-1", " "])
def test_order_list_limit_text_is_refused_cleanly(limit: str) -> None:
    with pytest.raises(OperatorInputError, match="limit must be an integer"):
        parse_limit(limit)


# --------------------------------------------------------------------------- the client


@asynccontextmanager
async def hostile_daemon(path: Path, answer: Callable[[], Iterator[bytes]]) -> AsyncIterator[None]:
    """A fake daemon on ``path`` that answers every request with the chunks of ``answer()``."""
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(os.fspath(path))
    listener.listen(4)

    async def serve() -> None:
        while True:
            conn, _ = await listener.accept()
            with conn:
                await conn.recv(65536)
                try:
                    for chunk in answer():
                        await conn.send(chunk)
                except OSError:
                    pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        try:
            yield
        finally:
            nursery.cancel_scope.cancel()
            listener.close()


def chunks(*parts: bytes) -> Callable[[], Iterator[bytes]]:
    return lambda: iter(parts)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (chunks(DEEP + b"\n"), "nests too deep"),
        (chunks(b"[" * 100 + b"]" * 100 + b"\n"), "deeper than"),
        (chunks(b'{"ok": ' + b"9" * 5000 + b"}\n"), "not valid JSON"),
        (chunks(b'{"ok": "\xff"}\n'), "not valid UTF-8"),
        (chunks(b"[1, 2]\n"), "not a JSON object"),
        (chunks(b"garbage\n"), "not valid JSON"),
        (chunks(b""), "not valid JSON"),
        (lambda: (b"x" * 65536 for _ in range(1000)), "longer than"),
    ],
)
async def test_request_refuses_hostile_answers(
    tmp_path: Path,
    answer: Callable[[], Iterator[bytes]],
    error: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(control, "MAX_ANSWER_BYTES", 1024 * 1024)
    path = tmp_path / "fake.sock"
    with trio.fail_after(TIMEOUT_S):
        async with hostile_daemon(path, answer):
            with pytest.raises(ControlError, match=error):
                await trio.to_thread.run_sync(
                    lambda: control.request(path, {"cmd": "status"}, timeout_s=5)
                )


async def test_request_deadline_covers_a_dripping_answer(tmp_path: Path) -> None:
    """A server sending a byte now and then cannot hold the CLI past its timeout."""
    stop = threading.Event()

    def drip() -> Iterator[bytes]:
        while not stop.wait(0.05):
            yield b" "

    path = tmp_path / "fake.sock"
    with trio.fail_after(TIMEOUT_S):
        async with hostile_daemon(path, drip):
            with pytest.raises(ControlError, match=r"did not answer within 0\.5s"):
                await trio.to_thread.run_sync(
                    lambda: control.request(path, {"cmd": "status"}, timeout_s=0.5)
                )
            stop.set()


# --------------------------------------------------------------------------- fuzzing


COMMANDS = ["ping", "status", "reload", "dead-letters", "trading", "orders", "fault", "nope"]
ACTIONS = ["list", "show", "purge", "halt", "resume", "reduce-only", "cancel", "x"]
ARG_NAMES = [
    "action",
    "source",
    "after_id",
    "limit",
    "id",
    "ids",
    "failed_before",
    "all",
    "kind",
    "seconds",
    "account",
    "reason",
    "states",
    "client_order_id",
]

arg_values = st.one_of(
    json_values,
    st.sampled_from([*ACTIONS, "block-loop", "hang-heartbeat", "main", "open"]),
    st.integers(-(2**70), 2**70),
    st.lists(st.integers(-(2**70), 2**70), max_size=5),
    st.floats(),
)
requests = st.builds(
    lambda cmd, args: json.dumps({"cmd": cmd, **args}).encode(),
    st.one_of(st.sampled_from(COMMANDS), st.text(max_size=20)),
    st.dictionaries(st.sampled_from(ARG_NAMES) | st.text(max_size=8), arg_values, max_size=5),
)
hostile_lines = st.one_of(
    requests,
    hostile_bytes,
    hostile_json_text.map(lambda s: s.encode("utf-8", "surrogatepass")),
)


def blocking_exchange(path: Path, raw: bytes) -> bytes:
    """:func:`exchange` with a blocking socket (the fuzzer runs in a worker thread)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(15)
        sock.connect(os.fspath(path))
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = bytearray()
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                return bytes(received)
            received += chunk
        return bytes(received)


async def test_fuzz_the_real_daemon_handler(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Hostile lines and random commands to a running :class:`Daemon`: one answer each, always."""
    caplog.set_level(logging.INFO, logger="tradingd")
    notify = NotifyListener(tmp_path / "notify.sock")
    await notify.bind()
    daemon = Daemon(make_config(tmp_path), notifier=notifier_for(notify))
    path = tmp_path / "c.sock"
    seen: list[bytes] = []

    @fuzz_settings(ci_examples=120)
    @given(line=hostile_lines)
    def fuzz(line: bytes) -> None:
        seen.append(line)
        answer = one_answer(blocking_exchange(path, line))
        if answer["ok"] is False:  # says why ("errors": a rejected reload)
            assert answer.get("error") or answer.get("errors"), answer
        again = one_answer(blocking_exchange(path, b'{"cmd": "ping"}\n'))
        assert again["ok"] is True

    result: list[int] = []
    with notify.sock, trio.fail_after(240):
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                try:
                    result.append(await daemon.run())
                finally:
                    daemon.notifier.close()
                nursery.cancel_scope.cancel()  # the notify listener

            nursery.start_soon(notify.run)
            nursery.start_soon(run)
            await notify.wait_for("READY", "1")
            await trio.to_thread.run_sync(fuzz)
            status = await trio.to_thread.run_sync(
                lambda: control.request(path, {"cmd": "status"}, timeout_s=10)
            )
            control_child = next(
                c for c in status["status"]["supervision"]["children"] if c["name"] == "control"
            )
            assert control_child["restarts"] == 0, control_child
            daemon.request_stop("test")
    assert result == [0]
    assert len(seen) >= 50
    failures = [
        r
        for r in caplog.records
        if r.name.startswith("tradingd.control") and (r.levelno >= logging.ERROR or r.exc_info)
    ]
    assert not failures, [r.getMessage() for r in failures]


# --------------------------------------------------------------------------- the real daemon


def control_restarts(status: dict[str, Any]) -> int:
    children = status["status"]["supervision"]["children"]
    return int(next(c for c in children if c["name"] == "control")["restarts"])


@pytest.mark.slow
async def test_real_daemon_survives_garbage_on_the_control_socket(
    tmp_path: Path, sockdir: Path
) -> None:
    """``tradingd run`` fed deep lines and garbage in a row stays up, its control child too."""
    with trio.fail_after(90):
        async with open_harness(tmp_path, sockdir) as h:
            h.write_config()
            d = await h.start_ready()
            before = control_restarts(await h.control({"cmd": "status"}))
            garbage = [
                *[DEEP + b"\n", DEEP_OBJECT + b"\n"] * 5,
                b'{"cmd": "x", "n": ' + b"9" * 5000 + b"}\n",
                b"\xff\xfe\x00garbage\n",
                b"z" * (MAX_MESSAGE_BYTES + 100),
                b'{"cmd": "dead-letters", "action": "list", "limit": "9", "after_id": [1]}\n',
                b'{"cmd": "fault", "kind": {"a": 1}, "seconds": "x"}\n',
                b'{"cmd": "trading", "action": "halt", "account": ["x"]}\n',
                b'{"cmd": "orders", "action": "list", "limit": "' + b"9" * 5000 + b'"}\n',
            ]
            for raw in garbage:
                answer = one_answer(
                    await trio.to_thread.run_sync(blocking_exchange, h.control_socket, raw)
                )
                assert answer["ok"] is False, (raw[:80], answer)
            assert d.proc.returncode is None, d.diag()
            cli = await h.cli("status", "--socket", str(h.control_socket))
            assert cli.returncode == 0, cli
            after = await h.control({"cmd": "status"})
            assert control_restarts(after) == before, after["status"]["supervision"]
            log = d.log()
            assert "Traceback" not in log, log[-3000:]
            assert " ERROR " not in log, log[-3000:]
