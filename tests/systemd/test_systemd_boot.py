"""systemd/tradingd.service under a real systemd, booted as PID 1 in namespaces.

Three layers, each failing with the journal attached:

1. the harness itself: a tiny Type=notify unit (``/usr/bin/python3``, READY=1
   over the notify socket after a delay) shows that ``systemctl start``
   returns only after READY=1 and that ``stop`` ends cleanly;
2. the hardening: the real unit, with only its Exec lines swapped for a probe
   run by the service venv's Python, shows that everything a deployment needs
   still works under the sandbox (trio, TCP on loopback, TLS context, SQLite
   WAL in the state directory, the credential, the control socket directory,
   threads, ctypes under MemoryDenyWriteExecute=) and that the sandbox bites;
3. the daemon: the real unit, unchanged, runs ``tradingd``: start after
   READY=1 with /health answering 200, reload, a rejected reload while the
   service stays up, a blocked event loop and separately a hung critical task
   both get the process killed by the watchdog (Result=watchdog) and
   restarted, and a clean stop.

Skipped with the reason where the machine cannot boot systemd (not root, no
systemd); with ``TRADINGD_REQUIRE_SERVICES=1`` only those two reasons skip.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import nsboot

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
UNIT_PATH = REPO / "systemd" / "tradingd.service"
GUEST_VENV = "/opt/tradingd"  # where the tradingd_venv fixture's venv is bound
CONFIG_PATH = "/etc/tradingd/tradingd.toml"
ADMIN_TOKEN = "nsboot-admin-token-0123456789"
ADMIN_URL = "http://127.0.0.1:8787"
UNIT = "tradingd.service"
# What the service's own Exec lines see; the test's CLI calls get the same.
SERVICE_ENV = {
    "RUNTIME_DIRECTORY": "/run/tradingd",
    "CREDENTIALS_DIRECTORY": "/run/credentials/tradingd.service",
}
GOOD_CONFIG = f"""\
# Written by tests/systemd/test_systemd_boot.py.
[daemon]
state_dir = "/var/lib/tradingd"
shutdown_timeout_s = 20.0

[admin]
listen = "{ADMIN_URL.removeprefix("http://")}"
token = {{ credential = "admin-token" }}

[testing]
fault_injection = true
"""
BAD_CONFIG = GOOD_CONFIG + '\n[daemon_typo]\nshutdown_timeout_s = "soon"\n'

# ------------------------------------------------------------------ harness self-test

NOTIFY_DEMO = """\
import os, signal, socket, time

def notify(message):
    address = os.environ["NOTIFY_SOCKET"]
    if address.startswith("@"):
        address = "\\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
time.sleep(1.0)
with open("/run/notify-demo.ready", "w") as f:
    f.write("ready")
notify("READY=1\\nSTATUS=demo ready")
signal.sigwait({signal.SIGTERM})
notify("STOPPING=1")
"""

NOTIFY_DEMO_UNIT = """\
[Unit]
Description=nsboot self-test: a minimal Type=notify service

[Service]
Type=notify
NotifyAccess=main
ExecStart=/usr/bin/python3 /usr/local/lib/nsboot/notify_demo.py

[Install]
WantedBy=multi-user.target
"""

FAILING_UNIT = """\
[Unit]
Description=nsboot self-test: a service that fails

[Service]
Type=notify
ExecStart=/usr/bin/python3 -c "raise SystemExit(3)"
"""


@pytest.fixture
def bare_machine(nsboot_available: None) -> Iterator[nsboot.Machine]:
    files = {
        "/usr/local/lib/nsboot/notify_demo.py": NOTIFY_DEMO,
        "/etc/systemd/system/notify-demo.service": NOTIFY_DEMO_UNIT,
        "/etc/systemd/system/failing-demo.service": FAILING_UNIT,
    }
    with nsboot.boot(files) as machine:
        yield machine


def test_harness_boots_systemd_and_runs_a_notify_unit(bare_machine: nsboot.Machine) -> None:
    machine = bare_machine
    assert machine.run("cat", "/proc/1/comm").stdout.strip() == "systemd"
    assert machine.run("hostname").stdout.strip() == nsboot.HOSTNAME

    # Enabled, so that multi-user.target keeps the unit loaded after it stops
    # (systemd unloads unreferenced inactive units, and their properties with them).
    machine.systemctl("enable", "notify-demo.service")
    started_at = time.monotonic()
    machine.systemctl("start", "notify-demo.service")
    elapsed_s = time.monotonic() - started_at
    # The unit sleeps 1 s before READY=1: a start that returned earlier did not wait.
    assert elapsed_s >= 1.0, elapsed_s
    assert machine.run("cat", "/run/notify-demo.ready").stdout == "ready"
    state = machine.show("notify-demo.service", "ActiveState", "SubState", "StatusText")
    assert state == {"ActiveState": "active", "SubState": "running", "StatusText": "demo ready"}

    machine.systemctl("stop", "notify-demo.service")
    state = machine.show(
        "notify-demo.service", "ActiveState", "Result", "ExecMainCode", "ExecMainStatus"
    )
    # ExecMainCode=1 is CLD_EXITED: the process exited by itself, with status 0.
    assert state == {
        "ActiveState": "inactive",
        "Result": "success",
        "ExecMainCode": "1",
        "ExecMainStatus": "0",
    }

    # The harness sees failures too.
    failed = machine.systemctl("start", "failing-demo.service", check=False)
    assert failed.returncode != 0
    assert machine.show("failing-demo.service", "Result")["Result"] == "exit-code"


def test_harness_leaves_the_host_alone(nsboot_available: None) -> None:
    canary = Path("/etc/nsboot-canary")
    assert not canary.exists()
    with nsboot.boot() as machine:
        machine.run("sh", "-c", f"echo inside > {canary}")
        assert machine.run("cat", str(canary)).stdout == "inside\n"
        assert not canary.exists(), "a write inside reached the host's root"
        workdir = machine.workdir
        pid1 = machine.pid1
    assert_cleaned_up(workdir, pid1)


def assert_cleaned_up(workdir: Path, pid1: int) -> None:
    assert not workdir.exists()
    assert not Path(f"/proc/{pid1}").exists()
    leftovers = [
        p for parent in (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"),
                         Path("/sys/fs/cgroup"))
        if parent.is_dir()
        for p in parent.glob("tradingd-nsboot-*")
    ]  # fmt: skip
    assert leftovers == []


def test_harness_cleans_up_after_failures(nsboot_available: None) -> None:
    # An exception in the body: the booted system is powered off or killed.
    with pytest.raises(RuntimeError, match="body failed"), nsboot.boot() as machine:
        workdir, pid1 = machine.workdir, machine.pid1
        raise RuntimeError("body failed")
    assert_cleaned_up(workdir, pid1)
    # A failing stage 2 (a bind source that does not exist) is reported, not hung on.
    missing = Path("/nonexistent-nsboot-source")
    before = set(Path(tempfile.gettempdir()).glob("tradingd-nsboot-*"))
    with (
        pytest.raises(nsboot.NsBootError, match="nonexistent-nsboot-source"),
        nsboot.boot(binds={missing: "/opt/missing"}),
    ):
        pass  # pragma: no cover - the boot fails
    assert set(Path(tempfile.gettempdir()).glob("tradingd-nsboot-*")) <= before


# ------------------------------------------------------------------ hardening probe

PROBE = """\
import ctypes, functools, json, mmap, os, socket, sqlite3, ssl, sys, traceback
import trio

EXPECTED_TOKEN = sys.argv[1]
results = {}

def check(name, fn):
    try:
        value = fn()
        results[name] = "ok" if value is None else value
    except BaseException as exc:
        results[name] = "FAILED: " + "".join(traceback.format_exception(exc))

def must_fail(fn):
    def run():
        try:
            fn()
        except OSError as exc:
            return f"refused ({exc.errno})"
        raise AssertionError("was allowed")
    return run

def ctypes_callback():
    assert ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)(41) == 42

def sqlite_wal():
    path = os.path.join(os.environ["STATE_DIRECTORY"], "probe.sqlite")
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    db.execute("CREATE TABLE IF NOT EXISTS t (x)")
    with db:
        db.execute("INSERT INTO t VALUES (1)")
    db.close()

def credential():
    path = os.path.join(os.environ["CREDENTIALS_DIRECTORY"], "admin-token")
    assert open(path).read().strip() == EXPECTED_TOKEN

