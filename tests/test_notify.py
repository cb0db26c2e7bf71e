"""Tests for daemon.notify: sd_notify against real AF_UNIX datagram sockets."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.notify import NOTIFY_ENV_VARS, Notifier, unset_environment

_MAX_SUN_PATH = 100  # sockaddr_un.sun_path is 108 bytes on Linux; keep a margin


class Receiver:
    """A real notification socket, standing in for systemd's."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(5.0)

    def recv(self) -> bytes:
        return self.sock.recv(65536)

    def pending(self) -> list[bytes]:
        """Every datagram already queued, without waiting."""
        out: list[bytes] = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(65536))
        except BlockingIOError:
            return out
        finally:
            self.sock.settimeout(5.0)

    def close(self) -> None:
        self.sock.close()


def _socket_dir(tmp_path: Path) -> Path:
    # pytest's tmp_path can be longer than an AF_UNIX address allows.
    if len(str(tmp_path / "notify.sock")) < _MAX_SUN_PATH:
        return tmp_path
    return Path(tempfile.mkdtemp(prefix="td-notify-"))


@pytest.fixture
def socket_path(tmp_path: Path) -> str:
    return str(_socket_dir(tmp_path) / "notify.sock")


@pytest.fixture
def receiver(socket_path: str) -> Iterator[Receiver]:
    rx = Receiver(socket_path)
    yield rx
    rx.close()


@pytest.fixture
def notifier(socket_path: str, receiver: Receiver) -> Iterator[Notifier]:
    n = Notifier.from_environ({"NOTIFY_SOCKET": socket_path})
    yield n
    n.close()


# -- no-op when not under systemd ---------------------------------------------------------------


@pytest.mark.parametrize(
    "environ",
    [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "relative.sock"}, {"NOTIFY_SOCKET": "vsock:2:1"}],
)
def test_noop_without_usable_socket(environ: dict[str, str]) -> None:
    n = Notifier.from_environ({**environ, "WATCHDOG_USEC": "1000000"}, pid=1)
    assert not n.enabled
    assert n.address is None
    assert n.watchdog_interval_s is None
    assert n.ready("up") is False
    assert n.watchdog() is False
    assert n.send(X=1) is False
    assert (n.sent, n.failed) == (0, 0)


def test_from_environ_defaults_to_os_environ(
    monkeypatch: pytest.MonkeyPatch, socket_path: str, receiver: Receiver
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", socket_path)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier.from_environ()
    assert n.enabled
    assert n.watchdog_interval_s == 2.0
    assert n.ready() is True
    assert receiver.recv() == b"READY=1"
    n.close()


# -- message formats ------------------------------------------------------------------------------


def test_ready(notifier: Notifier, receiver: Receiver) -> None:
    assert notifier.ready() is True
    assert notifier.ready("serving 3 feeds") is True
    assert receiver.recv() == b"READY=1"
    assert receiver.recv() == b"READY=1\nSTATUS=serving 3 feeds"
    assert (notifier.sent, notifier.failed) == (2, 0)


def test_status_is_one_line(notifier: Notifier, receiver: Receiver) -> None:
    notifier.status("line one\nline two\r\nline three\n")
    assert receiver.recv() == b"STATUS=line one line two line three"


def test_simple_messages(notifier: Notifier, receiver: Receiver) -> None:
    notifier.watchdog()
    notifier.watchdog_trigger()
    notifier.stopping()
    notifier.stopping("draining 4 orders")
    notifier.extend_timeout(2.5)
    notifier.extend_timeout(0.0000015)
    notifier.errno(5)
    assert receiver.pending() == [
        b"WATCHDOG=1",
        b"WATCHDOG=trigger",
        b"STOPPING=1",
        b"STOPPING=1\nSTATUS=draining 4 orders",
        b"EXTEND_TIMEOUT_USEC=2500000",
        b"EXTEND_TIMEOUT_USEC=2",
        b"ERRNO=5",
    ]
    assert notifier.sent == 7


def test_reloading_carries_monotonic_usec(notifier: Notifier, receiver: Receiver) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading("reloading config")
    first = receiver.recv().decode().split("\n")
    assert first[0] == "RELOADING=1"
    key, _, value = first[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after
    second = receiver.recv().decode().split("\n")
    assert second[0] == "RELOADING=1"
    assert second[1].startswith("MONOTONIC_USEC=")
    assert second[2] == "STATUS=reloading config"
    assert len(second) == 3


def test_send_mapping_and_kwargs_in_one_datagram(notifier: Notifier, receiver: Receiver) -> None:
    assert notifier.send({"READY": 1, "STATUS": "a\nb"}, MAINPID=42) is True
    assert receiver.recv() == b"READY=1\nSTATUS=a b\nMAINPID=42"


@pytest.mark.parametrize("key", ["", "A=B", "A\nB"])
def test_malformed_key_is_a_programming_error(notifier: Notifier, key: str) -> None:
    with pytest.raises(ValueError, match="invalid sd_notify key"):
        notifier.send({key: 1})


def test_empty_message_and_negative_timeout_rejected(notifier: Notifier) -> None:
    with pytest.raises(ValueError):
        notifier.send()
    with pytest.raises(ValueError):
        notifier.extend_timeout(-1)


def test_abstract_socket() -> None:
    name = f"tradingd-test-{uuid.uuid4().hex}"
    rx = Receiver("\0" + name)
    try:
        n = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name})
        assert n.enabled
        assert n.address == "\0" + name
        assert n.ready("abstract") is True
        assert rx.recv() == b"READY=1\nSTATUS=abstract"
        assert f"@{name}" in repr(n)
        n.close()
    finally:
        rx.close()


