"""Fixtures for the systemd tests: skip policy and the service's venv.

The venv the unit runs lives at ``/opt/tradingd`` inside the booted system.
It cannot be the project's development venv: that one's interpreter usually
lives under ``/root`` (pyenv), which ``ProtectHome=`` hides from the service.
So it is built from the system interpreter ``/usr/bin/python3``, exactly as a
deployment would be, and cached under ``/var/tmp`` in two layers:

* ``deps-<hash of pyproject.toml>``: the venv with the runtime and build
  dependencies (slow to build: it talks to the package index);
* ``full-<hash of pyproject.toml and daemon/>``: a copy of that plus the
  project itself, installed with ``--no-deps`` (a few seconds).

Both are built with the cache directory bind-mounted at ``/opt/tradingd`` in
a private mount namespace, so the console script's shebang is the real
``/opt/tradingd/bin/python`` and nothing on the host's ``/opt`` changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import nsboot

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")
VENV_CACHE = Path("/var/tmp/tradingd-systemd-venv")
GUEST_VENV = "/opt/tradingd"
KEEP_FULL_VENVS = 3
# Files of the repository that the wheel build needs; the rest (tests, .git,
# the dev venv) is left out so the cache key only changes with the package.
PACKAGE_FILES = ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md")
PACKAGE_DIRS = ("daemon",)

# Runs in a private mount namespace: /opt becomes an overlay (so the host's
# /opt, where pip may find local wheels, stays visible and untouched) with the
# build directory bound at /opt/tradingd.
BUILD_SCRIPT = r"""
set -eu
umask 022  # the service's unprivileged user must be able to read the venv
scratch=$1 build=$2; shift 2
mount -t tmpfs tmpfs "$scratch"
mkdir "$scratch/upper" "$scratch/work"
mount -t overlay -o "lowerdir=/opt,upperdir=$scratch/upper,workdir=$scratch/work" overlay /opt
mkdir -p /opt/tradingd
mount --bind "$build" /opt/tradingd
"$@"
"""


def _require_services() -> bool:
    """``TRADINGD_REQUIRE_SERVICES=1`` (set by ``.ci/run``): a missing capability fails."""
    return os.environ.get("TRADINGD_REQUIRE_SERVICES") == "1"


def _skip_or_fail_if_unavailable() -> None:
    """Skip when this machine truly cannot boot systemd; fail instead where CI requires it.

    Not being root, or not having systemd installed, always skips: no test
    can do anything about those. Anything else (missing tools, an unusable
    cgroup layout) fails under ``TRADINGD_REQUIRE_SERVICES=1``.
    """
    reason = nsboot.unavailable_reason()
    if reason is None:
        return
    hard = os.geteuid() != 0 or not nsboot.SYSTEMD_BINARY.is_file()
    if _require_services() and not hard:
        pytest.fail(f"TRADINGD_REQUIRE_SERVICES=1 but systemd cannot be booted: {reason}")
    pytest.skip(reason)


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    h.update(sys.implementation.name.encode())
    h.update(SYSTEM_PYTHON.resolve().name.encode())
    for base in paths:
        files = sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else [base]
        for file in files:
            if "__pycache__" in file.parts or file.suffix in (".pyc", ".pyo"):
                continue
            h.update(str(file.relative_to(REPO)).encode() + b"\0")
            h.update(file.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _run_at_opt(build: Path, *argv: str) -> None:
    """Run ``argv`` with ``build`` mounted at /opt/tradingd (private mount namespace)."""
    with tempfile.TemporaryDirectory(prefix="tradingd-venv-scratch-") as scratch:
        cmd = [
            "unshare", "--mount", "--propagation", "private",
            "/bin/sh", "-c", BUILD_SCRIPT, "build", scratch, str(build), *argv,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"building the service venv failed ({' '.join(argv)}):\n{proc.stdout}\n{proc.stderr}"
        )


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    VENV_CACHE.mkdir(parents=True, exist_ok=True)
    with open(VENV_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build_deps_venv() -> Path:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    requirements = [
        *pyproject.get("build-system", {}).get("requires", []),
        *pyproject["project"].get("dependencies", []),
    ]
    target = VENV_CACHE / f"deps-{_digest(REPO / 'pyproject.toml')}"
    if (target / ".complete").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    build = Path(tempfile.mkdtemp(prefix="deps-building-", dir=VENV_CACHE))
    build.chmod(0o755)  # the service's unprivileged user must be able to read it
    try:
        _run_at_opt(build, str(SYSTEM_PYTHON), "-m", "venv", GUEST_VENV)
        _run_at_opt(
            build,
            f"{GUEST_VENV}/bin/python", "-m", "pip", "install", "--quiet",
            "--disable-pip-version-check", *requirements,
        )  # fmt: skip
        (build / ".complete").touch()
        build.rename(target)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return target


def _build_full_venv(deps: Path) -> Path:
    key = _digest(
        REPO / "pyproject.toml",
        *(REPO / name for name in (*PACKAGE_FILES, *PACKAGE_DIRS) if (REPO / name).exists()),
    )
    target = VENV_CACHE / f"full-{deps.name.removeprefix('deps-')}-{key}"
    if (target / ".complete").exists():
        os.utime(target)
        return target
    shutil.rmtree(target, ignore_errors=True)
    build = Path(tempfile.mkdtemp(prefix="full-building-", dir=VENV_CACHE))
    build.chmod(0o755)  # the service's unprivileged user must be able to read it
    source = Path(tempfile.mkdtemp(prefix="tradingd-src-"))
    try:
        shutil.copytree(deps, build, symlinks=True, dirs_exist_ok=True)
        (build / ".complete").unlink()
        for name in PACKAGE_FILES:
            if (REPO / name).exists():
                shutil.copy2(REPO / name, source / name)
        for name in PACKAGE_DIRS:
            shutil.copytree(
                REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        _run_at_opt(
            build,
            f"{GUEST_VENV}/bin/python", "-m", "pip", "install", "--quiet",
            "--disable-pip-version-check", "--no-deps", "--no-build-isolation",
            "--no-index", str(source),
        )  # fmt: skip
        (build / ".complete").touch()
        build.rename(target)
    finally:
        shutil.rmtree(build, ignore_errors=True)
        shutil.rmtree(source, ignore_errors=True)
    _prune(keep=target)
    return target


def _prune(keep: Path) -> None:
    """Keep the cache small: the newest few full venvs, and only the current deps layer."""
    fulls = sorted(VENV_CACHE.glob("full-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in fulls[KEEP_FULL_VENVS:]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
    current_deps = "deps-" + keep.name.split("-")[1]
    for old in VENV_CACHE.glob("deps-*"):
        if old.name != current_deps:
            shutil.rmtree(old, ignore_errors=True)


@pytest.fixture(scope="session")
def tradingd_venv() -> Path:
    """Host path of a venv with tradingd installed, meant to be bound at /opt/tradingd."""
    _skip_or_fail_if_unavailable()
    if not SYSTEM_PYTHON.is_file():
        pytest.skip(f"{SYSTEM_PYTHON} is missing: cannot build the service venv")
    with _locked():
        return _build_full_venv(_build_deps_venv())


@pytest.fixture
def nsboot_available() -> None:
    """Skip (or fail, see ``_skip_or_fail_if_unavailable``) where systemd cannot be booted."""
    _skip_or_fail_if_unavailable()