def unix_socket():
    path = os.path.join(os.environ["RUNTIME_DIRECTORY"], "probe.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)
        sock.listen()
    os.unlink(path)

def inet6():
    socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()

async def tcp_echo():
    async def echo(stream):
        async with stream:
            await stream.send_all(await stream.receive_some(100))
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, echo, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(5):
            client = await trio.open_tcp_stream("127.0.0.1", port)
            async with client:
                await client.send_all(b"ping")
                assert await client.receive_some(100) == b"ping"
        assert await trio.to_thread.run_sync(lambda: 7) == 7
        nursery.cancel_scope.cancel()

def write_etc():
    open("/etc/tradingd-probe", "w").close()

def read_root():
    os.listdir("/root")
    raise OSError(0, "listed")

check("uid is not root", lambda: os.getuid() != 0 or 1 / 0)
check("ctypes callback under MemoryDenyWriteExecute", ctypes_callback)
check("tls context with system CAs", lambda: ssl.create_default_context() and None)
check("sqlite WAL in StateDirectory", sqlite_wal)
check("credential", credential)
check("unix socket in RuntimeDirectory", unix_socket)
check("AF_INET6 socket", inet6)
check("getaddrinfo localhost", lambda: socket.getaddrinfo("localhost", 80) and None)
check("cpu count", lambda: os.cpu_count() or 1 / 0)
check("trio tcp echo and threads", lambda: trio.run(tcp_echo))
check("netlink refused", must_fail(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)))
check("/etc read-only", must_fail(write_etc))
check("W+X mapping refused", must_fail(lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ
                                                     | mmap.PROT_WRITE | mmap.PROT_EXEC)))
check("/root hidden", must_fail(read_root))

print(json.dumps(results, indent=1), flush=True)
bad = {k: v for k, v in results.items() if isinstance(v, str) and v.startswith("FAILED")}
if bad:
    sys.exit("probe failed: " + json.dumps(bad))
import signal
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
address = os.environ["NOTIFY_SOCKET"]
if address.startswith("@"):
    address = "\\0" + address[1:]
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
    sock.connect(address)
    sock.sendall(b"READY=1\\nSTATUS=probe passed")
signal.sigwait({signal.SIGTERM})
"""


def probe_unit() -> str:
    """The real unit, with its Exec lines replaced by the probe."""
    lines = []
    for line in UNIT_PATH.read_text().splitlines():
        if line.startswith("ExecStart="):
            lines.append(
                f"ExecStart={GUEST_VENV}/bin/python /usr/local/lib/tradingd-probe/probe.py "
                f"{ADMIN_TOKEN}"
            )
        elif not line.startswith("ExecReload="):
            lines.append(line)
    return "\n".join(lines) + "\n"


def machine_files() -> dict[str, nsboot.FileSpec]:
    return {
        "/etc/systemd/system/tradingd.service": UNIT_PATH,
        "/etc/systemd/system/tradingd-probe.service": probe_unit(),
        "/usr/local/lib/tradingd-probe/probe.py": PROBE,
        "/etc/tradingd/tradingd.toml": GOOD_CONFIG,
        "/etc/tradingd/admin-token": (ADMIN_TOKEN + "\n", 0o600),
    }


@pytest.fixture(scope="module")
def machine(tradingd_venv: Path) -> Iterator[nsboot.Machine]:
    with nsboot.boot(machine_files(), binds={tradingd_venv: GUEST_VENV}) as booted:
        # Installed as the README says (enabled; started by the tests). Being
        # wanted by multi-user.target also keeps the stopped unit's properties.
        booted.systemctl("enable", UNIT)
        yield booted


def test_hardening_keeps_the_runtime_working(machine: nsboot.Machine) -> None:
    result = machine.systemctl("start", "tradingd-probe.service", check=False)
    log = machine.journal("tradingd-probe.service")
    assert result.returncode == 0, f"{result.stderr}\n{log}"
    assert machine.show("tradingd-probe.service", "StatusText")["StatusText"] == "probe passed"
    machine.systemctl("stop", "tradingd-probe.service")


# ------------------------------------------------------------------ the daemon


def http_status(machine: nsboot.Machine, path: str) -> int | None:
    """GET ``path`` from the admin API inside; the status code, or None if unreachable."""
    script = (
        "import sys, urllib.request, urllib.error\n"
        "try:\n"
        f"    print(urllib.request.urlopen({ADMIN_URL + path!r}, timeout=3).status)\n"
        "except urllib.error.HTTPError as exc:\n"
        "    print(exc.code)\n"
        "except OSError:\n"
        "    print('unreachable')\n"
    )
    out = machine.run("/usr/bin/python3", "-c", script, timeout_s=10).stdout.strip()
    return int(out) if out.isdigit() else None


def tradingd(
    machine: nsboot.Machine, *args: str, timeout_s: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run the installed CLI inside, with the environment the unit's Exec lines get."""
    return machine.run(
        f"{GUEST_VENV}/bin/tradingd", *args, "--config", CONFIG_PATH,
        check=False, timeout_s=timeout_s, env=SERVICE_ENV,
    )  # fmt: skip


