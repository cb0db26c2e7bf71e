"""CLI helpers that do not need a running daemon."""

from __future__ import annotations

import argparse
import functools
import logging
import sqlite3
from pathlib import Path

import pytest
import trio

from daemon import cli, logs
from daemon.cli import client as cli_client
from daemon.cli import render as cli_render
from daemon.cli import run as cli_run
from daemon.config import Config
from daemon.control import serve_control
from daemon.errors import ConfigError
from daemon.notify import Notifier
from tests.helpers.process import run_into_closed_pipe


def _args(config: Path, socket: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(config=str(config), socket=socket, timeout=1.0)


def test_socket_found_from_an_invalid_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tradingd reload` after a bad edit must still reach the daemon to be rejected."""
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    cfg = tmp_path / "t.toml"
    cfg.write_text('[daemon]\nstate_dir = "st"\nbogus = 1\n')
    assert cli_client._socket_of(_args(cfg)) == tmp_path / "st" / "control.sock"
    cfg.write_text('[daemon]\ncontrol_socket = "/x/c.sock"\ntypo_key = 1\n')
    assert cli_client._socket_of(_args(cfg)) == Path("/x/c.sock")
    cfg.write_text("[daemon\n")  # not even TOML: the defaults apply
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    assert cli_client._socket_of(_args(cfg)) == tmp_path / "run" / "control.sock"
    assert cli_client._socket_of(_args(cfg, socket="/given.sock")) == Path("/given.sock")


def test_check_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(f'[daemon]\nstate_dir = "{tmp_path}/state"\n')
    assert cli.main(["check-config", str(good)]) == cli.EXIT_OK
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon]\nshutdown_timeout_s = -1\n[nope]\n")
    assert cli.main(["check-config", str(bad)]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "invalid configuration (2 problem(s))" in err
    assert f"{bad}:2: daemon.shutdown_timeout_s: must be > 0, got -1" in err
    assert f"{bad}:3: nope: unknown key" in err


def test_unreachable_daemon_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["status", "--socket", str(tmp_path / "none.sock")])
    assert code == cli.EXIT_UNREACHABLE
    assert "no daemon is running" in capsys.readouterr().err


def test_render_status_shows_tree_health_and_queues() -> None:
    text = cli_render.render_status(
        {
            "version": "0.1.0",
            "pid": 7,
            "state": "running",
            "uptime_s": 12.0,
            "config": "/etc/t.toml",
            "health": {"level": "degraded", "reasons": ["root/x: backoff after 1 restart(s)"]},
            "loop_lag": {"p50_ms": 0.5, "p99_ms": 2.0, "max_ms": 3.0},
            "supervision": {
                "name": "root",
                "strategy": "one_for_one",
                "children": [
                    {
                        "name": "x",
                        "state": "backoff",
                        "restarts": 1,
                        "last_error": "E: boom",
                        "heartbeat_age_s": 0.25,
                        "supervisor": None,
                    },
                ],
            },
            "queues": [{"name": "trades", "depth": 3, "capacity": 10, "overflow": "block"}],
            "last_reload": {"ok": False, "origin": "SIGHUP"},
        }
    )
    assert "health: degraded (root/x: backoff after 1 restart(s))" in text
    assert "x                backoff   restarts 1 heartbeat 0.2s ago last error: E: boom" in text
    assert "trades               3/10 (block)" in text
    assert "last reload: REJECTED (SIGHUP)" in text


def test_integrity_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    sqlite3.connect(db).close()
    assert cli.main(["integrity-check", "--db", str(db)]) == cli.EXIT_OK
    assert capsys.readouterr().out.strip() == f"{db}: ok"
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 200)
    assert cli.main(["integrity-check", "--db", str(junk)]) == cli.EXIT_FAILURE
    assert "problem" in capsys.readouterr().err
    assert cli.main(["integrity-check", "--db", str(tmp_path / "missing.db")]) == cli.EXIT_FAILURE


def test_check_config_imports_strategy_classes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A strategy whose class cannot be imported fails check-config, naming it."""
    base = f"""
[daemon]
state_dir = "{tmp_path}"

[venues.sim]
rest_url = "http://127.0.0.1:1"
ws_url = "ws://127.0.0.1:1"

[accounts.main]
venue = "sim"
"""
    good = tmp_path / "good.toml"
    good.write_text(
        base
        + """
[strategies.quote]
class = "daemon.strategies.example:QuoteStrategy"
account = "main"
[strategies.quote.options]
symbol = "BTCUSDT"
quantity = "0.001"
"""
    )
    assert cli.main(["check-config", str(good)]) == cli.EXIT_OK
    bad = tmp_path / "bad.toml"
    bad.write_text(
        base
        + """
[strategies.typo]
class = "daemon.strategies.exampel:QuoteStrategy"
"""
    )
    capsys.readouterr()
    assert cli.main(["check-config", str(bad)]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "typo" in err and "daemon.strategies.exampel" in err


def test_output_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """`tradingd dead-letters list | head` printed a BrokenPipeError traceback (issue 13).

    A real pipe whose reader has already gone, as after `head` exits: the command
    ends with 141 (128 + SIGPIPE, what a shell reports for `ls | head`) and
    says nothing on stderr. (argparse's --help already swallows the error.)
    ``tests/test_hostile_config_process.py`` does the same with `dead-letters list`.
    """
    config = tmp_path / "t.toml"
    config.write_text(f'[daemon]\nstate_dir = "{tmp_path}/state"\n')
    assert run_into_closed_pipe("check-config", str(config)) == (cli.EXIT_BROKEN_PIPE, "")


def test_a_config_error_at_start_is_logged_one_line_a_problem(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Log values are escaped (no forged lines), so each problem gets its own record."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise ConfigError(["a.toml:3: strategies.x.class: cannot import", "a.toml:9: other"])

    monkeypatch.setattr(cli_run, "Daemon", refuse)
    logger = logging.getLogger(logs.ROOT_LOGGER)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:  # run_daemon installs the daemon's handler on the stream capsys replaced
        code = cli_run.run_daemon(Config(), Notifier(None))
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "a.toml" in line]
    assert len(lines) == 2 and "\\n" not in "".join(lines), lines


async def test_status_watch_refreshes_and_survives_a_daemon_that_goes_away(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``status --watch``: one status per refresh; a daemon that is gone meanwhile is
    said to be not reachable and asked again at the next refresh (exit 0 at the end)."""
    sock = tmp_path / "c.sock"
    asked = []

    async def handler(message: dict[str, object]) -> dict[str, object]:
        asked.append(message["cmd"])
        status = {"version": "0.1.0", "pid": 7, "state": "running", "health": {"level": "healthy"}}
        return {"ok": True, "status": status}

    argv = ["status", "--watch", "0.1", "--count", "3", "--socket", str(sock)]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, sock, handler)
            code = await trio.to_thread.run_sync(functools.partial(cli.main, argv))
            nursery.cancel_scope.cancel()
    assert code == cli.EXIT_OK and asked == ["status"] * 3
    out = capsys.readouterr().out
    assert out.count("--- ") == 3 and out.count("every 0.1s (Ctrl-C to stop)") == 3
    assert out.count("tradingd 0.1.0 pid 7  running") == 3

    gone = ["status", "--watch", "0.1", "--count", "2", "--socket", str(tmp_path / "gone.sock")]
    assert await trio.to_thread.run_sync(functools.partial(cli.main, gone)) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert out.count("not reachable: ") == 2 and "asking again in 0.1s" in out


def test_status_watch_refuses_a_bad_interval(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["status", "--watch", "0"])
    assert exit_.value.code == 2
    assert "must be in 0.1..3600 seconds" in capsys.readouterr().err
