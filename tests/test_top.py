"""``tradingd top``: the renderers, the keys, plain text and the terminal, the daemon going away.

* The pure renderers (:mod:`daemon.cli.top_view`, :mod:`daemon.cli.top_screen`)
  on the whole status document of a real in-process daemon (the demo's
  configuration over the exchange simulator: venues, orders, market data) and
  on malformed ones: missing keys, wrong types, huge and non-finite values,
  escape sequences, deep trees, long lists (and hypothesis-made documents).
* The key state machine (:func:`daemon.cli.top.on_key`): ``q``, ``h`` with
  its y/n confirmation, ``/``; a halt and a resume sent to the real daemon.
* Plain text end to end: ``python -m daemon.cli.top`` with stdout a pipe,
  against a fake control socket that stops and comes back with another pid.
* The terminal: the same command in a pseudo-terminal, its screen read, a
  halt through ``h``/Enter/``y`` shown to reach the daemon, ``q`` exits 0.

Every wait is bounded (``trio.fail_after``); the only sleeps are the short
polls of a pseudo-terminal read by a thread.
"""

from __future__ import annotations

import argparse
import fcntl
import io
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from daemon.app import Daemon
from daemon.cli import top
from daemon.cli.demo import DEMO_KEY_ENV, DEMO_SECRET_ENV, demo_config, demo_token_path
from daemon.cli.top import Mode, Quit, SetTrading, TopKeys, on_key, split_keys
from daemon.cli.top_screen import allocate, fit_widths, render_screen
from daemon.cli.top_view import History, Snapshot, build_sections, cell, render_text, sparkline
from daemon.control import serve_control
from daemon.notify import Notifier
from daemon.venues.sim.config import SimConfig
from tests.helpers.sim import running_sim

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
WAIT_S = 30
ROOT = Path(__file__).resolve().parent.parent


def top_args(sock: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    top.add_top_arguments(parser)
    return parser.parse_args(["--socket", str(sock), *extra])


def screen_text(snapshot: Snapshot, history: History, width: int, height: int, **kw: Any) -> str:
    console = Console(
        width=width, height=height, file=io.StringIO(), record=True, color_system=None
    )
    console.print(render_screen(snapshot, history, width=width, height=height, **kw))
    return console.export_text()


def assert_printable(text: str) -> None:
    """Nothing a terminal would interpret: no control or format characters but newlines."""
    bad = {ch for ch in text if ch != "\n" and unicodedata.category(ch)[0] == "C"}
    assert not bad, sorted(bad)


# ---------------------------------------------------------------------------- a real daemon


@attrs.frozen
class RealDaemon:
    daemon: Daemon
    socket: Path


@asynccontextmanager
async def real_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RealDaemon]:
    """The demo's configuration (simulator venue, one account quoting BTCUSDT) in-process."""
    sim_config = SimConfig(rest_port=0, ws_port=0)
    monkeypatch.setenv(DEMO_KEY_ENV, sim_config.accounts[0].api_key)
    monkeypatch.setenv(DEMO_SECRET_ENV, sim_config.accounts[0].secret_key)
    state_dir = tmp_path / "var"
    state_dir.mkdir(mode=0o700)
    token = demo_token_path(state_dir)
    token.write_text("top-test-token-0123456789\n")
    token.chmod(0o600)
    async with running_sim(sim_config) as sim, trio.open_nursery() as nursery:
        config = demo_config(state_dir, 0, (sim.rest_url, sim.ws_url))
        daemon = Daemon(config, notifier=Notifier.from_environ({}))
        nursery.start_soon(daemon.run)
        try:
            yield RealDaemon(daemon, config.control_socket_path())
        finally:
            daemon.request_stop("test")


async def wait_for_orders(reader: top.Reader) -> Snapshot:
    """A snapshot once the daemon runs, its venue is up with its user stream, the store
    answers and the strategy's first orders are listed."""
    while True:
        snapshot = await trio.to_thread.run_sync(reader.read)
        status = snapshot.status if isinstance(snapshot.status, dict) else {}
        streams = (status.get("orders") or {}).get("user_streams") or {}
        if (
            status.get("state") == "running"
            and snapshot.orders
            and snapshot.dead_letters is not None
            and (streams.get("sim") or {}).get("fill_source") == "stream"
            and (status.get("venues") or {}).get("sim", {}).get("state") == "up"
        ):
            return snapshot
        await trio.sleep(0.1)