def service(machine: nsboot.Machine) -> dict[str, str]:
    return machine.show(
        UNIT, "ActiveState", "SubState", "Result", "MainPID", "NRestarts", "StatusText"
    )


def ensure_running(machine: nsboot.Machine) -> dict[str, str]:
    """Start the service if needed and wait until /health answers 200."""
    result = machine.systemctl("start", UNIT, check=False, timeout_s=120)
    assert result.returncode == 0, f"{result.stderr}\n{machine.diagnostics(UNIT)}"
    state = service(machine)
    assert state["ActiveState"] == "active", f"{state}\n{machine.diagnostics(UNIT)}"
    try:
        nsboot.wait_until(
            lambda: http_status(machine, "/health") == 200, 30, interval_s=0.2, what="/health 200"
        )
    except TimeoutError:
        pytest.fail(f"/health never answered 200\n{machine.diagnostics(UNIT)}")
    return state


def test_start_returns_after_ready(machine: nsboot.Machine) -> None:
    machine.systemctl("stop", UNIT, check=False)
    result = machine.systemctl("start", UNIT, check=False, timeout_s=120)
    # Type=notify: `systemctl start` blocks until READY=1, so the service is
    # active (not "activating") the moment it returns.
    state = service(machine)
    assert result.returncode == 0, f"{result.stderr}\n{machine.diagnostics(UNIT)}"
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    assert state["StatusText"], "the daemon sends STATUS="
    ensure_running(machine)
    status = machine.run("/usr/bin/python3", "-c", (
        "import urllib.request; "
        f"print(urllib.request.urlopen('{ADMIN_URL}/status', timeout=3).read().decode())"
    )).stdout  # fmt: skip
    assert isinstance(json.loads(status), dict)


def daemon_log(machine: nsboot.Machine, pid: str) -> list[str]:
    """Journal lines written by the daemon's main process ``pid`` (not by ExecReload=)."""
    return [line for line in machine.journal(UNIT).splitlines() if f"tradingd[{pid}]:" in line]


def test_reload_applies_a_valid_config(machine: nsboot.Machine) -> None:
    before = ensure_running(machine)
    machine.write_file(CONFIG_PATH, GOOD_CONFIG + '\n[logging]\nlevel = "debug"\n')
    try:
        result = machine.systemctl("reload", UNIT, check=False)
        assert result.returncode == 0, f"{result.stderr}\n{machine.diagnostics(UNIT)}"
        after = service(machine)
        assert after["ActiveState"] == "active"
        assert after["MainPID"] == before["MainPID"], "a reload must not restart the process"
        # The running daemon itself applied it, and names what changed.
        assert any("logging.level" in line for line in daemon_log(machine, after["MainPID"])), (
            machine.journal(UNIT)
        )
        assert http_status(machine, "/health") == 200
    finally:
        machine.write_file(CONFIG_PATH, GOOD_CONFIG)
    assert machine.systemctl("reload", UNIT, check=False).returncode == 0


