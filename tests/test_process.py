"""Process-level tests: the real daemon as a subprocess, checked from outside.

Each test starts ``python -m daemon run --config PATH`` the way systemd does:
``NOTIFY_SOCKET`` points at an ``AF_UNIX``/``SOCK_DGRAM`` socket the test binds,
``WATCHDOG_USEC`` is set and ``WATCHDOG_PID`` is unset. The promises of issue 2
(§4 sd_notify, §5 lifecycle and signals, §6 admin API, §2 check-config) are then
checked end to end through what an operator or systemd can see: notification
datagrams, exit codes, the control socket, the CLI, the admin HTTP API and the
log on stderr. The harness is :mod:`tests.helpers.process` (the ``h`` and
``sockdir`` fixtures are in ``tests/conftest.py``).

Real processes need real time, so no autojump clock here; but no fixed sleep is
an assertion either: every wait is for a condition (a datagram, a log line, an
HTTP answer, an exit) under a deadline, and only the "nothing arrives" checks
watch a window of a few ping intervals.

Not covered here: that ``NOTIFY_SOCKET``/``WATCHDOG_USEC``/``WATCHDOG_PID`` are
removed from the daemon's own environment (``daemon.notify.unset_environment``,
called by ``daemon.cli.cmd_run``). The daemon starts no child process and
``/proc/PID/environ`` only shows the initial environment, so it is not
observable from outside; ``tests/test_notify.py`` covers the function.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import signal
import stat
import statistics
from pathlib import Path
from typing import Any

import attrs
import httpx2
import pytest
import trio

from daemon.app import HARD_STOP_GRACE_S
from tests.helpers.demo import running_demo
from tests.helpers.process import (
    HEARTBEAT_INTERVAL_S,
    HEARTBEAT_TOLERANCE,
    PING_INTERVAL_S,
    SECRET,
    SHUTDOWN_TIMEOUT_S,
    WAIT_S,
    WATCHDOG_USEC,
    Harness,
    Notification,
    assert_no_secret,
    await_until,
    gaps,
    http_get,
    monotonic_usec,
    open_harness,
    parse_prometheus,
    ping_times,
    run_scenario,
    wait_until,
)

pytestmark = pytest.mark.slow


# =========================================================================== 1. start


async def test_start_ready_status_watchdog_and_admin_api(h: Harness) -> None:
    config_path = h.write_config()
    d = await h.start()
    ready_i = await d.wait_ready()
    # Whatever is asked right after READY=1 is answered: the tree was up before it.
    answer = await h.control({"cmd": "status"})
    ready = d.notify.messages[ready_i]

    # READY=1 only once the whole tree has started, and says so in its STATUS.
    assert ready.fields["STATUS"].startswith("running, healthy; children 5/5 up"), ready
    assert d.notify.where("EXTEND_TIMEOUT_USEC")[0] < ready_i, "start timeout not extended"
    status = answer["status"]
    assert status["state"] == "running"
    children = {c["name"]: c["state"] for c in status["supervision"]["children"]}
    assert children == {
        "health": "running",
        "housekeeping": "running",
        "control": "running",
        "admin": "running",
        "data": "running",
    }
    log = d.log()
    ready_at = log.index("tradingd 0.1.0 ready")
    for child in children:
        assert log.index(f"started {child} (incarnation 1)") < ready_at, child

    # STATUS= one line, periodically.
    found = await d.notify.wait_for("STATUS", after=ready_i + 1, count=3, diag=d.diag)
    for i in found:
        text = d.notify.messages[i].fields["STATUS"]
        assert "\n" not in text
        assert text.startswith("running, healthy; children 5/5 up"), text

    # WATCHDOG=1 about every WATCHDOG_USEC/2, never as late as WATCHDOG_USEC.
    await d.notify.wait_for("WATCHDOG", "1", after=ready_i, count=6, diag=d.diag)
    intervals = gaps(ping_times(d.notify, after=ready_i))
    assert 0.7 * PING_INTERVAL_S <= statistics.median(intervals) <= 1.3 * PING_INTERVAL_S, intervals
    assert max(intervals) < WATCHDOG_USEC / 1e6, intervals

    # `tradingd status --json` finds the daemon from the config; the admin port is in it.
    cli = await h.cli("status", "--json", "--config", os.fspath(config_path))
    assert cli.returncode == 0, cli
    cli_status = json.loads(cli.stdout)
    url = await d.admin_url()
    assert cli_status["admin"]["bound"] == ["127.0.0.1", int(url.rsplit(":", 1)[1])]

    r = await http_get(f"{url}/health")
    assert r.status_code == 200, r.text
    assert r.json()["level"] == "healthy"
    assert r.json()["state"] == "running"

    r = await http_get(f"{url}/status")
    assert r.status_code == 200
    doc = r.json()
    assert doc["pid"] == d.pid
    assert doc["config"] == os.fspath(config_path)
    assert doc["version"] == "0.1.0"
    assert doc["health"]["level"] == "healthy"
    tree = {c["name"]: c for c in doc["supervision"]["children"]}
    assert {name: c["state"] for name, c in tree.items()} == children
    assert tree["housekeeping"]["heartbeat_age_s"] < HEARTBEAT_INTERVAL_S * HEARTBEAT_TOLERANCE
    assert doc["loop_lag"]["samples"] > 0
    assert doc["notify"]["watchdog_interval_s"] == PING_INTERVAL_S
    assert doc["notify"]["watchdog"]["pings_sent"] >= 6

    r = await http_get(f"{url}/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    metrics = parse_prometheus(r.text)
    assert metrics["tradingd_up"] == 1
    assert metrics["tradingd_health"] == 0
    assert metrics['tradingd_watchdog_pings_total{outcome="sent"}'] >= 6
    assert metrics['tradingd_child_state{child="root/housekeeping",state="running"}'] == 1
    assert "# TYPE tradingd_up gauge" in r.text

    # The admin token was resolved, and appears nowhere.
    assert_no_secret(d.log(), cli.stdout, cli.stderr, json.dumps(doc), r.text)


# =========================================================================== 2. stop


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_stops_cleanly(h: Harness, sig: signal.Signals) -> None:
    h.write_config()
    d = await h.start_ready()
    assert stat.S_ISSOCK(h.control_socket.stat().st_mode)
    mark = len(d.notify.messages)
    d.send_signal(sig)
    stopping = (await d.notify.wait_for("STOPPING", "1", after=mark, diag=d.diag))[0]
    assert d.notify.messages[stopping].fields["STATUS"] == f"stopping ({sig.name})"
    rc = await d.wait_exit(timeout_s=SHUTDOWN_TIMEOUT_S + WAIT_S)
    d.notify.drain()
    assert rc == 0, d.diag()
    # The drain extended systemd's stop timeout, and nothing reported a failure.
    assert d.notify.where("EXTEND_TIMEOUT_USEC", after=stopping)
    assert not d.notify.where("ERRNO"), d.notify.describe()
    assert not h.control_socket.exists(), "control socket left behind"
    log = d.log()
    assert f"stopping ({sig.name})" in log
    assert log.rstrip().endswith("tradingd.app: stopped cleanly"), log[-2000:]
    assert "Traceback" not in log


# =========================================================================== 3. reload


async def test_reload_by_sighup_and_cli_then_rejected_reload(h: Harness) -> None:
    config_path = h.write_config(level="info", max_connections=64)
    d = await h.start_ready()
    url = await d.admin_url()

    # SIGHUP with a live change (logging.level) and a restart-only one.
    h.write_config(level="debug", max_connections=32)
    mark = len(d.notify.messages)
    before = monotonic_usec()
    d.send_signal(signal.SIGHUP)
    reloading = (await d.notify.wait_for("RELOADING", "1", after=mark, diag=d.diag))[0]
    ready = await d.wait_ready(after=reloading)
    after = monotonic_usec()
    assert before <= int(d.notify.messages[reloading].fields["MONOTONIC_USEC"]) <= after
    assert all(i > reloading for i in d.notify.where("READY", after=mark))
    assert "REJECTED" not in d.notify.messages[ready].fields["STATUS"]
    last = (await h.control({"cmd": "status"}))["status"]["last_reload"]
    assert last == {
        "ok": True,
        "origin": "SIGHUP",
        "errors": [],
        "applied": ["logging.level"],
        "restart_required": ["admin.max_connections"],
    }
    await d.wait_log(r"reload: admin\.max_connections changed; takes effect after a restart")
    # The new level really is in force: requests are now logged at debug.
    assert (await http_get(f"{url}/health")).status_code == 200
    await d.wait_log(r"DEBUG\s+tradingd\.http: GET /health -> 200")

    # `tradingd reload` (ExecReload=) returns when the reload is done, naming the keys.
    h.write_config(level="debug", max_connections=32, shutdown_timeout_s=3.0)
    mark = len(d.notify.messages)
    res = await h.cli("reload", "--config", os.fspath(config_path))
    assert res.returncode == 0, res
    assert "reloaded: daemon.shutdown_timeout_s" in res.stdout, res
    assert "needs a restart to take effect: admin.max_connections" in res.stdout, res
    # Both datagrams were queued on our socket before the daemon answered the CLI.
    d.notify.drain()
    reloads = d.notify.where("RELOADING", "1", after=mark)
    assert len(reloads) == 1, d.notify.describe()
    assert d.notify.where("READY", "1", after=reloads[0]), d.notify.describe()
    assert_no_secret(res.stdout, res.stderr)

    # An invalid file is rejected as a whole; the daemon keeps running on the old one.
    config_path.write_text(
        config_path.read_text()
        .replace("[daemon]\n", "[daemon]\nshutdown_timout_s = 1.0\n")
        .replace("heartbeat_interval_s = 0.2", 'heartbeat_interval_s = "fast"')
    )
    lines = config_path.read_text().splitlines()
    typo_line = lines.index("shutdown_timout_s = 1.0") + 1
    type_line = lines.index('heartbeat_interval_s = "fast"') + 1
    mark = len(d.notify.messages)
    res = await h.cli("reload", "--config", os.fspath(config_path))
    assert res.returncode == 1, res
    assert "reload rejected" in res.stderr, res
    assert (
        f"{config_path}:{typo_line}: daemon.shutdown_timout_s: unknown key "
        "(did you mean 'shutdown_timeout_s'?)"
    ) in res.stderr, res
    assert f"{config_path}:{type_line}: health.heartbeat_interval_s: expected a number" in (
        res.stderr
    ), res
    d.notify.drain()
    reloads = d.notify.where("RELOADING", "1", after=mark)
    assert len(reloads) == 1, d.notify.describe()
    ready = d.notify.where("READY", "1", after=reloads[0])[0]
    assert "reload REJECTED (2 errors)" in d.notify.messages[ready].fields["STATUS"]
    # ... and the periodic STATUS= keeps saying so.
    later = await d.notify.wait_for("STATUS", after=ready + 1, diag=d.diag)
    assert "reload REJECTED" in d.notify.messages[later[0]].fields["STATUS"]
    await d.wait_log(r"reload \(control socket\) rejected, still running on the previous")

    # Still alive, healthy and pinging, and it stops cleanly on the old config.
    assert d.proc.returncode is None
    r = await http_get(f"{url}/health")
    assert r.status_code == 200, r.text
    await d.notify.wait_for("WATCHDOG", "1", after=ready, count=2, diag=d.diag)
    status = (await h.control({"cmd": "status"}))["status"]
    assert status["last_reload"]["ok"] is False
    assert len(status["last_reload"]["errors"]) == 2
    assert await d.stop() == 0, d.diag()


async def test_reloaded_status_interval_takes_effect(h: Harness) -> None:
    config_path = h.write_config(status_interval_s=0.5)
    d = await h.start_ready()
    h.write_config(status_interval_s=0.1)
    res = await h.cli("reload", "--config", os.fspath(config_path))
    assert res.returncode == 0, res
    assert "reloaded: health.status_interval_s" in res.stdout, res
    mark = len(d.notify.messages)
    found = await d.notify.wait_for("STATUS", after=mark, count=5, diag=d.diag)
    times = [d.notify.messages[i].at for i in found]
    assert statistics.median(gaps(times)) < 0.3, gaps(times)


# =========================================================================== 4. faults


async def test_hung_heartbeat_stops_watchdog_pings_and_fails_health(h: Harness) -> None:
    config_path = h.write_config(fault_injection=True)
    d = await h.start_ready()
    url = await d.admin_url()
    await d.notify.wait_for("WATCHDOG", "1", count=2, diag=d.diag)

    res = await h.cli("debug-fault", "hang-heartbeat", "--config", os.fspath(config_path))
    assert res.returncode == 0, res
    assert res.stdout.strip() == "fault armed: hang-heartbeat"

    async def unhealthy() -> httpx2.Response | None:
        r = await http_get(f"{url}/health")
        return r if r.status_code == 503 else None

    r = await await_until(unhealthy, what="GET /health -> 503", poll_s=0.1, diag=d.diag)
    body = r.json()
    assert body["level"] == "unhealthy"
    assert any(reason.startswith("root/housekeeping: ") for reason in body["reasons"]), body
    # Every ping the daemon sent before /health said unhealthy is in our queue by now.
    d.notify.drain()
    mark = len(d.notify.messages)
    # None for several ping intervals (a window: absence cannot be waited for).
    with trio.move_on_after(4 * PING_INTERVAL_S):
        await d.notify.wait_for("WATCHDOG", "1", after=mark, timeout_s=math.inf)
    assert not d.notify.where("WATCHDOG", after=mark), (
        f"WATCHDOG=1 sent while unhealthy\n{d.diag()}"
    )
    # STATUS= keeps flowing and says why; the log says pings are suppressed.
    assert any(
        "unhealthy" in d.notify.messages[i].fields["STATUS"]
        and "root/housekeeping" in d.notify.messages[i].fields["STATUS"]
        for i in d.notify.where("STATUS", after=mark)
    ), d.notify.describe()
    assert "suppressing systemd watchdog pings" in d.log()
    status = (await h.control({"cmd": "status"}))["status"]
    assert status["notify"]["watchdog"]["suppressing"] is True
    assert status["notify"]["watchdog"]["pings_suppressed"] >= 3
    assert d.proc.returncode is None, "without systemd nobody kills it"


async def test_debug_fault_is_refused_without_fault_injection(h: Harness) -> None:
    config_path = h.write_config(fault_injection=False)
    d = await h.start_ready()
    for kind in ("hang-heartbeat", "block-loop"):
        res = await h.cli("debug-fault", kind, "--seconds", "2", "--config", os.fspath(config_path))
        assert res.returncode == 1, res
        assert "fault injection is disabled" in res.stderr, res
    # Nothing was armed: pings keep coming for longer than a stale heartbeat takes.
    mark = len(d.notify.messages)
    found = await d.notify.wait_for("WATCHDOG", "1", after=mark, count=4, diag=d.diag)
    assert max(gaps([d.notify.messages[i].at for i in found])) < WATCHDOG_USEC / 1e6
    assert "FAULT" not in d.log()
    r = await http_get(f"{await d.admin_url()}/health")
    assert r.status_code == 200, r.text


async def test_blocked_loop_stops_pings_and_is_blamed_on_the_task(h: Harness) -> None:
    config_path = h.write_config(fault_injection=True)
    d = await h.start_ready()
    mark = len(d.notify.messages)
    await d.notify.wait_for("WATCHDOG", "1", after=mark, count=2, diag=d.diag)
    block_s = 2.0

    res = await h.cli(
        "debug-fault", "block-loop", "--seconds", str(block_s), "--config", os.fspath(config_path)
    )
    assert res.returncode == 0, res
    assert res.stdout.strip() == "fault armed: block-loop"
    # The reporter thread names the task while the loop is blocked.
    await d.wait_log(r"event loop blocked for [\d.]+ s in task daemon\.app\.Daemon\._delayed_block")
    await d.wait_log(r"FAULT: event loop unblocked")
    resumed = len(d.notify.messages)
    # Pings resume (after the stale-heartbeat restart the block caused, if any).
    await d.notify.wait_for("WATCHDOG", "1", after=resumed, count=2, diag=d.diag)
    intervals = gaps(ping_times(d.notify, after=mark))
    # No ping during the block: one gap spans it.
    assert max(intervals) >= block_s - 0.3, intervals
    # The slow-step instrument blames the same task, with the block's length.
    status = (await h.control({"cmd": "status"}))["status"]
    slowest = status["slow_steps"]["slowest"][0]
    assert slowest["task"] == "daemon.app.Daemon._delayed_block", status["slow_steps"]
    assert slowest["duration_ms"] >= (block_s - 0.1) * 1000


# =========================================================================== 6. hard stop


@attrs.frozen
class HardStopRun:
    """What one run of the hard-stop scenario showed (shared by the tests below)."""

    returncode: int
    second_signal_to_exit_s: float
    log: str
    messages: list[Notification]


async def _hard_stop_scenario(tmp_path: Path, sockdir: Path) -> HardStopRun:
    async with open_harness(tmp_path, sockdir) as h:
        config_path = h.write_config(fault_injection=True)
        d = await h.start_ready()
        res = await h.cli("debug-fault", "hang-heartbeat", "--config", os.fspath(config_path))
        assert res.returncode == 0, res
        # Housekeeping is now inside a call that can be neither finished nor cancelled.
        await wait_until(
            lambda: any(
                "root/housekeeping: heartbeat stale" in d.notify.messages[i].fields["STATUS"]
                for i in d.notify.where("STATUS")
            ),
            what="STATUS= saying housekeeping's heartbeat is stale",
            diag=d.diag,
        )
        mark = len(d.notify.messages)
        d.send_signal(signal.SIGTERM)
        first = (await d.notify.wait_for("STOPPING", "1", after=mark, diag=d.diag))[0]
        d.send_signal(signal.SIGTERM)
        second_at = trio.current_time()
        await d.notify.wait_for("STOPPING", "1", after=first + 1, diag=d.diag)
        rc = await d.wait_exit(timeout_s=HARD_STOP_GRACE_S + WAIT_S)
        elapsed = trio.current_time() - second_at
        d.notify.drain()
        return HardStopRun(rc, elapsed, d.log(), list(d.notify.messages[mark:]))


@pytest.fixture(scope="module")
def hard_stop_run(tmp_path_factory: pytest.TempPathFactory) -> HardStopRun:
    """Run the (slow: HARD_STOP_GRACE_S) scenario once for the tests that read it."""
    return run_scenario(_hard_stop_scenario, tmp_path_factory.mktemp("hardstop"))


def test_second_signal_stops_hard_with_130(hard_stop_run: HardStopRun) -> None:
    run = hard_stop_run
    assert run.returncode == 130, run.log[-3000:]
    # "A second signal stops hard at once": exit once the grace for stuck tasks is over.
    assert run.second_signal_to_exit_s <= HARD_STOP_GRACE_S + 3.0, run.second_signal_to_exit_s
    statuses = [m.fields.get("STATUS") for m in run.messages if m.has("STOPPING", "1")]
    assert statuses == ["stopping (SIGTERM)", "hard stop (second SIGTERM)"]
    assert not any(m.has("ERRNO") for m in run.messages)
    assert "hard stop (second SIGTERM): cancelling all work now" in run.log
    assert re.search(
        rf"tasks did not finish {HARD_STOP_GRACE_S:g}s after a hard stop: .*; exiting now",
        run.log,
    ), run.log[-3000:]
    assert "stopped cleanly" not in run.log


def test_hard_stop_log_names_the_stuck_task(hard_stop_run: HardStopRun) -> None:
    match = re.search(
        r"tasks did not finish .* after a hard stop: (.*); exiting", hard_stop_run.log
    )
    assert match, hard_stop_run.log[-3000:]
    assert match.group(1) == "root/housekeeping (stopping)"


# =========================================================================== 7. crash, duplicates


async def test_restart_after_sigkill_and_second_daemon_refused(h: Harness) -> None:
    h.write_config()
    first = await h.start_ready()
    first.send_signal(signal.SIGKILL)
    assert await first.wait_exit() == -signal.SIGKILL
    # A crash leaves the control socket file behind ...
    assert stat.S_ISSOCK(h.control_socket.lstat().st_mode)

    # ... and the next start replaces it.
    daemon = await h.start_ready()
    await daemon.wait_log(r"removing stale control socket")
    assert (await h.control({"cmd": "ping"}))["pid"] == daemon.pid

    # A second daemon on the same config is refused and leaves the first alone.
    intruder = await h.start()
    rc = await intruder.wait_exit(timeout_s=WAIT_S + 10)
    intruder.notify.drain()
    assert rc != 0, intruder.diag()
    assert "another tradingd is already running" in intruder.log(), intruder.diag()
    errnos = intruder.notify.where("ERRNO")
    assert len(errnos) == 1, intruder.notify.describe()
    assert int(intruder.notify.messages[errnos[0]].fields["ERRNO"]) > 0
    assert not intruder.notify.where("READY"), "the refused daemon claimed to be ready"

    assert daemon.proc.returncode is None
    assert stat.S_ISSOCK(h.control_socket.lstat().st_mode), "the intruder removed the socket"
    assert (await h.control({"cmd": "ping"}))["pid"] == daemon.pid
    mark = len(daemon.notify.messages)
    await daemon.notify.wait_for("WATCHDOG", "1", after=mark, count=2, diag=daemon.diag)
    r = await http_get(f"{await daemon.admin_url()}/health")
    assert r.status_code == 200, r.text


async def test_refused_second_daemon_reports_the_cause_to_systemd(h: Harness) -> None:
    h.write_config()
    await h.start_ready()
    intruder = await h.start()
    assert await intruder.wait_exit(timeout_s=WAIT_S + 10) != 0
    intruder.notify.drain()
    messages = intruder.notify.messages
    errnos = intruder.notify.where("ERRNO")
    assert errnos, intruder.notify.describe()
    final_status = messages[intruder.notify.where("STATUS")[-1]].fields["STATUS"]
    assert "already running" in final_status, final_status
    assert int(messages[errnos[0]].fields["ERRNO"]) == errno.EADDRINUSE


# =========================================================================== 8. configuration


async def test_check_config_valid_and_every_problem_listed(h: Harness) -> None:
    valid = h.write_config()
    res = await h.cli("check-config", os.fspath(valid))
    assert res.returncode == 0, res
    assert f"config {valid}: OK" in res.stdout
    assert f"control socket   {h.control_socket}" in res.stdout
    assert_no_secret(res.stdout, res.stderr)

    bad = h.tmp_path / "bad.toml"
    bad.write_text(
        f"""\
