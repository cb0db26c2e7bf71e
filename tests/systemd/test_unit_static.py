"""Static checks of systemd/tradingd.service with systemd's own tools.

``systemd-analyze verify`` resolves the unit's dependencies and checks that
ExecStart= exists, so it runs against a throw-away root holding the real unit
file, systemd's stock units and a stub ``/opt/tradingd/bin/tradingd``. Its
output must be empty: systemd reports unknown keys and bad values as
warnings while still exiting 0.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "tradingd.service"
EXAMPLE_CONFIG = REPO / "config" / "tradingd.toml"
MAX_EXPOSURE = 1.5
STOP_MARGIN_S = 5.0

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections → key → values in order (unit files repeat keys, so no configparser)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"key outside a section: {line!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def timespan_s(value: str) -> float:
    """Parse a systemd time span exactly as systemd does."""
    out = subprocess.run(
        ["systemd-analyze", "timespan", value], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"μs:\s*(\d+)", out)
    assert match, out
    return int(match.group(1)) / 1e6


def verify_root(tmp_path: Path, unit_text: str) -> Path:
    """A minimal root in which ``systemd-analyze verify --root`` can resolve the unit."""
    root = tmp_path / "root"
    for stock in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        target = root / stock.relative_to("/")
        if stock.is_dir() and not target.exists():
            shutil.copytree(stock, target, symlinks=True)
    stub = root / "opt/tradingd/bin/tradingd"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit = root / "etc/systemd/system/tradingd.service"
    unit.parent.mkdir(parents=True)
    unit.write_text(unit_text)
    return root


def run_verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "tradingd.service"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def test_verify_is_clean(tmp_path: Path) -> None:
    result = run_verify(verify_root(tmp_path, UNIT.read_text()))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", (
        result.stdout + result.stderr
    )


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The harness is not blind: a typo in the same unit is reported."""
    broken = UNIT.read_text().replace("Restart=on-failure", "Restart=onfailure\nRestartSecs=2")
    result = run_verify(verify_root(tmp_path, broken))
    output = result.stdout + result.stderr
    assert "onfailure" in output
    assert "RestartSecs" in output


def test_security_exposure_is_at_most_1_5() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, f"no exposure level in:\n{result.stdout}\n{result.stderr}"
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, result.stdout


def single(unit: dict[str, dict[str, list[str]]], key: str) -> str:
    values = unit["Service"].get(key, [])
    assert len(values) == 1, f"{key}= should be set exactly once, found {values}"
    return values[0]


def test_service_contract(unit: dict[str, dict[str, list[str]]]) -> None:
    assert single(unit, "Type") == "notify"
    assert single(unit, "NotifyAccess") == "main"
    assert single(unit, "Restart") == "on-failure"
    assert single(unit, "DynamicUser") == "yes"
    assert single(unit, "StateDirectory") == "tradingd"
    assert single(unit, "RuntimeDirectory") == "tradingd"
    assert single(unit, "LoadCredential") == "admin-token:/etc/tradingd/admin-token"
    assert 10.0 <= timespan_s(single(unit, "WatchdogSec")) <= 30.0
    assert timespan_s(single(unit, "RestartSec")) > 0
    families = set(single(unit, "RestrictAddressFamilies").split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}


def test_exec_lines_run_python_directly(unit: dict[str, dict[str, list[str]]]) -> None:
    """No shell wrapper: systemd only accepts notifications from the main PID."""
    start = single(unit, "ExecStart").split()
    reload = single(unit, "ExecReload").split()
    assert start[:2] == ["/opt/tradingd/bin/tradingd", "run"]
    assert reload[:2] == ["/opt/tradingd/bin/tradingd", "reload"]
    assert start[start.index("--config") + 1] == reload[reload.index("--config") + 1]


def _example_shutdown_timeout_s() -> float:
    if not EXAMPLE_CONFIG.is_file():
        pytest.skip(f"{EXAMPLE_CONFIG} not written yet")
    data = tomllib.loads(EXAMPLE_CONFIG.read_text())
    return float(data["daemon"]["shutdown_timeout_s"])


def test_stop_timeout_leaves_room_for_the_drain(unit: dict[str, dict[str, list[str]]]) -> None:
    """systemd must not SIGKILL a daemon that is still inside its own drain deadline."""
    stop_s = timespan_s(single(unit, "TimeoutStopSec"))
    assert stop_s >= _example_shutdown_timeout_s() + STOP_MARGIN_S
