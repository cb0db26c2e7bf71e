"""Boot a real systemd as PID 1 in throw-away namespaces, for tests.

The host has systemd installed but not running as PID 1, so a unit file can
only be tested for real by booting a systemd of our own. This module does so
the way a container manager would, using util-linux (``unshare``,
``nsenter``, ``pivot_root``) and nothing else:

1. private subtrees ``tradingd-nsboot-<id>`` are created in the cgroup
   hierarchies systemd needs (``name=systemd`` and ``unified`` on a hybrid
   host like this one, or the single cgroup2 tree on a unified host), and the
   booting process is moved into them;
2. ``unshare --pid --fork --mount --net --uts --ipc --cgroup --propagation
   private`` gives it fresh namespaces; the cgroup namespace makes the
   private subtrees look like the roots (without it systemd would find its
   cgroup at ``/tradingd-nsboot-<id>`` and need the host's whole hierarchy);
3. inside, a tmpfs carries the upper layer of an overlay over the host's
   ``/``: every write of the booted system lands there and vanishes with the
   mount namespace. The host's root is never written and never booted on;
4. ``/proc`` (with ``/proc/sys`` read-only), a read-only ``/sys`` exposing
   only the private cgroup subtrees, and private ``/dev``, ``/run`` and
   ``/tmp`` are mounted; the staged files (units, configs, masks of host
   services that would otherwise start) are copied in, read-only binds added;
5. ``pivot_root`` into the overlay, the old root is detached, mounts are made
   shared inside the namespace (as a container manager does; services'
   private mounts such as credentials need it), and
   ``/lib/systemd/systemd --unit=multi-user.target`` is exec'd as PID 1 (with
   ``container=`` set, so units meant for real hardware skip themselves).

The booted system is driven with ``nsenter -t <pid1> -a systemctl …`` and
powered off with SIGRTMIN+4. :func:`boot` is a context manager that always
cleans up: on any failure PID 1 is killed (which kills its whole PID
namespace) and the cgroup subtrees and the host-side temporary directory are
removed. Nothing outside them is touched.

Example::

    with boot({"/etc/systemd/system/demo.service": UNIT}) as machine:
        machine.systemctl("start", "demo.service")
        assert machine.show("demo.service", "ActiveState")["ActiveState"] == "active"
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

SYSTEMD_BINARY = Path("/lib/systemd/systemd")
CGROUP_ROOT = Path("/sys/fs/cgroup")
HOSTNAME = "tradingd-nsboot"
DEFAULT_BOOT_TIMEOUT_S = 30.0
DEFAULT_POWEROFF_TIMEOUT_S = 20.0
TOOLS = ("unshare", "nsenter", "pivot_root", "mount", "umount", "systemctl", "journalctl")

# Units that must never start in the booted system: logins on a console we do
# not have, and host services (databases, brokers) that would compete with the
# host's own instances for their data directories. Everything the host has
# enabled under /etc/systemd/system/*.wants is masked as well (see _host_masks).
ALWAYS_MASKED = (
    "console-getty.service",
    "container-getty@.service",
    "getty@.service",
    "serial-getty@.service",
    "getty.target",
    "postgresql.service",
    "postgresql@.service",
    "redis-server.service",
    "redis-server@.service",
    "redis.service",
    "mariadb.service",
    "mysql.service",
    "rabbitmq-server.service",
    "epmd.service",
    "epmd.socket",
    "mosquitto.service",
    "nats-server.service",
    "docker.service",
    "docker.socket",
    "containerd.service",
    "cron.service",
    "ssh.service",
    "rsync.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "man-db.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "logrotate.timer",
    "dpkg-db-backup.timer",
    "systemd-timesyncd.service",
    "systemd-pstore.service",
)

# Generators that would turn host configuration (SysV scripts, PostgreSQL
# clusters, gettys, partitions) into units; an override in
# /etc/systemd/system-generators linked to /dev/null disables one.
MASKED_GENERATORS = (
    "systemd-sysv-generator",
    "postgresql-generator",
    "systemd-getty-generator",
    "systemd-gpt-auto-generator",
    "systemd-rc-local-generator",
)

STAGE2 = r"""
set -euo pipefail
mnt=$1 stage=$2 console=$3 binds=$4 layout=$5

# Everything below happens in the private mount namespace: on the host, $mnt
# stays an empty directory and nothing is ever written to the real root.
mount -t tmpfs -o mode=0755 nsboot "$mnt"
mkdir "$mnt/upper" "$mnt/work" "$mnt/root"
mount -t overlay -o "lowerdir=/,upperdir=$mnt/upper,workdir=$mnt/work" overlay "$mnt/root"
root=$mnt/root
mountpoint -q "$root"
[ "$(stat -c %d "$root")" != "$(stat -c %d /)" ]