[daemon]
state_dir = {json.dumps(str(h.state_dir))}
shutdown_timout_s = 5

[health]
heartbeat_interval_s = "fast"
lag_degraded_ms = 500.0
lag_unhealthy_ms = 100.0

[admin]
listen = "0.0.0.0:8080"
token = "{SECRET}"
max_connections = 0
"""
    )
    res = await h.cli("check-config", os.fspath(bad))
    assert res.returncode == 2, res
    assert res.stdout == ""
    expected = [
        (3, "daemon.shutdown_timout_s", "unknown key (did you mean 'shutdown_timeout_s'?)"),
        (6, "health.heartbeat_interval_s", "expected a number"),
        (8, "health.lag_unhealthy_ms", "must be greater than health.lag_degraded_ms"),
        (11, "admin.listen", "is not a loopback address"),
        (12, "admin.token", "secrets cannot be written inline"),
        (13, "admin.max_connections", "must be >= 1"),
    ]
    assert f"invalid configuration ({len(expected)} problem(s)):" in res.stderr, res
    for line, key, message in expected:
        assert re.search(
            rf"^  {re.escape(str(bad))}:{line}: {re.escape(key)}: .*{re.escape(message)}",
            res.stderr,
            re.MULTILINE,
        ), f"missing {bad}:{line}: {key}: {message}\n{res}"
    assert_no_secret(res.stdout, res.stderr)

    # Problems only the file system shows: an unwritable state_dir, a missing secret.
    blocker = h.tmp_path / "a-file"
    blocker.write_text("")
    env_bad = h.tmp_path / "env-bad.toml"
    env_bad.write_text(
        valid.read_text()
        .replace(json.dumps(str(h.state_dir)), json.dumps(str(blocker / "state")))
        .replace(json.dumps(str(h.token_file)), json.dumps(str(h.tmp_path / "missing")))
    )
    res = await h.cli("check-config", os.fspath(env_bad))
    assert res.returncode == 2, res
    assert re.search(rf"{re.escape(str(env_bad))}:\d+: daemon.state_dir: ", res.stderr), res
    assert re.search(rf"{re.escape(str(env_bad))}:\d+: admin.token: ", res.stderr), res
    assert "invalid configuration (2 problem(s))" in res.stderr, res


async def test_run_with_invalid_config_exits_2_with_errno(h: Harness) -> None:
    path = h.write_config()
    path.write_text(path.read_text().replace("[admin]\n", "[admin]\nlisten_port = 1\n"))
    d = await h.start()
    assert await d.wait_exit() == 2, d.diag()
    d.notify.drain()
    assert d.notify.where("ERRNO", str(errno.EINVAL)), d.notify.describe()
    statuses = [d.notify.messages[i].fields["STATUS"] for i in d.notify.where("STATUS")]
    assert any(s.startswith("invalid configuration: ") for s in statuses), statuses
    assert not d.notify.where("READY")
    assert not d.notify.where("WATCHDOG"), "pinged although it never started"
    log = d.log()
    assert "invalid configuration (1 problem(s))" in log
    assert re.search(rf"{re.escape(str(path))}:\d+: admin\.listen_port: unknown key", log), log
    assert not h.control_socket.exists()
    assert_no_secret(log)


async def test_drain_that_cannot_finish_still_exits(tmp_path: Path, sockdir: Path) -> None:
    """One SIGTERM and a task that cannot even be cancelled: exit 1 after the grace anyway."""
    async with open_harness(tmp_path, sockdir) as h:
        config_path = h.write_config(fault_injection=True, shutdown_timeout_s=1.0)
        d = await h.start_ready()
        res = await h.cli("debug-fault", "hang-heartbeat", "--config", os.fspath(config_path))
        assert res.returncode == 0, res
        await wait_until(
            lambda: "heartbeat stale" in d.log(), what="stale heartbeat logged", diag=d.diag
        )
        mark = len(d.notify.messages)
        d.send_signal(signal.SIGTERM)
        sent_at = trio.current_time()
        rc = await d.wait_exit(timeout_s=1.0 + HARD_STOP_GRACE_S + WAIT_S)
        elapsed = trio.current_time() - sent_at
        d.notify.drain()
        assert rc == 1, d.log()[-3000:]
        assert elapsed >= 1.0 + HARD_STOP_GRACE_S - 0.5, elapsed
        assert re.search(
            r"tasks did not finish 6s after a stop request: root/housekeeping \(\w+\); exiting",
            d.log(),
        ), d.log()[-3000:]
        errnos = d.notify.where("ERRNO")
        assert [d.notify.messages[i].fields["ERRNO"] for i in errnos if i >= mark] == [
            str(errno.ETIMEDOUT)
        ]


# =========================================================================== demo


async def test_demo_runs_daemon_and_simulator_until_ctrl_c(tmp_path: Path) -> None:
    """`tradingd demo` (the README's first command): tree, venue and health visible."""
    async with running_demo(tmp_path) as demo:
        base = demo.base
        # The whole status document is behind the token (GET /status is a summary).
        auth = demo.auth

        async def full_status() -> dict[str, Any]:
            with trio.fail_after(WAIT_S):
                async with httpx2.AsyncClient(trust_env=False, timeout=10.0) as client:
                    answer = await client.get(f"{base}/status/full", headers=auth)
            assert answer.status_code == 200, answer.text
            return answer.json()

        async def venue_up() -> dict[str, Any] | None:
            status = await full_status()
            return status if status["venues"]["sim"]["state"] == "up" else None

        status = await await_until(venue_up, what="the simulator venue to be up")
        names = [c["name"] for c in status["supervision"]["children"]]
        assert names == [
            "health",
            "housekeeping",
            "control",
            "admin",
            "venues",
            "data",
            "strategies",
        ]
        assert status["config"] == "<demo>"
        assert (tmp_path / "var").is_dir(), "state under ./var/"
        assert (await http_get(f"{base}/health")).status_code == 200

        # The whole loop: the example strategy's LIMIT orders are accepted by the
        # venue and its cancels go through, all via the order pipeline.
        async def quoted_and_canceled() -> dict[str, Any] | None:
            orders = (await full_status())["orders"]
            venue = orders["executor"]
            return orders if venue["accepted_answers"] >= 2 and venue["cancels_sent"] >= 1 else None

        orders = await await_until(quoted_and_canceled, what="the demo strategy's orders")
        assert orders["reconcile"]["sending_enabled"] is True
        assert orders["orders"]["rejected"] == 0
        async with httpx2.AsyncClient(trust_env=False, timeout=10.0) as client:
            listed = await client.get(f"{base}/orders?state=CANCELED", headers=auth)
        summary = (await http_get(f"{base}/status")).json()
        assert "orders" not in summary and "venues" not in summary
        assert listed.status_code == 200
        assert listed.json()["orders"], "a canceled order of the demo strategy"
        assert await demo.interrupt() == 0, demo.stderr()[-3000:]
        assert "stopped cleanly" in demo.stderr()