async def test_a_real_daemon_renders_every_pane_and_halts_through_the_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(WAIT_S):
        async with real_daemon(tmp_path, monkeypatch) as real:
            args = top_args(real.socket, "--timeout", "10")
            reader = top.Reader(args)
            snapshot = await wait_for_orders(reader)
            history = History()
            history.record(snapshot)

            text = render_text(snapshot, history)
            assert_printable(text)
            for expected in (
                "health: ",
                "loop lag",
                "supervision",
                "root [one_for_one]",
                "marketdata [one_for_one]",
                "queues",
                "marketdata.sim.trades",
                "orders.shard-0",
                "venues",
                "orders",
                "by state: ",
                "trading: demo ACTIVE",
                "positions",
                "dead letters: 0",
                "slowest task steps",
            ):
                assert expected in text, expected
            venue = next(line for line in text.splitlines() if line.startswith("  sim "))
            assert " up " in venue and "stream" in venue  # connected, fills from the stream
            coid = snapshot.orders[0]["client_order_id"]
            assert coid in text

            for width, height in ((160, 50), (90, 40), (40, 12)):
                screen = screen_text(snapshot, history, width, height, footer=top.KEY_HELP)
                lines = screen.splitlines()
                assert len(lines) == height and max(len(line) for line in lines) <= width
            wide = screen_text(snapshot, history, 160, 60)
            for pane in ("loop lag", "supervision", "queues", "venues", "orders", "positions"):
                assert pane in wide, pane

            # h, Enter (the only account is offered), y: a halt, sent to the daemon.
            keys = TopKeys()
            accounts = top.accounts_of(snapshot)
            assert accounts == {"demo": "ACTIVE"}
            for key in "h\r":
                keys, action = on_key(keys, key, accounts)
                assert action is None
            assert keys.footer() == "halt account demo? [y/N]"
            keys, action = on_key(keys, "y", accounts)
            assert action == SetTrading("halt", "demo")
            outcome = await trio.to_thread.run_sync(top.set_trading, reader, 10.0, action)
            assert outcome == "halt: account demo is now HALTED"
            after = await trio.to_thread.run_sync(reader.read)
            assert top.accounts_of(after) == {"demo": "HALTED"}
            # The same keys now resume it.
            for key in "h\r":
                keys, _ = on_key(keys, key, top.accounts_of(after))
            keys, action = on_key(keys, "y", top.accounts_of(after))
            assert action == SetTrading("resume", "demo")
            outcome = await trio.to_thread.run_sync(top.set_trading, reader, 10.0, action)
            assert outcome == "resume: account demo is now ACTIVE"

            # Plain text end to end, in a thread as in its own process.
            argv = ["--socket", str(real.socket), "--count", "2", "--interval", "0.1"]
            code = await trio.to_thread.run_sync(top.main, argv)
            assert code == 0
            out = capsys.readouterr().out
            assert out.count("--- ") == 2 and out.count("every 0.1s (Ctrl-C to stop)") == 2
            assert out.count("root [one_for_one]") == 2
            # --filter keeps only the rows that contain the text.
            argv = ["--socket", str(real.socket), "--count", "1", "--filter", "shard-1"]
            assert await trio.to_thread.run_sync(top.main, argv) == 0
            out = capsys.readouterr().out
            assert "orders.shard-1" in out and "orders.shard-0" not in out
            assert "hidden by the filter" in out


# ---------------------------------------------------------------------------- hostile documents


def _deep_tree(levels: int) -> dict[str, Any]:
    tree: dict[str, Any] = {"name": "leaf", "strategy": "one_for_one", "children": []}
    for i in range(levels):
        child = {"name": f"c{i}", "state": "running", "restarts": 0, "supervisor": tree}
        tree = {"name": f"s{i}", "strategy": "one_for_one", "children": [child]}
    return tree


ESCAPES = "\x1b[2J\x1b]0;owned\x07\u202e\ud800\x00"