# -- watchdog settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected_s"),
    [
        ({"WATCHDOG_USEC": "3000000"}, 1.5),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "4242"}, 1.5),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "4243"}, None),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "not-a-pid"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "3s"}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_PID": "4242"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(
    socket_path: str, extra: dict[str, str], expected_s: float | None
) -> None:
    n = Notifier.from_environ({"NOTIFY_SOCKET": socket_path, **extra}, pid=4242)
    assert n.enabled
    assert n.watchdog_interval_s == expected_s
    assert n.watchdog_usec == (3_000_000 if expected_s is not None else None)


def test_watchdog_needs_a_socket() -> None:
    n = Notifier.from_environ({"WATCHDOG_USEC": "3000000"}, pid=1)
    assert n.watchdog_interval_s is None


# -- failures never raise -------------------------------------------------------------------------


def test_send_failure_is_counted_and_logged_once(
    socket_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tradingd.notify")
    n = Notifier.from_environ({"NOTIFY_SOCKET": socket_path})  # nobody listens yet
    assert n.ready() is False
    assert n.watchdog() is False
    assert (n.sent, n.failed) == (0, 2)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "sd_notify" in warnings[0].getMessage()

    rx = Receiver(socket_path)
    try:
        assert n.watchdog() is True
        assert rx.recv() == b"WATCHDOG=1"
        assert (n.sent, n.failed) == (1, 2)
        assert any("works again" in r.getMessage() for r in caplog.records)
    finally:
        rx.close()
        n.close()


@pytest.mark.timeout(20)
def test_full_receiver_queue_does_not_block(notifier: Notifier, receiver: Receiver) -> None:
    # Nobody reads: the kernel's datagram queue fills up and MSG_DONTWAIT must
    # turn that into counted failures instead of a blocked caller.
    results = [notifier.status(f"message {i}") for i in range(2000)]
    assert results[0] is True
    assert False in results
    assert notifier.sent == results.count(True)
    assert notifier.failed == results.count(False)
    assert notifier.sent + notifier.failed == 2000
    assert receiver.recv() == b"STATUS=message 0"


def test_close_and_reopen(notifier: Notifier, receiver: Receiver) -> None:
    assert notifier.ready() is True
    notifier.close()
    notifier.close()  # idempotent
    assert notifier.status("after close") is True
    assert receiver.pending() == [b"READY=1", b"STATUS=after close"]


def test_context_manager_closes(socket_path: str, receiver: Receiver) -> None:
    with Notifier.from_environ({"NOTIFY_SOCKET": socket_path}) as n:
        n.stopping()
        opened = n._sock
    assert opened is not None
    assert opened.fileno() == -1  # closed on exit
    assert n._sock is None
    assert receiver.recv() == b"STOPPING=1"


# -- environment hygiene --------------------------------------------------------------------------


def test_unset_environment_mapping() -> None:
    env = {
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "WATCHDOG_USEC": "1",
        "WATCHDOG_PID": "1",
        "PATH": "/usr/bin",
    }
    unset_environment(env)
    assert env == {"PATH": "/usr/bin"}
    unset_environment(env)  # missing keys are fine
    assert env == {"PATH": "/usr/bin"}
    assert set(NOTIFY_ENV_VARS) == {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}


def test_unset_environment_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NOTIFY_ENV_VARS:
        monkeypatch.setenv(name, "x")
    unset_environment()
    assert not any(name in os.environ for name in NOTIFY_ENV_VARS)


def test_unsendable_address_does_not_raise() -> None:
    n = Notifier("/" + "x" * 200)  # longer than sockaddr_un allows
    assert n.ready() is False
    assert (n.sent, n.failed) == (0, 1)
