"""Config checks that need the operating system: directories, socket path, secrets.

:func:`check_environment` finds what only the file system and the environment
can reveal (``check-config`` runs it after the file's own checks): the state,
database and control-socket directories exist or can be created, are writable
and are not on a pseudo file system (``/proc``, ``/sys``, ``/dev``, ...); the
socket path fits; every secret reference resolves. Messages never contain
secret values.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final

from daemon import tomlschema
from daemon.config.schema import Config, leaves
from daemon.errors import SecretError
from daemon.secrets import SecretRef, credential_path, resolve


def check_environment(
    config: Config,
    environ: Mapping[str, str] | None = None,
    *,
    lines: Mapping[tuple[str, ...], int] | None = None,
    skip: tuple[tuple[str, ...], ...] = (),
) -> list[str]:
    """Problems only the file system and environment can reveal.

    Checked: the state directory exists and is writable (or can be created)
    and is not on a pseudo file system (``/proc``, ``/sys``, ``/dev``, ...),
    the same for the database's and the control socket's directories, every
    secret reference resolves. Messages never contain secret values.

    Args:
        lines: key paths to lines (:func:`daemon.tomlschema.locate_keys`), so
            that each problem is ``FILE:LINE: key: message``.
        skip: key paths that already have a problem: not checked again.
    """
    env = os.environ if environ is None else environ
    report = tomlschema.Problems(config.source, lines)

    def wanted(*path: str) -> bool:
        return not any(path[: len(bad)] == bad for bad in skip)

    state_dir = config.daemon.state_dir
    if wanted("daemon", "state_dir"):
        problem = _dir_problem(state_dir)
        if problem:
            report(("daemon", "state_dir"), problem)
    store_dir = config.store_path().parent
    if store_dir != state_dir and wanted("store", "path"):
        problem = _dir_problem(store_dir)
        if problem:
            report(("store", "path"), problem)
    sock = config.control_socket_path(env)
    if wanted("daemon", "control_socket"):
        if len(os.fsencode(sock)) > 107:
            report(
                ("daemon", "control_socket"),
                f"{shown_path(sock)} is longer than a Unix socket path may be",
            )
        elif sock.parent != state_dir:
            problem = _dir_problem(sock.parent)
            if problem:
                report(("daemon", "control_socket"), problem)
    for key, ref in _secret_refs(config):
        path = tuple(key.split("."))
        if not wanted(*path):
            continue
        try:
            if ref.kind == "credential":
                credential_path(ref.name, env)
            resolve(ref, env)
        except SecretError as exc:
            report(path, str(exc))
        except (OSError, ValueError) as exc:  # never the value: only the reason
            report(path, f"{ref.kind} {ref.name!r}: cannot be read ({type(exc).__name__})")
    return list(report.problems)


#: File system types that hold no files of ours: kernel views and device nodes.
PSEUDO_FILESYSTEMS: Final = frozenset(
    {
        "autofs",
        "binfmt_misc",
        "bpf",
        "cgroup",
        "cgroup2",
        "configfs",
        "debugfs",
        "devpts",
        "devtmpfs",
        "efivarfs",
        "fusectl",
        "hugetlbfs",
        "mqueue",
        "nsfs",
        "proc",
        "pstore",
        "securityfs",
        "selinuxfs",
        "sysfs",
        "tracefs",
    }
)
#: Trees that are kernel interfaces or device nodes wherever they are mounted from.
PSEUDO_TREES: Final = (Path("/proc"), Path("/sys"), Path("/dev"))


def _pseudo_fs_problem(path: Path) -> str | None:
    """Why ``path`` is on a pseudo file system (``/proc``, ``/sys``, ``/dev``, ...), or None."""
    try:
        real = Path(os.path.realpath(path))
    except (OSError, ValueError):
        return None
    for tree in PSEUDO_TREES:
        if real == tree or tree in real.parents:
            return f"{path} is under {tree}, a kernel file system, not a place for state"
    fstype = _mount_type(real)
    if fstype in PSEUDO_FILESYSTEMS:
        return f"{path} is on a {fstype} file system, not a place for state"
    return None


def _mount_type(path: Path) -> str | None:
    """The type of the file system ``path`` is on, from ``/proc/self/mounts`` (Linux)."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as fh:
            mounts = fh.read()
    except OSError:
        return None
    best: tuple[int, str] | None = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        # Spaces and other characters in mount points are octal escapes.
        point = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1]))
        if (point == path or point in path.parents) and (
            best is None or len(point.parts) >= best[0]
        ):
            best = (len(point.parts), fields[2])
    return best[1] if best else None


def _dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot serve as a writable directory of state, or None."""
    pseudo = _pseudo_fs_problem(path)
    if pseudo:
        return pseudo
    try:
        return _writable_dir_problem(path)
    except OSError as exc:  # a name too long, a symlink loop, an I/O error ...
        return f"{shown_path(path)}: cannot be checked: {exc.strerror or exc}"


def shown_path(path: Path, limit: int = 120) -> str:
    """A path for a message, cut in the middle when it is very long."""
    text = str(path)
    return text if len(text) <= limit else f"{text[: limit // 2]}…{text[-limit // 2 :]}"


def _writable_dir_problem(path: Path) -> str | None:
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return f"{path}: no existing parent directory"
        probe = probe.parent
    if not probe.is_dir():
        return f"{path}: {probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        if probe == path:
            return f"{path} is not writable"
        return f"{path} cannot be created ({probe} is not writable)"
    return None


def _secret_refs(config: Config) -> Iterator[tuple[str, SecretRef]]:
    for leaf in leaves(config):
        if isinstance(leaf.value, SecretRef):
            yield leaf.key, leaf.value
