"""The daemon in-process: lifecycle, exit codes, sd_notify messages, reload, control.

Real clock: the daemon uses worker threads (state directory checks), which
do not mix with an autojump clock. Every wait is bounded by ``fail_after``.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from daemon import cli
from daemon import config as configmod
from daemon.admin.api import AdminAPI
from daemon.app import EXIT_FAILURE, EXIT_HARD_STOP, EXIT_OK, Daemon
from daemon.control import RequestError
from daemon.http import HTTPError, Request
from daemon.notify import Notifier
from daemon.resilience.deadletter import DeadLetter, InMemoryDeadLetterStore
from daemon.secrets import SecretRef
from daemon.status import EventLog
from daemon.store.deadletter_admin import handle_dead_letters_command
from daemon.supervise import ChildContext, ChildSpec, EventKind, SupervisorEvent
from tests.helpers.app import NotifyListener, make_config, notifier_for


@pytest.fixture
async def listener(tmp_path: Path) -> AsyncIterator[NotifyListener]:
    lst = NotifyListener(tmp_path / "notify.sock")
    await lst.bind()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lst.run)
        yield lst
        nursery.cancel_scope.cancel()


async def run_daemon(daemon: Daemon, result: list[int]) -> None:
    result.append(await daemon.run())


async def test_ready_then_graceful_stop_exits_zero(
    tmp_path: Path, listener: NotifyListener
) -> None:
    daemon = Daemon(make_config(tmp_path), notifier=notifier_for(listener, 400_000))
    result: list[int] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_daemon, daemon, result)
            ready = await listener.wait_for("READY", "1")
            assert ready["STATUS"].startswith("running, healthy; children 5/5 up")
            # Ready means the whole tree is up: the control socket already answers.
            assert (tmp_path / "c.sock").exists()
            assert daemon.admin_address is not None
            await listener.wait_for("WATCHDOG", "1")
            daemon.request_stop("test")
    assert result == [EXIT_OK]
    assert "STOPPING" in listener.all_keys()
    assert not (tmp_path / "c.sock").exists()
    keys = listener.all_keys()
    assert keys.index("READY") < keys.index("STOPPING")


async def test_escalation_exits_nonzero_after_errno(
    tmp_path: Path, listener: NotifyListener
) -> None:
    crashes = 0

    async def crasher(
        ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        nonlocal crashes
        task_status.started()
        await trio.sleep(0.05)
        crashes += 1
        raise RuntimeError("venue exploded")

    config = make_config(tmp_path, supervision={"max_restarts": 2})
    daemon = Daemon(
        config,
        notifier=notifier_for(listener),
        extra_children=[ChildSpec("crasher", crasher)],
    )
    with trio.fail_after(20):
        code = await daemon.run()
    assert code == EXIT_FAILURE
    assert crashes == 3, "initial run + max_restarts restarts, then escalation"
    with trio.fail_after(5):
        errno_msg = await listener.wait_for("ERRNO")
        assert errno_msg["ERRNO"] == str(errno.ENOTRECOVERABLE)
        await listener.wait_for("STATUS", contains="venue exploded")
    # Children stopped in reverse order before the error reached the top.
    assert all(c.state.value in ("stopped", "failed") for c in daemon.root.status().children)


async def test_start_deadline_fails_start_without_ready(
    tmp_path: Path, listener: NotifyListener
) -> None:
    async def never_ready(
        ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await trio.sleep_forever()

    config = make_config(tmp_path, daemon={"start_timeout_s": 0.5})
    daemon = Daemon(
        config,
        notifier=notifier_for(listener),
        extra_children=[ChildSpec("slow", never_ready, start_timeout_s=60)],
    )
    with trio.fail_after(20):
        code = await daemon.run()
    assert code == EXIT_FAILURE
    with trio.fail_after(5):
        await listener.wait_for("ERRNO", str(errno.ETIMEDOUT))
    assert "READY" not in listener.all_keys()
    assert "EXTEND_TIMEOUT_USEC" in listener.all_keys(), "a long start extends systemd's timeout"


async def test_hard_stop_exit_code(tmp_path: Path, listener: NotifyListener) -> None:
    async def slow_drain(
        ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await ctx.wait_stop_requested()
        await trio.sleep(30)  # drains slowly; a hard stop cancels it

    daemon = Daemon(
        make_config(tmp_path),
        notifier=notifier_for(listener),
        extra_children=[ChildSpec("drainer", slow_drain, shutdown_grace_s=30)],
    )
    result: list[int] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_daemon, daemon, result)
            await listener.wait_for("READY", "1")
            daemon.request_stop("first signal")
            await trio.sleep(0.1)
            assert daemon.root.status().children[-1].state.value == "stopping"
            daemon.hard_stop("second signal")
    assert result == [EXIT_HARD_STOP]


async def test_reload_applies_live_keys_and_names_restart_keys(
    tmp_path: Path, listener: NotifyListener
) -> None:
    path = tmp_path / "t.toml"
    state = tmp_path / "state"
    base = (
        f'[daemon]\nstate_dir = "{state}"\ncontrol_socket = "{tmp_path}/c.sock"\n'
        '[admin]\nlisten = "127.0.0.1:0"\n'
    )
    path.write_text(base)
    config = configmod.load(path)
    daemon = Daemon(config, notifier=notifier_for(listener), config_path=path)
    result: list[int] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_daemon, daemon, result)
            await listener.wait_for("READY", "1")

            path.write_text(
                base
                + "max_connections = 3\n"
                + '[health]\nlag_degraded_ms = 250.0\n[logging]\nlevel = "debug"\n'
            )
            outcome = await daemon.reload("test")
            assert outcome.ok
            assert set(outcome.applied) == {"health.lag_degraded_ms", "logging.level"}
            assert outcome.restart_required == ("admin.max_connections",)
            assert daemon.health.thresholds.lag_degraded_ms == 250.0
            assert daemon.config.admin.max_connections == 64, "restart-only key not applied"
            reloading = await listener.wait_for("RELOADING", "1")
            assert int(reloading["MONOTONIC_USEC"]) > 0

            path.write_text(base + "[health]\nlag_degraded_ms = -1\nbogus = 2\n")
            rejected = await daemon.reload("test")
            assert not rejected.ok
            assert len(rejected.errors) == 2
            assert daemon.config.health.lag_degraded_ms == 250.0, "old config kept"
            assert "reload REJECTED (2 errors)" in daemon.status_line()
            assert daemon.status()["last_reload"]["ok"] is False
            daemon.request_stop("test")
    assert result == [EXIT_OK]


async def test_reload_without_file_is_rejected(tmp_path: Path, listener: NotifyListener) -> None:
    daemon = Daemon(make_config(tmp_path), notifier=notifier_for(listener))
    outcome = await daemon.reload("test")
    assert not outcome.ok
    assert outcome.errors == ("no configuration file to reload",)


async def test_control_commands(tmp_path: Path, listener: NotifyListener) -> None:
    daemon = Daemon(make_config(tmp_path), notifier=notifier_for(listener))
    ping = await daemon.control.handle({"cmd": "ping"})
    assert ping["ok"] and ping["pid"] == os.getpid()
    refused = await daemon.control.handle({"cmd": "fault", "kind": "block-loop"})
    assert refused == {
        "ok": False,
        "error": "fault injection is disabled (set [testing] fault_injection = true, "
        "in test configurations only)",
    }
    assert not daemon.faults.hang_heartbeat
    unknown = await daemon.control.handle({"cmd": "fault", "kind": "explode"})
    assert "unknown fault" in unknown["error"]
    assert (await daemon.control.handle({"cmd": "nope"}))["error"] == "unknown command 'nope'"


def _request(headers: dict[str, str]) -> Request:
    return Request(
        method="POST",
        path="/orders",
        query={},
        headers=headers,
        body=b"",
        client=None,
        path_params={},
    )


async def test_bearer_token_checked_in_constant_time(tmp_path: Path) -> None:
    creds = tmp_path / "tok"
    creds.write_text("correct-horse-battery\n")
    config = make_config(tmp_path, admin={"token": SecretRef("file", str(creds))})
    daemon = Daemon(config, notifier=Notifier.from_environ({}))
    await daemon._resolve_secrets()
    api = AdminAPI(daemon)
    api.require_token(_request({"authorization": "Bearer correct-horse-battery"}))
    for header in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic x"}):
        with pytest.raises(HTTPError) as info:
            api.require_token(_request(header))
        assert info.value.status == 401
    assert "correct-horse-battery" not in repr(daemon.admin_token)
    assert "correct-horse-battery" not in str(daemon.status())
    no_token = AdminAPI(Daemon(make_config(tmp_path), notifier=Notifier.from_environ({})))
    with pytest.raises(HTTPError) as info:
        no_token.require_token(_request({"authorization": "Bearer x"}))
    assert info.value.status == 403


async def test_dead_letters_through_the_control_socket(
    tmp_path: Path, listener: NotifyListener, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = Daemon(make_config(tmp_path), notifier=notifier_for(listener))
    result: list[int] = []
    sock = str(tmp_path / "c.sock")

    def cli_main(*argv: str) -> int:
        return cli.main([*argv, "--socket", sock])

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_daemon, daemon, result)
            await listener.wait_for("READY", "1")
            store = daemon.store_service.store
            assert store is not None
            for n in range(3):
                await store.dead_letters.add(
                    DeadLetter.from_error(
                        f"frame {n}", ValueError(f"bad frame {n}"), source=f"src{n % 2}"
                    )
                )
            assert await trio.to_thread.run_sync(cli_main, "dead-letters", "list") == 0
            out = capsys.readouterr().out
            assert "ValueError: bad frame 0" in out and "ValueError: bad frame 2" in out
            code = await trio.to_thread.run_sync(
                cli_main, "dead-letters", "list", "--source", "src1", "--json"
            )
            assert code == 0
            listed = json.loads(capsys.readouterr().out)
            assert [letter["payload"] for letter in listed] == ["frame 1"]
            first_id = listed[0]["letter_id"]
            assert (
                await trio.to_thread.run_sync(cli_main, "dead-letters", "show", str(first_id)) == 0
            )
            assert json.loads(capsys.readouterr().out)["error_message"] == "bad frame 1"
            # Purging without saying what is refused; with a filter it deletes just those.
            assert await trio.to_thread.run_sync(cli_main, "dead-letters", "purge") == 1
            assert "say which letters" in capsys.readouterr().err
            code = await trio.to_thread.run_sync(
                cli_main, "dead-letters", "purge", "--source", "src0"
            )
            assert code == 0
            assert capsys.readouterr().out.strip() == "purged 2 dead letter(s)"
            assert [d.source for d in await store.dead_letters.list()] == ["src1"]
            daemon.request_stop("test")
    assert result == [EXIT_OK]


async def test_reload_rereads_a_rotated_token_file(
    tmp_path: Path, listener: NotifyListener
) -> None:
    token = tmp_path / "token"
    token.write_text("first-token-value\n")
    path = tmp_path / "t.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{tmp_path}/state"\ncontrol_socket = "{tmp_path}/c.sock"\n'
        f'[admin]\nlisten = ""\ntoken = {{ file = "{token}" }}\n'
    )
    daemon = Daemon(configmod.load(path), notifier=notifier_for(listener), config_path=path)
    result: list[int] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_daemon, daemon, result)
            await listener.wait_for("READY", "1")
            assert daemon.admin_token is not None
            assert daemon.admin_token.reveal() == "first-token-value"
            token.write_text("second-token-value\n")  # same reference, new content
            outcome = await daemon.reload("test")
            assert outcome.ok and outcome.applied == ()
            assert daemon.admin_token.reveal() == "second-token-value"
            token.unlink()
            assert not (await daemon.reload("test")).ok
            assert daemon.admin_token.reveal() == "second-token-value", "kept on a bad reload"
            daemon.request_stop("test")
    assert result == [EXIT_OK]


async def test_dead_letters_command_on_its_own() -> None:
    """The handler needs only a dead-letter store (None: the store is not open)."""
    bad = {"cmd": "dead-letters", "action": "list", "limit": 0}
    with pytest.raises(RequestError):  # arguments are checked before the store is asked
        await handle_dead_letters_command(None, bad)
    closed = await handle_dead_letters_command(None, {"cmd": "dead-letters", "action": "list"})
    assert closed == {"ok": False, "error": "the store is not open"}
    letters = InMemoryDeadLetterStore()
    stored = await letters.add(DeadLetter.from_error("x", ValueError("bad"), source="s"))
    msg: dict[str, Any] = {"cmd": "dead-letters", "action": "show", "id": stored.letter_id}
    shown = await handle_dead_letters_command(letters, msg)
    assert shown["ok"] and shown["letter"]["payload"] == "x"
    msg = {"cmd": "dead-letters", "action": "purge", "all": True}
    assert await handle_dead_letters_command(letters, msg) == {"ok": True, "purged": 1}
    msg = {"cmd": "dead-letters", "action": "show", "id": stored.letter_id}
    assert (await handle_dead_letters_command(letters, msg))["error"] == (
        f"no dead letter {stored.letter_id}"
    )


def test_event_log_keeps_fifty_and_shows_twenty() -> None:
    log = EventLog()
    for n in range(60):
        error = RuntimeError(f"boom {n}") if n % 2 else None
        log.record(SupervisorEvent(EventKind.FAILED, "root", f"c{n}", error, n + 0.12345))
    recent = log.recent()
    assert [e["child"] for e in recent] == [f"c{n}" for n in range(40, 60)]
    assert recent[-1] == {
        "kind": "failed",
        "supervisor": "root",
        "child": "c59",
        "error": "RuntimeError: boom 59",
        "at": 59.123,
    }
    assert recent[0]["error"] is None
    assert [e["child"] for e in log.recent(100)] == [f"c{n}" for n in range(10, 60)]
