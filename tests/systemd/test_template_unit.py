"""Static checks of systemd/tradingd@.service, the template unit of several daemons per host.

An instance (``tradingd@eu-1.service``) must be as clean and as hardened as
the single unit: ``systemd-analyze verify`` prints nothing for it, ``security``
rates it at 1.5 or less, and the template differs from tradingd.service only
in the lines that name the instance — so a hardening change to one that is
not made to the other fails here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "tradingd.service"
TEMPLATE = REPO / "systemd" / "tradingd@.service"
MAX_EXPOSURE = 1.5
#: The only settings whose values may differ from tradingd.service (with %i in them).
INSTANCE_KEYS = {
    "Description",
    "ExecStart",
    "ExecReload",
    "StateDirectory",
    "RuntimeDirectory",
    "LoadCredential",
}

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def settings(text: str) -> list[tuple[str, str]]:
    """The unit's ``key=value`` lines in order (comments and blank lines dropped)."""
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            out.append((key.strip(), value.strip()))
    return out


def test_the_template_differs_from_the_unit_only_in_the_instance() -> None:
    base = [s for s in settings(UNIT.read_text()) if s[0] not in INSTANCE_KEYS]
    template = settings(TEMPLATE.read_text())
    extra = [("Environment", "TRADINGD_INSTANCE=%i")]
    same = [s for s in template if s[0] not in INSTANCE_KEYS and s not in extra]
    assert same == base
    assert set(extra) <= set(template)
    for key, value in template:
        if key in INSTANCE_KEYS and key != "LoadCredential":
            assert "%i" in value, (key, value)
    values = dict(template)
    assert values["ExecStart"] == "/opt/tradingd/bin/tradingd run --config /etc/tradingd/%i.toml"
    assert values["ExecReload"].endswith("--config /etc/tradingd/%i.toml")


def test_verify_is_clean_for_an_instance(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for stock in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        target = root / stock.relative_to("/")
        if stock.is_dir() and not target.exists():
            shutil.copytree(stock, target, symlinks=True)
    stub = root / "opt/tradingd/bin/tradingd"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit = root / "etc/systemd/system/tradingd@.service"
    unit.parent.mkdir(parents=True)
    unit.write_text(TEMPLATE.read_text())
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "tradingd@eu-1.service"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", (
        result.stdout + result.stderr
    )


def test_security_exposure_of_an_instance_is_at_most_1_5(tmp_path: Path) -> None:
    instance = tmp_path / "tradingd@eu-1.service"
    instance.write_text(TEMPLATE.read_text().replace("%i", "eu-1"))
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(instance)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, f"no exposure level in:\n{result.stdout}\n{result.stderr}"
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout
