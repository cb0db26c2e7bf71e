"""The systemd notification protocol (``sd_notify``), on the standard library only.

systemd runs tradingd as ``Type=notify``: it passes the address of a datagram
socket in ``NOTIFY_SOCKET`` and expects newline-separated ``KEY=VALUE``
assignments on it (``READY=1``, ``STATUS=…``, ``WATCHDOG=1``, …). The protocol is
small enough that a dependency (``systemd-python``, ``sdnotify``) would cost more
than it saves, and writing it here lets us guarantee the two properties the
daemon needs:

* **It never blocks the event loop.** Every datagram is sent with
  ``MSG_DONTWAIT``: if systemd's receive queue is full the notification is
  dropped and counted, never waited for.
* **It never raises on a send failure.** A notification is advisory; a failed one
  is logged (once per run of failures) and counted, and the daemon goes on. Only
  programming errors (a malformed key) raise.

When ``NOTIFY_SOCKET`` is unset (a developer's shell, the test suite) the
notifier is a no-op, so the daemon runs the same code with and without systemd.

The watchdog settings are only honoured for the process systemd meant them for:
``WATCHDOG_PID``, when set, must be our own pid. Call :func:`unset_environment`
after reading them so child processes do not inherit the socket and ping on our
behalf (systemd would reject that with ``NotifyAccess=main``, and worse, a child
that outlives us would confuse the watchdog).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping, MutableMapping
from types import TracebackType

__all__ = ["NOTIFY_ENV_VARS", "Notifier", "unset_environment"]

log = logging.getLogger("tradingd.notify")

#: The environment variables systemd uses to describe the notification channel.
NOTIFY_ENV_VARS: tuple[str, ...] = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

_USEC_PER_S = 1_000_000


def _one_line(text: str) -> str:
    """Flatten ``text`` to one line: a newline would start a new assignment."""
    return " ".join(text.splitlines()).strip()


def _validate_key(key: str) -> str:
    if not key or "=" in key or "\n" in key or "\r" in key:
        raise ValueError(f"invalid sd_notify key {key!r}")
    return key


class Notifier:
    """Sends ``sd_notify`` datagrams to systemd (or does nothing when not under systemd).

    Build one with :meth:`from_environ`. One ``AF_UNIX``/``SOCK_DGRAM`` socket is
    opened lazily on the first send and kept for the life of the notifier; each
    datagram is addressed with ``sendto`` so the notifier keeps working if the
    receiving socket is re-created.

    Attributes:
        enabled: ``True`` when a notification socket is configured.
        address: the socket address passed to ``sendto`` (abstract addresses
            start with a NUL byte), or ``None`` when disabled.
        watchdog_usec: ``WATCHDOG_USEC`` when the watchdog is enabled for this
            process, else ``None``.
        watchdog_interval_s: how often to send ``WATCHDOG=1`` (half of
            ``WATCHDOG_USEC``, as systemd recommends), or ``None`` when the
            watchdog is not enabled for this process.
        sent: number of datagrams sent successfully.
        failed: number of datagrams that could not be sent.
    """

    def __init__(self, address: str | None = None, *, watchdog_usec: int | None = None) -> None:
        """Create a notifier for ``address`` (``None``: a no-op notifier).

        Args:
            address: a filesystem path, or an abstract address written either as
                systemd does (``@name``) or as Linux does (``\\0name``).
            watchdog_usec: the watchdog timeout, if the watchdog is enabled for
                this process. Ignored (no watchdog) when ``address`` is ``None``:
                pings that cannot be delivered are pointless.
        """
        if address is not None and address.startswith("@"):
            address = "\0" + address[1:]
        if address is not None and not address:
            address = None
        if watchdog_usec is not None and watchdog_usec <= 0:
            raise ValueError(f"watchdog_usec must be positive, got {watchdog_usec}")
        self.address: str | None = address
        self.enabled: bool = address is not None
        self.watchdog_usec: int | None = watchdog_usec if self.enabled else None
        self.watchdog_interval_s: float | None = (
            self.watchdog_usec / 2 / _USEC_PER_S if self.watchdog_usec is not None else None
        )
        self.sent = 0
        self.failed = 0
        self._sock: socket.socket | None = None
        self._failing = False

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, *, pid: int | None = None
    ) -> Notifier:
        """Build a notifier from systemd's environment variables.

        Args:
            environ: the environment to read (default :data:`os.environ`).
            pid: our process id (default :func:`os.getpid`); the watchdog is only
                enabled when ``WATCHDOG_PID`` is unset or equal to it, because
                systemd sets it for the main process only and a forked child must
                not believe it is being watched.

        Returns:
            A working notifier, or a no-op one when ``NOTIFY_SOCKET`` is unset,
            empty or not an address we can use (logged).
        """
        env = os.environ if environ is None else environ
        own_pid = os.getpid() if pid is None else pid
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and not address.startswith(("/", "@")):
            # systemd also knows vsock: addresses (VMs); relative paths are invalid.
            log.warning(
                "NOTIFY_SOCKET %r is not a path or abstract address; not notifying", address
            )
            address = None
        if address is None:
            return cls(None)
        return cls(address, watchdog_usec=_watchdog_usec_from(env, own_pid))

    # -- sending -----------------------------------------------------------------

    def send(self, fields: Mapping[str, object] | None = None, /, **kwargs: object) -> bool:
        """Send one datagram carrying ``fields`` and ``kwargs`` as ``KEY=VALUE`` lines.

        Values are converted with ``str`` and flattened to one line. Never
        blocks and never raises on a send failure: the failure is counted in
        :attr:`failed` and logged once per run of consecutive failures.

        Returns:
            ``True`` when the datagram was handed to the kernel; ``False`` when
            it could not be sent or the notifier is disabled.

        Raises:
            ValueError: a key is empty or contains ``=`` or a newline, or there
                is nothing to send (programming errors, not send failures).
        """
        items = dict(fields or {})
        items.update(kwargs)
        if not items:
            raise ValueError("sd_notify message without fields")
        message = "\n".join(
            f"{_validate_key(key)}={_one_line(str(value))}" for key, value in items.items()
        )
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(message.encode("utf-8"), socket.MSG_DONTWAIT, self.address)
        except OSError as exc:
            self.failed += 1
            if not self._failing:
                self._failing = True
                log.warning(
                    "sd_notify to %r failed (%s); further failures are only counted",
                    self._printable_address(),
                    exc,
                )
            return False
        self.sent += 1
        if self._failing:
            self._failing = False
            log.info("sd_notify works again after %d failed message(s)", self.failed)
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: the whole tree has started; systemd's start job completes."""
        return self._send_with_status({"READY": 1}, status)

    def status(self, text: str) -> bool:
        """``STATUS=``: one line shown by ``systemctl status``."""
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the daemon is healthy; reset systemd's watchdog timer."""
        return self.send(WATCHDOG=1)

    def watchdog_trigger(self) -> bool:
        """``WATCHDOG=trigger``: ask systemd to act as if the watchdog had expired."""
        return self.send(WATCHDOG="trigger")

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: the daemon is shutting down on purpose."""
        return self._send_with_status({"STOPPING": 1}, status)

    def reloading(self, status: str | None = None) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC``; send :meth:`ready` when done.

        systemd (``Type=notify-reload`` and ``ExecReload=`` alike) uses the
        monotonic timestamp to tell this reload from an earlier one.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self._send_with_status({"RELOADING": 1, "MONOTONIC_USEC": usec}, status)

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC``: a long start or drain is progressing; wait ``seconds`` more.

        Send it repeatedly while the work progresses: each message extends the
        current start/stop timeout to ``seconds`` from now.
        """
        if seconds < 0:
            raise ValueError(f"extend_timeout needs a non-negative duration, got {seconds}")
        return self.send(EXTEND_TIMEOUT_USEC=round(seconds * _USEC_PER_S))

    def errno(self, n: int) -> bool:
        """``ERRNO=``: the reason for a failing exit, shown by systemd."""
        return self.send(ERRNO=int(n))

    def _send_with_status(self, fields: dict[str, object], status: str | None) -> bool:
        if status is not None:
            fields["STATUS"] = status
        return self.send(fields)

    # -- lifetime ----------------------------------------------------------------

    def close(self) -> None:
        """Close the socket. A later send opens a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _printable_address(self) -> str | None:
        if self.address is not None and self.address.startswith("\0"):
            return "@" + self.address[1:]
        return self.address

    def __repr__(self) -> str:
        return (
            f"Notifier(address={self._printable_address()!r}, "
            f"watchdog_interval_s={self.watchdog_interval_s!r}, sent={self.sent}, "
            f"failed={self.failed})"
        )


def _watchdog_usec_from(env: Mapping[str, str], own_pid: int) -> int | None:
    """The watchdog timeout meant for ``own_pid``, or ``None``."""
    raw_usec = env.get("WATCHDOG_USEC")
    if not raw_usec:
        return None
    try:
        usec = int(raw_usec)
    except ValueError:
        log.warning("ignoring malformed WATCHDOG_USEC=%r", raw_usec)
        return None
    if usec <= 0:
        log.warning("ignoring non-positive WATCHDOG_USEC=%r", raw_usec)
        return None
    raw_pid = env.get("WATCHDOG_PID")
    if raw_pid:
        try:
            watched_pid = int(raw_pid)
        except ValueError:
            log.warning("ignoring watchdog: malformed WATCHDOG_PID=%r", raw_pid)
            return None
        if watched_pid != own_pid:
            log.info("watchdog is meant for pid %d, not us (%d); not pinging", watched_pid, own_pid)
            return None
    return usec


def unset_environment(environ: MutableMapping[str, str] = os.environ) -> None:
    """Remove the notification variables so child processes do not inherit them.

    Call it once the :class:`Notifier` has been built: a child that inherited
    ``NOTIFY_SOCKET`` could send ``READY=1`` or ``WATCHDOG=1`` on our behalf.
    """
    for name in NOTIFY_ENV_VARS:
        environ.pop(name, None)