cp -a "$stage/." "$root/"
while read -r src dst; do
    [ -n "$src" ] || continue
    if [ -d "$src" ]; then
        mkdir -p "$root$dst"
    else
        mkdir -p "$(dirname "$root$dst")"
        touch "$root$dst"
    fi
    mount --bind "$src" "$root$dst"
    mount -o remount,bind,ro "$root$dst"
done < "$binds"

mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount --bind "$root/proc/sys" "$root/proc/sys"
mount -o remount,bind,ro,nosuid,nodev,noexec "$root/proc/sys"

mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
if [ "$layout" = hybrid ]; then
    mount -t tmpfs -o mode=0755,nosuid,nodev,noexec cgroup-root "$root/sys/fs/cgroup"
    mkdir "$root/sys/fs/cgroup/systemd" "$root/sys/fs/cgroup/unified"
    mount -t cgroup -o none,name=systemd,nosuid,nodev,noexec cgroup "$root/sys/fs/cgroup/systemd"
    mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$root/sys/fs/cgroup/unified"
    mount -o remount,ro,nosuid,nodev,noexec cgroup-root "$root/sys/fs/cgroup"
else
    mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$root/sys/fs/cgroup"
fi

mount -t tmpfs -o mode=0755,nosuid dev "$root/dev"
for node in null zero full random urandom tty; do
    touch "$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
done
mkdir "$root/dev/pts" "$root/dev/shm" "$root/dev/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$root/dev/shm"
mount -t mqueue -o nosuid,nodev,noexec mqueue "$root/dev/mqueue"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
touch "$root/dev/console"
mount --bind "$console" "$root/dev/console"

mount -t tmpfs -o mode=0755,nosuid,nodev run "$root/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$root/tmp"

cd "$root"
mkdir .nsboot-oldroot
pivot_root . .nsboot-oldroot
cd /
umount -l /.nsboot-oldroot
rmdir /.nsboot-oldroot
# As a container manager would: systemd skips this in a container, and the
# private mounts of services (credentials, PrivateTmp=, …) need it. These are
# new peer groups inside this namespace only; the host's mounts stay unaffected.
mount --make-rshared /
exec /usr/bin/env -i container=tradingd-nsboot LANG=C.UTF-8 \
    /lib/systemd/systemd --unit=multi-user.target
"""


class NsBootError(RuntimeError):
    """The namespaced systemd could not be booted or driven."""


class Unavailable(NsBootError):
    """This machine cannot boot a namespaced systemd at all (the reason says why)."""


def wait_until(
    predicate: Callable[[], T | None],
    timeout_s: float,
    *,
    interval_s: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Raises:
        TimeoutError: naming ``what`` if the deadline passes first.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:.1f}s waiting for {what}")
        time.sleep(interval_s)


def _cgroup_layout() -> str:
    """Return ``"hybrid"`` or ``"unified"`` for the host's cgroup mounts."""
    mounts: dict[str, str] = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 4:
            mounts[fields[1]] = f"{fields[2]} {fields[3]}"
    systemd_v1 = mounts.get(str(CGROUP_ROOT / "systemd"), "")
    unified = mounts.get(str(CGROUP_ROOT / "unified"), "")
    if (
        systemd_v1.startswith("cgroup ")
        and "name=systemd" in systemd_v1
        and unified.startswith("cgroup2 ")
    ):
        return "hybrid"
    if mounts.get(str(CGROUP_ROOT), "").startswith("cgroup2 "):
        return "unified"
    raise Unavailable(
        "no usable cgroup layout: need name=systemd at /sys/fs/cgroup/systemd plus cgroup2 at "
        "/sys/fs/cgroup/unified (hybrid), or cgroup2 at /sys/fs/cgroup (unified)"
    )


def _cgroup_parents(layout: str) -> tuple[Path, ...]:
    if layout == "hybrid":
        return (CGROUP_ROOT / "systemd", CGROUP_ROOT / "unified")
    return (CGROUP_ROOT,)