MALFORMED: list[Any] = [
    None,
    [],
    "status",
    {},
    {"health": "healthy", "supervision": [], "queues": {}, "venues": [], "loop_lag": 3},
    {"health": {"level": None, "reasons": "not a list"}, "loop_lag": {"p99_ms": "fast"}},
    {
        "version": ESCAPES,
        "pid": 10**400,
        "uptime_s": float("inf"),
        "health": {"level": ESCAPES, "reasons": [ESCAPES * 1000, 10**400, None]},
        "loop_lag": {"p50_ms": float("nan"), "p99_ms": 1e308, "max_ms": -1e308},
        "supervision": {
            "name": ESCAPES,
            "children": [
                {"name": ESCAPES, "state": 3, "heartbeat_age_s": 1e300, "last_error": ESCAPES},
                "not a child",
                None,
            ],
        },
        "queues": [
            {"name": ESCAPES, "depth": 10**400, "capacity": 0, "dropped": True},
            *({"name": f"q{i}", "depth": i, "capacity": 10} for i in range(100_000)),
        ],
        "venues": {
            ESCAPES: {
                "state": ESCAPES,
                "client": {"limiter": {"windows": {"w": {"used": 1e308, "limit": 1e-308}}}},
            },
            "v": "not a venue",
        },
        "marketdata": {"v": {"symbols": {"X": {"last_commit_at": 1e300}}, "queues": [1, 2]}},
        "orders": {"orders": {"by_state": {ESCAPES: 10**400}}, "dispatch": {"queues": [1]}},
        "slow_steps": {"slowest": [{"duration_ms": 1e308, "task": ESCAPES, "at": -1e300}] * 3},
        "store": {"backend": ["x"], "stats": "none"},
        "intake": {"state": ESCAPES},
    },
    {"supervision": _deep_tree(200)},
    {"supervision": {"children": [{"name": "x", "supervisor": {"children": "no"}}]}},
]


@pytest.mark.parametrize("status", MALFORMED, ids=range(len(MALFORMED)))
def test_a_malformed_status_renders_with_dashes_never_a_traceback(status: Any) -> None:
    snapshot = Snapshot(
        at=time.time(),
        status=status,
        orders=[{"state": ESCAPES, "updated_at_ms": 1e308, "price": 10**400}, "x", None],
        positions={"not": "a list"},
        trading={"effective": {ESCAPES: 3}},
        dead_letters=[{"source": ESCAPES}] * 1500,
    )
    history = History()
    history.record(snapshot)
    history.record(attrs.evolve(snapshot, status={"pid": 1, "loop_lag": {"p99_ms": 5}}))
    text = render_text(snapshot, history, filter_text=ESCAPES)
    assert_printable(text)
    text = render_text(snapshot, history)
    assert_printable(text)
    assert "\x1b" not in text
    for width, height in ((160, 50), (80, 24), (20, 8)):
        screen = screen_text(snapshot, history, width, height, filter_text="q1")
        assert len(screen.splitlines()) == height
        assert_printable(screen)


def test_missing_parts_are_said_not_guessed() -> None:
    """No orders pipeline: the daemon's reason, not an empty table that looks healthy."""
    snapshot = Snapshot(
        at=time.time(),
        status={"version": "1", "pid": 3, "health": {"level": "degraded", "reasons": ["r1"]}},
        problems={"orders": "no accounts configured", "positions": "no accounts configured"},
    )
    text = render_text(snapshot, History())
    assert "health: degraded (r1)" in text
    assert "orders: no accounts configured" in text
    assert "dead letters: -" in text
    assert "no venues" in text and "no queues" in text
    assert "pid 3" in text and "up -" in text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=30,
)
KEYS = [
    "health",
    "supervision",
    "loop_lag",
    "queues",
    "venues",
    "marketdata",
    "orders",
    "slow_steps",
    "store",
    "intake",
    "pid",
    "version",
    "uptime_s",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), json_values), json_values, json_values)
def test_any_document_renders(status: dict[str, Any], orders: Any, trading: Any) -> None:
    snapshot = Snapshot(
        at=1e9, status=status, orders=orders, positions=orders, trading=trading, dead_letters=orders
    )
    history = History()
    history.record(snapshot)
    assert_printable(render_text(snapshot, history, filter_text="a"))
    screen = screen_text(snapshot, history, 100, 30)
    assert len(screen.splitlines()) == 30


