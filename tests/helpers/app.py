"""The in-process :class:`~daemon.app.Daemon`: a test configuration and a notify socket.

:func:`make_config` is a complete, fast configuration (port 0, short timers);
:class:`NotifyListener` a real ``AF_UNIX`` datagram socket standing in for
systemd's notify socket, in the test's own Trio run (the process-level
equivalent is :class:`tests.helpers.process.NotifyListener`).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import attrs
import trio

from daemon import config as configmod
from daemon.config import Config
from daemon.notify import Notifier


class NotifyListener:
    """A real AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.messages: list[dict[str, str]] = []
        self.arrived = trio.Event()

    async def bind(self) -> None:
        await self.sock.bind(os.fspath(self.path))

    async def run(self) -> None:
        while True:
            data = await self.sock.recv(65536)
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append(fields)
            self.arrived.set()
            self.arrived = trio.Event()

    async def wait_for(
        self, key: str, value: str | None = None, *, contains: str | None = None
    ) -> dict[str, str]:
        seen = 0
        while True:
            for msg in self.messages[seen:]:
                if key not in msg or (value is not None and msg[key] != value):
                    continue
                if contains is None or contains in msg[key]:
                    return msg
            seen = len(self.messages)
            await self.arrived.wait()

    def all_keys(self) -> list[str]:
        return [k for m in self.messages for k in m]


def make_config(tmp_path: Path, **sections: dict[str, Any]) -> Config:
    """Defaults with short timers, state under ``tmp_path``, admin on port 0, then ``sections``."""
    base = configmod.defaults()
    values: dict[str, Any] = {
        "daemon": attrs.evolve(
            base.daemon,
            state_dir=tmp_path / "state",
            control_socket=str(tmp_path / "c.sock"),
            shutdown_timeout_s=5.0,
            start_timeout_s=5.0,
        ),
        "admin": attrs.evolve(base.admin, listen="127.0.0.1:0"),
        "supervision": attrs.evolve(base.supervision, backoff_initial_s=0.01, backoff_max_s=0.05),
        "health": attrs.evolve(base.health, heartbeat_interval_s=0.2, status_interval_s=0.2),
    }
    for name, changes in sections.items():
        values[name] = attrs.evolve(values.get(name, getattr(base, name)), **changes)
    return attrs.evolve(base, source="test", **values)


def notifier_for(listener: NotifyListener, watchdog_usec: int | None = None) -> Notifier:
    """The daemon's notifier, sending to ``listener``."""
    env = {"NOTIFY_SOCKET": os.fspath(listener.path)}
    if watchdog_usec:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    return Notifier.from_environ(env)
