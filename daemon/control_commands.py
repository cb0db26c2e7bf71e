"""What the daemon answers on its control socket (``tradingd ping|status|reload|...``).

:func:`daemon.control.serve_control` owns the socket, the framing and the
argument errors; it hands each request, a JSON object whose ``cmd`` is a
non-empty string, to :meth:`ControlCommands.handle`:

===============================  ==================================================
``ping``                         ``{"ok": true, "pid": ..., "version": ...}``
``status``                       ``{"ok": true, "status": <the full status>}``
``reload``                       the :class:`~daemon.app.ReloadResult` as a dict
``dead-letters``                 :func:`daemon.store.deadletter_admin.handle_dead_letters_command`;
                                 ``replay``: :func:`daemon.replay.handle_replay`
``trading``, ``orders``          :func:`daemon.orders.control.handle_orders_command`
``positions``                    the same (signed positions per account and symbol)
``db``                           ``backup`` (online, to an absolute path) and
                                 ``backup-status``: :class:`daemon.store.backup.BackupJobs`
``fault``                        test fault hooks (``kind``: block-loop, hang-heartbeat;
                                 ``seconds``); refused unless ``[testing] fault_injection``
anything else                    ``{"ok": false, "error": "unknown command ..."}``
===============================  ==================================================
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from daemon import __version__
from daemon.control import Args, shown
from daemon.faults import FAULT_KINDS, Faults
from daemon.orders.control import ORDERS_COMMANDS, handle_orders_command
from daemon.replay import TradeSink, handle_replay
from daemon.resilience import DeadLetterStore
from daemon.store.backup import BackupJobs
from daemon.store.deadletter_admin import handle_dead_letters_command

if TYPE_CHECKING:
    from daemon.app import ReloadResult
    from daemon.orders.service import OrdersService

__all__ = ["ControlCommands"]


class ControlCommands:
    """The control-socket handler of one daemon, given what each command needs.

    Args:
        status: the full status document (``cmd: status``).
        reload: re-read the configuration, with the origin to log (``cmd: reload``).
        dead_letters: the durable dead letters now, or None while the store is not open.
        orders: the order pipeline, or None without ``[accounts]``.
        trades: where a replayed trade is stored (the store's market tables), or None.
        db: the online backups of the store (``cmd: db``), or None.
        faults: the process's fault hooks.
        block_loop: blocks the event loop for so many seconds (a fault hook,
            started as a system task after the answer is sent).
    """

    def __init__(
        self,
        *,
        status: Callable[[], dict[str, Any]],
        reload: Callable[[str], Awaitable[ReloadResult]],
        dead_letters: Callable[[], DeadLetterStore | None],
        orders: OrdersService | None,
        trades: Callable[[], TradeSink | None] = lambda: None,
        db: BackupJobs | None = None,
        faults: Faults,
        block_loop: Callable[[float], Awaitable[None]],
    ) -> None:
        self._status = status
        self._reload = reload
        self._dead_letters = dead_letters
        self._orders = orders
        self._trades = trades
        self._db = db
        self._faults = faults
        self._block_loop = block_loop

    async def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        """Answer one control-socket request (``cmd`` is a non-empty string).

        Arguments of the wrong type or range raise :class:`RequestError`,
        which the server answers ``ok: false`` listing every problem.
        """
        cmd = message["cmd"]
        if cmd == "ping":
            return {"ok": True, "pid": os.getpid(), "version": __version__}
        if cmd == "status":
            return {"ok": True, "status": self._status()}
        if cmd == "reload":
            return (await self._reload("control socket")).to_dict()
        if cmd == "dead-letters" and message.get("action") == "replay":
            return await handle_replay(
                message, letters=self._dead_letters(), orders=self._orders, trades=self._trades()
            )
        if cmd == "dead-letters":
            return await handle_dead_letters_command(self._dead_letters(), message)
        if cmd == "db" and self._db is not None:
            return await self._db.handle(message)
        if cmd in ORDERS_COMMANDS:
            return await handle_orders_command(self._orders, message)
        if cmd == "fault":
            return self._fault(message)
        return {"ok": False, "error": f"unknown command {shown(cmd)}"}

    def _fault(self, message: dict[str, Any]) -> dict[str, Any]:
        args = Args(message, known=("kind", "seconds"))
        kind = args.string("kind", required=True)
        seconds = args.number("seconds", lo=0.001, hi=3600.0, default=30.0)
        args.check()
        if kind not in FAULT_KINDS:
            return {"ok": False, "error": f"unknown fault {shown(kind)}; one of {FAULT_KINDS}"}
        try:
            self._faults.check_allowed()
        except PermissionError as exc:
            return {"ok": False, "error": str(exc)}
        if kind == "block-loop":
            assert seconds is not None
            # Answer first, then block: the CLI should not be the one left hanging.
            trio.lowlevel.spawn_system_task(self._block_loop, seconds)
        else:
            self._faults.arm_hang_heartbeat()
        return {"ok": True, "fault": kind}
