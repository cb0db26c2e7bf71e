"""Process level: a hostile config file never stops the running daemon (issue 13, finding 1).

The real ``tradingd run`` under a notify socket, as systemd runs it; its config
file is replaced by one the TOML parser cannot decode (nesting deeper than the
parser's recursion, an integer beyond Python's int-string limit). SIGHUP and
``tradingd reload`` must both be rejected while the daemon stays up, READY and
answering ``/health`` on its old configuration. Before the fix, the SIGHUP
reload raised RecursionError/ValueError out of the reload task and the daemon
exited 1, and ``tradingd reload`` crashed with a traceback.
"""

from __future__ import annotations

import os
import re
import signal
import stat
from pathlib import Path

import pytest
import trio

from tests.helpers.demo import running_demo
from tests.helpers.process import (
    Harness,
    http_get,
    run_into_closed_pipe,
    wait_until,
)

pytestmark = pytest.mark.slow

HOSTILE_BODIES = (
    "deep = " + "[" * 5000 + "]" * 5000,
    "deep = " + "{a = " * 3000 + "1" + "}" * 3000,
    "huge = " + "9" * 5000,
)


async def test_hostile_config_reload_is_rejected_and_the_daemon_stays_ready(h: Harness) -> None:
    config_path = h.write_config()
    good = config_path.read_text()
    d = await h.start_ready()
    url = await d.admin_url()
    hostile_line = len(good.splitlines()) + 1

    for body in HOSTILE_BODIES:
        config_path.write_text(good + body + "\n")
        # SIGHUP (systemctl reload without ExecReload=): rejected, READY again.
        mark = len(d.notify.messages)
        d.send_signal(signal.SIGHUP)
        reloading = (await d.notify.wait_for("RELOADING", "1", after=mark, diag=d.diag))[0]
        ready = await d.wait_ready(after=reloading)
        status = d.notify.messages[ready].fields["STATUS"]
        assert "reload REJECTED (1 errors)" in status, d.diag()
        assert d.proc.returncode is None, d.diag()
        assert (await http_get(f"{url}/health")).status_code == 200
        await d.wait_log(rf"{config_path}:{hostile_line}: TOML")

    # `tradingd reload` (ExecReload=): finds the socket, prints the rejection, exit 1.
    mark = len(d.notify.messages)
    res = await h.cli("reload", "--config", os.fspath(config_path))
    assert res.returncode == 1, res
    assert "reload rejected; the daemon keeps running" in res.stderr, res
    assert f"{config_path}:{hostile_line}: TOML" in res.stderr, res
    assert "Traceback" not in res.stderr + res.stdout, res
    d.notify.drain()
    reloads = d.notify.where("RELOADING", "1", after=mark)
    assert len(reloads) == 1 and d.notify.where("READY", "1", after=reloads[0]), d.diag()
    assert (await http_get(f"{url}/health")).status_code == 200
    last = (await h.control({"cmd": "status"}))["status"]["last_reload"]
    assert last["ok"] is False and last["origin"] == "control socket", last

    # Output of a client into a closed pipe (`tradingd dead-letters list | head`):
    # quiet, exit 141, as `ls | head` (issue 13, finding 10).
    code, err = await trio.to_thread.run_sync(
        lambda: run_into_closed_pipe("dead-letters", "list", "--socket", str(h.control_socket))
    )
    assert (code, err) == (141, ""), err

    # Still pinging the watchdog, and a good file reloads again.
    await d.notify.wait_for("WATCHDOG", "1", after=len(d.notify.messages), diag=d.diag)
    config_path.write_text(good)
    res = await h.cli("reload", "--config", os.fspath(config_path))
    assert res.returncode == 0, res
    assert "Traceback" not in d.log(), d.diag()
    assert await d.stop() == 0, d.diag()


async def test_demo_state_is_private_under_a_permissive_umask(tmp_path: Path) -> None:
    """`tradingd demo --state-dir DIR` created DIR 0755 and the database 0644 (finding 7)."""
    state = tmp_path / "new" / "var"
    async with running_demo(tmp_path, state_dir=state, umask=0o000) as demo:
        await wait_until(
            lambda: (
                re.search(r"tradingd \S+ ready", demo.stderr())
                and (state / "tradingd.db-wal").exists()
                and (state / "tradingd.db-shm").exists()
            ),
            what="the demo to be ready, its database open",
            diag=lambda: demo.stderr()[-3000:],
        )
        modes = {
            str(path.relative_to(tmp_path)): stat.S_IMODE(path.lstat().st_mode)
            for path in [tmp_path / "new", *sorted((tmp_path / "new").rglob("*"))]
        }
        assert modes["new"] == 0o700 and modes["new/var"] == 0o700, modes
        for name in ("admin-token", "tradingd.db", "tradingd.db-wal", "tradingd.db-shm"):
            assert modes[f"new/var/{name}"] == 0o600, modes
        shared = {name: oct(mode) for name, mode in modes.items() if mode & 0o077}
        assert not shared, f"readable or writable by other users: {shared}"
        assert await demo.interrupt() == 0, demo.stderr()[-3000:]