def test_cell_and_sparkline() -> None:
    assert cell(None) == cell([1]) == cell({}) == cell(float("nan")) == "-"
    assert cell(True) == "yes" and cell(10**400) == "huge" and cell(2.5) == "2.5"
    assert cell("a\x1b[31mb") == "a?[31mb"
    assert cell("x" * 100) == "x" * 59 + "…"
    samples = [(100.0 + i, float(i)) for i in range(8)] + [(108.0, None)]
    assert sparkline(samples, now=109.0, width=12) == "   ▁▂▃▄▅▆▇█·"
    assert sparkline([(0.0, 5.0)], now=100.0, width=3) == "   "  # older than a minute
    many = [(float(i), float(i % 2)) for i in range(60)]
    assert len(sparkline(many, now=60.0, width=10)) == 10


def test_allocate_and_fit_widths() -> None:
    assert allocate([3, 4], 10) == [3, 4]
    assert allocate([10, 10, 10], 20) == [8, 6, 6]
    assert sum(allocate([30, 2, 30, 30], 17)) <= 17
    assert allocate([10, 10, 10], 13) == [7, 6, 0]  # the last is not shown
    first, middle, last = fit_widths([20, 5, 20], [4, 5, 4], 30)
    assert middle == 5 and first + last == 25 and abs(first - last) <= 1  # the widest cut first
    assert fit_widths([3, 3], [3, 3], 4) == [3, 3]  # the minimums win


def test_history_sees_a_restart() -> None:
    history = History()
    history.record(Snapshot(at=1.0, status={"pid": 7}))
    history.record(Snapshot(at=2.0, error="gone"))
    history.record(Snapshot(at=3.0, status={"pid": 8}))
    assert history.restart is not None and "pid 7 → 8" in history.restart
    assert [v for _, v in history.lag_samples()] == [None, None, None]
    text = render_text(Snapshot(at=3.0, status={"pid": 8}), history)
    assert "restarted: pid 7 → 8" in text


# ---------------------------------------------------------------------------- keys


def press(keys: TopKeys, text: str, accounts: dict[str, str]) -> tuple[TopKeys, list[Any]]:
    actions = []
    for key in split_keys(text):
        keys, action = on_key(keys, key, accounts)
        if action is not None:
            actions.append(action)
    return keys, actions


def test_keys_quit_filter_and_halt_with_confirmation() -> None:
    two = {"main": "ACTIVE", "spare": "HALTED"}
    assert press(TopKeys(), "q", two)[1] == [Quit()]
    assert press(TopKeys(), "x\x1b[A", two) == (TopKeys(), [])  # arrows are ignored

    keys, actions = press(TopKeys(), "/shaX\x7frd\r", two)
    assert keys == TopKeys(filter="shard") and actions == []
    keys, _ = press(keys, "/abc\x1b", two)  # Esc keeps the filter in force
    assert keys.filter == "shard" and keys.mode is Mode.NORMAL
    keys, _ = press(keys, "\x1b", two)
    assert keys.filter == "" and keys.message == "filter cleared"
    assert press(TopKeys(), "/", two)[0].footer().startswith("filter: _")

    # Two accounts: nothing offered; Tab completes; n cancels, y sends.
    keys, _ = press(TopKeys(), "h", two)
    assert keys.mode is Mode.ACCOUNT and keys.buffer == ""
    keys, _ = press(keys, "m\t\r", two)
    assert keys.mode is Mode.CONFIRM and keys.footer() == "halt account main? [y/N]"
    cancelled, actions = press(keys, "n", two)
    assert actions == [] and cancelled.message == "cancelled: nothing sent"
    assert press(keys, "\r", two)[1] == []  # Enter is not a yes
    assert press(keys, "y", two)[1] == [SetTrading("halt", "main")]
    # A halted account is resumed; an unknown one is refused before asking.
    assert press(TopKeys(), "hspare\ry", two)[1] == [SetTrading("resume", "spare")]
    keys, actions = press(TopKeys(), "hnope\r", two)
    assert actions == [] and keys.mode is Mode.NORMAL and "no account 'nope'" in keys.message
    assert press(TopKeys(), "h\r", two)[0].message == "cancelled"
    assert press(TopKeys(), "hma\x1b", two)[0] == TopKeys(message="cancelled")
    # No trading view (the daemon did not say): the name is sent as typed, as a halt.
    assert press(TopKeys(), "hany\ry", {})[1] == [SetTrading("halt", "any")]
    # q while typing is a letter, not quit.
    keys, actions = press(TopKeys(), "/q", two)
    assert actions == [] and keys.buffer == "q"