def unavailable_reason() -> str | None:
    """Say why a namespaced systemd cannot be booted here, or ``None`` if it can."""
    if os.geteuid() != 0:
        return "booting systemd in namespaces needs root"
    if not SYSTEMD_BINARY.is_file():
        return f"systemd is not installed ({SYSTEMD_BINARY} missing)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)}"
    if not Path("/proc/self/ns/cgroup").exists():
        return "the kernel has no cgroup namespaces"
    try:
        layout = _cgroup_layout()
    except Unavailable as exc:
        return str(exc)
    for parent in _cgroup_parents(layout):
        if not os.access(parent, os.W_OK):
            return f"cannot create cgroups under {parent}"
    return _trial_reason()


TRIAL = r"""
set -e
mount -t tmpfs nsboot-trial "$1"
mkdir "$1/upper" "$1/work" "$1/root"
mount -t overlay -o "lowerdir=/,upperdir=$1/upper,workdir=$1/work" overlay "$1/root"
"""


def _trial_reason() -> str | None:
    """Try the namespaces and an overlay of ``/`` once, in a throw-away mount namespace."""
    with tempfile.TemporaryDirectory(prefix="tradingd-nsboot-trial-") as scratch:
        try:
            proc = subprocess.run(
                ["unshare", "--pid", "--fork", "--mount", "--net", "--uts", "--ipc", "--cgroup",
                 "--propagation", "private", "/bin/sh", "-c", TRIAL, "trial", scratch],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"cannot create namespaces: {exc}"
    if proc.returncode != 0:
        return f"cannot create namespaces or an overlay of /: {proc.stderr.strip()}"
    return None


def _host_masks() -> set[str]:
    """Units the host has enabled (``/etc/systemd/system/*.wants``), to keep them off."""
    names: set[str] = set()
    for wants in Path("/etc/systemd/system").glob("*.wants"):
        for link in wants.iterdir():
            if link.name.endswith((".service", ".socket", ".timer", ".path")):
                names.add(link.name)
    return names


def _remove_cgroup_tree(top: Path, timeout_s: float = 10.0) -> None:
    """Remove a cgroup directory and its children, deepest first.

    A cgroup can only be removed once its processes are gone, and the kernel
    reaps the processes of a dead PID namespace asynchronously, so retry.
    """
    if not top.exists():
        return
    deadline = time.monotonic() + timeout_s
    while True:
        dirs = sorted(
            (Path(d) for d, _, _ in os.walk(top)), key=lambda p: len(p.parts), reverse=True
        )
        busy: list[Path] = []
        for directory in dirs:
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                busy.append(directory)
        if not busy:
            return
        if time.monotonic() >= deadline:
            raise NsBootError(f"could not remove cgroups: {', '.join(map(str, busy))}")
        time.sleep(0.05)


def _children_of(pid: int) -> list[int]:
    """Host PIDs whose parent is ``pid`` (no /proc/PID/task/*/children on this kernel)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces and parentheses; fields after the last ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


class Machine:
    """A booted, namespaced systemd, driven from the host with ``nsenter``."""

    def __init__(self, pid1: int, workdir: Path) -> None:
        self.pid1 = pid1
        self.workdir = workdir

    @property
    def root(self) -> Path:
        """The booted system's ``/`` as seen from the host (``/proc/PID1/root``)."""
        return Path(f"/proc/{self.pid1}/root")

    @property
    def console_log(self) -> str:
        """What systemd wrote to its console (boot messages, unit status)."""
        return (self.workdir / "console.log").read_text(errors="replace")

    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout_s: float = 60.0,
        input_text: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside every namespace of the booted system.

        ``env`` is added to a minimal environment (the host's is not passed in).

        Raises:
            NsBootError: if ``check`` and the command exits non-zero (the
                message carries its output).
        """
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "SYSTEMD_PAGER": "",
            "SYSTEMD_COLORS": "0",
            "TERM": "dumb",
            **(env or {}),
        }
        proc = subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-a", *argv],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            input=input_text,
            check=False,
        )
        if check and proc.returncode != 0:
            raise NsBootError(
                f"{shlex.join(argv)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def systemctl(
        self, *args: str, check: bool = True, timeout_s: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``systemctl --no-pager ARGS…`` inside."""
        return self.run("systemctl", "--no-pager", *args, check=check, timeout_s=timeout_s)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show`` of ``props`` (all properties if none) as a dict."""
        args = ["show", unit]
        if props:
            args.append("--property=" + ",".join(props))
        out = self.systemctl(*args).stdout
        result: dict[str, str] = {}
        for line in out.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                result[key] = value
        return result

    def journal(self, unit: str | None = None, *, lines: int | None = None) -> str:
        """The journal inside, for one unit or all, without a pager."""
        args = ["journalctl", "--no-pager", "-o", "short-monotonic", "--no-hostname"]
        if unit is not None:
            args += ["-u", unit]
        if lines is not None:
            args += ["-n", str(lines)]
        return self.run(*args, check=False).stdout

    def write_file(self, path: str, content: str | bytes, mode: int = 0o644) -> None:
        """Write a file into the running system (into its overlay's upper layer)."""
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        target.write_bytes(data)
        target.chmod(mode)

    def daemon_reload(self) -> None:
        """``systemctl daemon-reload`` inside, after changing unit files."""
        self.systemctl("daemon-reload")

    def diagnostics(self, unit: str | None = None) -> str:
        """A block of text to attach to a failing assertion."""
        parts = []
        with contextlib.suppress(Exception):
            parts.append(self.systemctl("--failed", check=False).stdout)
        with contextlib.suppress(Exception):
            if unit is not None:
                parts.append(self.systemctl("status", unit, check=False).stdout)
        with contextlib.suppress(Exception):
            parts.append(self.journal(unit, lines=200))
        return "\n".join(parts)


Content = str | bytes | Path
FileSpec = Content | tuple[Content, int]


def _stage(stage_dir: Path, files: Mapping[str, FileSpec], masks: Iterable[str]) -> None:
    """Lay out the files to copy over the booted system's ``/`` (``cp -a``)."""

    def put(path: str, spec: FileSpec) -> None:
        content, mode = spec if isinstance(spec, tuple) else (spec, 0o644)
        target = stage_dir / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copyfile(content, target)
        else:
            target.write_bytes(content.encode() if isinstance(content, str) else content)
        target.chmod(mode)

    put("/etc/machine-id", (uuid.uuid4().hex + "\n", 0o444))
    put("/etc/hostname", HOSTNAME + "\n")
    put("/etc/systemd/journald.conf.d/nsboot.conf", "[Journal]\nStorage=volatile\n")
    for name in sorted(set(masks)):
        link = stage_dir / "etc/systemd/system" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/dev/null")
    for name in MASKED_GENERATORS:
        link = stage_dir / "etc/systemd/system-generators" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/dev/null")
    for path, spec in files.items():
        put(path, spec)
    # `cp -a` also copies the directories' modes and owners over the booted
    # system's: give each staged directory the host's (or 0755 root if new),
    # whatever umask this process runs under.
    for directory in [
        stage_dir,
        *(p for p in stage_dir.rglob("*") if p.is_dir() and not p.is_symlink()),
    ]:
        host = Path("/") / directory.relative_to(stage_dir)
        if host.is_dir():
            st = host.stat()
            os.chown(directory, st.st_uid, st.st_gid)
            directory.chmod(st.st_mode & 0o7777)
        else:
            os.chown(directory, 0, 0)
            directory.chmod(0o755)


@contextlib.contextmanager
def boot(
    files: Mapping[str, FileSpec] | None = None,
    *,
    binds: Mapping[Path, str] | None = None,
    masks: Iterable[str] = (),
    boot_timeout_s: float = DEFAULT_BOOT_TIMEOUT_S,
    poweroff_timeout_s: float = DEFAULT_POWEROFF_TIMEOUT_S,
) -> Iterator[Machine]:
    """Boot systemd as PID 1 in fresh namespaces and yield a :class:`Machine`.

    Args:
        files: guest path → content (text, bytes, or a host file to copy),
            or ``(content, mode)``; written into the booted system's overlay
            before boot (mode 0644 unless given). Unit files go under
            ``/etc/systemd/system``.
        binds: host path → guest path, bind-mounted read-only before boot
            (e.g. a prepared venv at ``/opt/…``).
        masks: extra unit names to mask (besides host services and gettys).
        boot_timeout_s: how long ``systemctl is-system-running --wait`` may take.
        poweroff_timeout_s: how long a SIGRTMIN+4 poweroff may take before
            PID 1 is killed.

    Raises:
        Unavailable: if this machine cannot do it at all.
        NsBootError: if the boot fails (with systemd's console output).
    """
    reason = unavailable_reason()
    if reason is not None:
        raise Unavailable(reason)
    layout = _cgroup_layout()
    name = f"tradingd-nsboot-{uuid.uuid4().hex[:12]}"
    workdir = Path(tempfile.mkdtemp(prefix=name + "-"))
    cgroups = [parent / name for parent in _cgroup_parents(layout)]
    proc: subprocess.Popen[bytes] | None = None
    pid1: int | None = None
    try:
        (workdir / "mnt").mkdir()
        (workdir / "console.log").touch()
        stage_dir = workdir / "stage"
        stage_dir.mkdir()
        _stage(stage_dir, files or {}, [*ALWAYS_MASKED, *_host_masks(), *masks])
        bind_lines = []
        for src, dst in (binds or {}).items():
            if any(ch.isspace() for ch in f"{src}{dst}"):
                raise NsBootError(f"bind paths must not contain whitespace: {src} -> {dst}")
            bind_lines.append(f"{Path(src).resolve()} {dst}\n")
        (workdir / "binds").write_text("".join(bind_lines))
        (workdir / "stage2.sh").write_text(STAGE2)
        for cgroup in cgroups:
            cgroup.mkdir()

        # The shell moves itself into the private cgroups, then becomes unshare,
        # whose forked child (PID 1 of the new namespace) runs stage 2 and
        # finally execs systemd.
        enter_cgroups = " ".join(
            f"echo $$ > {shlex.quote(str(c / 'cgroup.procs'))};" for c in cgroups
        )
        argv = [
            "/bin/sh",
            "-c",
            "set -e; " + enter_cgroups + ' exec "$@"',
            "nsboot",
            "unshare",
            "--pid",
            "--fork",
            "--mount",
            "--net",
            "--uts",
            "--ipc",
            "--cgroup",
            "--propagation",
            "private",
            "/bin/bash",
            str(workdir / "stage2.sh"),
            str(workdir / "mnt"),
            str(stage_dir),
            str(workdir / "console.log"),
            str(workdir / "binds"),
            layout,
        ]
        with open(workdir / "stage2.log", "wb") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        unshare_pid = proc.pid

        def find_pid1() -> int | None:
            if proc.poll() is not None:
                raise NsBootError(f"stage 2 exited {proc.returncode}: {_log(workdir)}")
            children = _children_of(unshare_pid)
            return children[0] if children else None

        pid1 = wait_until(find_pid1, 10.0, interval_s=0.02, what="the namespace's PID 1")
        machine = Machine(pid1, workdir)

        boot_deadline = time.monotonic() + boot_timeout_s

        def booted() -> bool:
            if proc.poll() is not None:
                raise NsBootError(f"PID 1 exited {proc.returncode} during boot: {_log(workdir)}")
            try:
                if os.readlink(f"/proc/{pid1}/exe") != str(SYSTEMD_BINARY.resolve()):
                    return False  # still stage 2
            except OSError:
                return False  # exiting: proc.poll() reports it on the next round
            try:
                result = machine.run(
                    "systemctl", "is-system-running", "--wait", check=False,
                    timeout_s=max(1.0, boot_deadline - time.monotonic()),
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                return False
            state = result.stdout.strip()
            if state in ("running", "degraded"):
                return True
            if state in ("maintenance", "stopping"):
                raise NsBootError(f"boot ended in state {state!r}: {_log(workdir)}")
            # "offline": PID 1 is systemd but its API socket is not up yet.
            return False

        try:
            wait_until(booted, boot_timeout_s, interval_s=0.05, what="systemd to boot")
        except TimeoutError as exc:
            jobs = ""
            with contextlib.suppress(Exception):
                jobs = machine.systemctl("list-jobs", check=False, timeout_s=5).stdout
                jobs += machine.journal(lines=100)
            raise NsBootError(f"{exc}: {_log(workdir)}\n{jobs}") from None
        yield machine
    finally:
        try:
            _shutdown(proc, pid1, poweroff_timeout_s)
        finally:
            errors = []
            for cgroup in cgroups:
                try:
                    _remove_cgroup_tree(cgroup)
                except NsBootError as exc:
                    errors.append(str(exc))
            shutil.rmtree(workdir, ignore_errors=True)
            if errors:
                raise NsBootError("; ".join(errors))


def _log(workdir: Path) -> str:
    parts = []
    for name in ("stage2.log", "console.log"):
        with contextlib.suppress(OSError):
            text = (workdir / name).read_text(errors="replace")
            parts.append(f"--- {name} ---\n{text[-8000:]}")
    return "\n" + "\n".join(parts)


def _shutdown(proc: subprocess.Popen[bytes] | None, pid1: int | None, timeout_s: float) -> None:
    """Power off politely (SIGRTMIN+4), then kill PID 1, which ends its namespace."""
    if proc is None:
        return
    if proc.poll() is None and pid1 is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid1, signal.SIGRTMIN + 4)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout_s)
    if proc.poll() is None:
        # Killing PID 1 of a PID namespace makes the kernel kill every process in it.
        for target in (pid1, proc.pid):
            if target is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(target, signal.SIGKILL)
        proc.wait(timeout=10)