def test_reload_rejects_a_bad_config_and_keeps_running(machine: nsboot.Machine) -> None:
    before = ensure_running(machine)
    rejected_before = machine.journal(UNIT).count("Control process exited, code=exited, status=1")
    machine.write_file(CONFIG_PATH, BAD_CONFIG)
    try:
        result = machine.systemctl("reload", UNIT, check=False)
        assert result.returncode != 0, "a bad configuration must fail the reload"
        after = service(machine)
        assert after["ActiveState"] == "active", f"{after}\n{machine.diagnostics(UNIT)}"
        assert after["MainPID"] == before["MainPID"]
        journal = machine.journal(UNIT)
        # Rejected by the running daemon (ExecReload= exit status 1), which
        # logs every problem and says so in STATUS=; not merely refused by the
        # reload command before it reached the daemon.
        assert journal.count("Control process exited, code=exited, status=1") == (
            rejected_before + 1
        ), f"ExecReload= did not exit 1 (rejected by the daemon):\n{journal}"
        assert any("daemon_typo" in line for line in daemon_log(machine, before["MainPID"])), (
            journal
        )
        assert "reload" in after["StatusText"].lower(), after
        assert http_status(machine, "/health") == 200
    finally:
        machine.write_file(CONFIG_PATH, GOOD_CONFIG)
    result = machine.systemctl("reload", UNIT, check=False)
    assert result.returncode == 0, f"{result.stderr}\n{machine.diagnostics(UNIT)}"


def watchdog_failures(machine: nsboot.Machine) -> int:
    return machine.journal(UNIT).count("Failed with result 'watchdog'")


def assert_killed_by_watchdog_and_restarted(
    machine: nsboot.Machine, before: dict[str, str], failures_before: int
) -> None:
    """Poll through the kill: Result=watchdog while waiting to restart, then a new process."""
    results_seen: set[str] = set()

    def restarted() -> dict[str, str] | None:
        state = service(machine)
        results_seen.add(state["Result"])
        if (
            int(state["NRestarts"]) > int(before["NRestarts"])
            and state["MainPID"] not in ("0", before["MainPID"])
            and state["ActiveState"] == "active"
        ):
            return state
        return None

    try:
        # Up to WatchdogSec (10 s) after the last ping, RestartSec=2 s, and a start.
        nsboot.wait_until(restarted, 60, interval_s=0.1, what="watchdog kill and restart")
    except TimeoutError:
        pytest.fail(f"no watchdog restart; Result seen: {results_seen}\n"
                    f"{machine.diagnostics(UNIT)}")  # fmt: skip
    assert "watchdog" in results_seen, results_seen
    assert watchdog_failures(machine) == failures_before + 1, machine.journal(UNIT)
    ensure_running(machine)


def test_blocked_event_loop_is_killed_by_the_watchdog(machine: nsboot.Machine) -> None:
    before = ensure_running(machine)
    failures = watchdog_failures(machine)
    try:
        fault = tradingd(machine, "debug-fault", "block-loop", "--seconds", "60", timeout_s=5)
    except subprocess.TimeoutExpired:
        pass  # the daemon blocked before answering; the kill below will close the socket
    else:
        assert fault.returncode == 0, f"{fault.stdout}\n{fault.stderr}"
    assert_killed_by_watchdog_and_restarted(machine, before, failures)


def test_hung_critical_task_is_killed_by_the_watchdog(machine: nsboot.Machine) -> None:
    before = ensure_running(machine)
    failures = watchdog_failures(machine)
    fault = tradingd(machine, "debug-fault", "hang-heartbeat")
    assert fault.returncode == 0, f"{fault.stdout}\n{fault.stderr}"
    # The loop itself stays responsive: the admin API reports the unhealthy
    # state while the watchdog pings have stopped.
    try:
        nsboot.wait_until(
            lambda: http_status(machine, "/health") == 503, 30, interval_s=0.2,
            what="/health 503",
        )  # fmt: skip
    except TimeoutError:
        pytest.fail(f"/health never turned 503\n{machine.diagnostics(UNIT)}")
    assert service(machine)["MainPID"] == before["MainPID"]
    assert_killed_by_watchdog_and_restarted(machine, before, failures)


def test_stop_is_clean(machine: nsboot.Machine) -> None:
    ensure_running(machine)
    result = machine.systemctl("stop", UNIT, check=False, timeout_s=60)
    assert result.returncode == 0, result.stderr
    state = machine.show(UNIT, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    # ExecMainCode=1 is CLD_EXITED: the daemon exited by itself, with status 0
    # (Result=success alone would also accept a death by SIGTERM).
    assert state == {
        "ActiveState": "inactive",
        "Result": "success",
        "ExecMainCode": "1",
        "ExecMainStatus": "0",
    }, f"{state}\n{machine.diagnostics(UNIT)}"