# ---------------------------------------------------------------------------- fake daemons


class FakeDaemon:
    """Control-socket answers of a daemon with pid ``pid``; records what it was asked."""

    def __init__(self) -> None:
        self.pid = 7
        self.asked: list[dict[str, Any]] = []
        self.halted = trio.Event()
        self.effective = {"demo": "ACTIVE"}

    async def handler(self, message: dict[str, Any]) -> dict[str, Any]:
        self.asked.append(message)
        cmd, action = message.get("cmd"), message.get("action")
        if cmd == "status":
            status = {
                "version": "0.1.0",
                "pid": self.pid,
                "state": "running",
                "health": {"level": "healthy", "reasons": []},
                "loop_lag": {"p50_ms": 0.5, "p99_ms": 2.0, "max_ms": 3.0, "samples": 10},
                "supervision": {
                    "name": "root",
                    "strategy": "one_for_one",
                    "children": [{"name": "control", "state": "running", "restarts": 0}],
                },
                "queues": [{"name": "q.main", "depth": 1, "capacity": 10}],
            }
            return {"ok": True, "status": status}
        if cmd == "trading" and action in ("halt", "resume"):
            self.effective[message["account"]] = "HALTED" if action == "halt" else "ACTIVE"
            self.halted.set()
            return {"ok": True, "effective": self.effective, "warning": None}
        if cmd == "trading":
            return {"ok": True, "effective": self.effective}
        return {"ok": False, "error": "no accounts configured", "status": 503}

    @asynccontextmanager
    async def serving(self, sock: Path) -> AsyncIterator[None]:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, sock, self.handler)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()


def top_command(sock: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "daemon.cli.top", "--socket", str(sock), *extra]


async def test_plain_text_survives_a_daemon_that_stops_and_comes_back(tmp_path: Path) -> None:
    sock = tmp_path / "c.sock"
    fake = FakeDaemon()
    out = bytearray()

    async def read_until(proc: trio.Process, text: bytes) -> None:
        assert proc.stdout is not None
        start = len(out)
        while text not in out[start:]:
            chunk = await proc.stdout.receive_some(65536)
            assert chunk, out.decode()
            out.extend(chunk)

    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            first = trio.CancelScope()

            async def serve_first(task_status: trio.TaskStatus[Path]) -> None:
                with first:
                    await serve_control(sock, fake.handler, task_status=task_status)

            await nursery.start(serve_first)
            proc = await trio.lowlevel.open_process(
                top_command(sock, "--interval", "0.1"), stdout=subprocess.PIPE, cwd=ROOT
            )
            try:
                await read_until(proc, b"pid 7  running")
                await read_until(proc, b"root [one_for_one]")
                first.cancel()  # the daemon is gone, its socket removed: said, asked again
                await read_until(proc, b"NOT REACHABLE: no daemon is running")
                await read_until(proc, b"NOT REACHABLE")
                fake.pid = 8
                async with fake.serving(sock):
                    await read_until(proc, "restarted: pid 7 → 8".encode())
                    await read_until(proc, b"pid 8  running")
                proc.send_signal(signal.SIGINT)
                assert await proc.wait() == 0
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
    text = out.decode()
    assert "q.main" in text and "orders: no accounts configured" in text
    assert not any(m.get("cmd") == "trading" and m.get("action") != "show" for m in fake.asked)


async def test_plain_text_counts_and_reports_nothing_listening(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--socket", str(tmp_path / "none.sock"), "--count", "2", "--interval", "0.1"]
    with trio.fail_after(WAIT_S):
        assert await trio.to_thread.run_sync(top.main, argv) == 0
    out = capsys.readouterr().out
    assert out.count("NOT REACHABLE: no daemon is running") == 2
    assert "asking again every 0.1s" in out


def test_bad_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--interval", "0"], ["--count", "0"], ["--interval", "x"]):
        with pytest.raises(SystemExit) as exit_:
            top.main(argv)
        assert exit_.value.code == 2
    assert "must be in 0.1..3600 seconds" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the terminal


class Terminal:
    """The master side of a pseudo-terminal, read by a thread into :attr:`data`."""

    def __init__(self, rows: int, columns: int) -> None:
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.data = bytearray()
        self._lock = threading.Lock()
        self._arrived = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _wake(self) -> None:
        self._arrived.set()
        self._arrived = trio.Event()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the other side is closed
                return
            if not chunk:
                return
            with self._lock:
                self.data.extend(chunk)
            try:
                trio.from_thread.run_sync(self._wake, trio_token=self._token)
            except trio.RunFinishedError:
                return

    def text(self) -> str:
        """What was written, escape sequences removed (the screen as a stream)."""
        with self._lock:
            raw = bytes(self.data).decode("utf-8", errors="replace")
        return re.sub(r"\x1b(\[[0-9;?]*[A-Za-z]|\][^\x07]*\x07|[()][0-9A-Z]|[=>78])", "", raw)

    async def wait_for(self, text: str) -> None:
        while text not in self.text():
            await self._arrived.wait()

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> None:
        os.close(self.master)


async def test_the_terminal_view_halts_through_its_keys_and_quits_on_q(tmp_path: Path) -> None:
    sock = tmp_path / "c.sock"
    fake = FakeDaemon()
    terminal = Terminal(rows=40, columns=150)
    env = {**os.environ, "TERM": "xterm-256color"}
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    with trio.fail_after(WAIT_S):
        async with fake.serving(sock):
            proc = await trio.lowlevel.open_process(
                top_command(sock, "--interval", "0.2"),
                stdin=terminal.slave,
                stdout=terminal.slave,
                stderr=terminal.slave,
                env=env,
                cwd=ROOT,
                start_new_session=True,
            )
            os.close(terminal.slave)
            try:
                await terminal.wait_for("health: healthy")
                for pane in (
                    "loop lag",
                    "supervision",
                    "queues",
                    "venues",
                    "orders",
                    "positions",
                    "dead letters",
                    "q quit",
                ):
                    await terminal.wait_for(pane)
                await terminal.wait_for("q.main")
                terminal.send("h")
                await terminal.wait_for("halt or resume which account? demo")
                terminal.send("\r")
                await terminal.wait_for("halt account demo? [y/N]")
                terminal.send("y")
                await fake.halted.wait()
                await terminal.wait_for("halt: account demo is now HALTED")
                await terminal.wait_for("trading: demo HALTED")
                started = time.monotonic()
                terminal.send("q")
                with trio.fail_after(5):
                    assert await proc.wait() == 0
                assert time.monotonic() - started < 5
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                terminal.close()
    halts = [m for m in fake.asked if m.get("cmd") == "trading" and m.get("action") == "halt"]
    assert halts == [
        {"cmd": "trading", "action": "halt", "account": "demo", "reason": "tradingd top"}
    ]


def test_sections_filter_rows_not_panes() -> None:
    status = json.loads(
        json.dumps({"queues": [{"name": "a.x"}, {"name": "b.y"}], "supervision": {}})
    )
    sections = build_sections(Snapshot(at=0.0, status=status), History(), "A.X")
    queues = next(s for s in sections if s.key == "queues")
    assert [r.cells[0] for r in queues.rows] == ["a.x"] and queues.hidden == 1
    assert {s.key for s in sections} >= {"lag", "supervision", "venues", "orders"}


def test_venue_breaker_is_the_breaker_state_or_the_limiters_freeze() -> None:
    venues = {
        "a": {"state": "up", "breaker": {"state": "open"}},
        "b": {"state": "up", "client": {"limiter": {"frozen_for_s": 12.0}}},
        "c": {"state": "connecting", "client": {"limiter": {"frozen_for_s": 0.0}}},
    }
    sections = build_sections(Snapshot(at=0.0, status={"venues": venues}), History())
    rows = {r.cells[0]: r for r in next(s for s in sections if s.key == "venues").rows}
    assert (rows["a"].cells[5], rows["a"].level) == ("open", "bad")
    assert (rows["b"].cells[5], rows["b"].level) == ("frozen 12s", "bad")
    assert (rows["c"].cells[5], rows["c"].level) == ("-", "warn")


def test_tradingd_top_is_wired_into_the_command(tmp_path: Path) -> None:
    """``tradingd top`` itself (not only ``python -m daemon.cli.top``): plain text, gone daemon."""
    from daemon import cli  # noqa: PLC0415

    argv = ["top", "--socket", str(tmp_path / "none.sock"), "--count", "1", "--interval", "0.1"]
    assert cli.main(argv) == 0
