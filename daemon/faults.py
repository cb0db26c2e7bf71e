"""Fault hooks for tests of the daemon's liveness machinery.

They exist so that a test can show, against a real systemd, that a blocked
event loop and a hung critical task both stop the watchdog pings and get the
process killed and restarted. They are reachable only through the control
socket, and only when the configuration says ``[testing] fault_injection =
true``; ``check-config`` warns loudly when it is on.
"""

from __future__ import annotations

import logging
import threading
import time

import attrs
import trio

log = logging.getLogger("tradingd.faults")

FAULT_KINDS = ("block-loop", "hang-heartbeat")


@attrs.define
class Faults:
    """The armed faults of one daemon process."""

    enabled: bool = False
    hang_heartbeat: bool = False
    #: Never set while the fault is armed: the hung thread waits on it forever,
    #: like a system call stuck on a dead disk.
    hang_release: threading.Event = attrs.field(factory=threading.Event)

    def check_allowed(self) -> None:
        if not self.enabled:
            raise PermissionError(
                "fault injection is disabled (set [testing] fault_injection = true, "
                "in test configurations only)"
            )

    async def block_loop(self, seconds: float) -> None:
        """Block the event loop itself (as a CPU-bound or blocking call would)."""
        self.check_allowed()
        log.warning("FAULT: blocking the event loop for %.1fs", seconds)
        # The whole point is to block the loop; the ASYNC rule is right elsewhere.
        time.sleep(seconds)  # noqa: ASYNC251
        log.warning("FAULT: event loop unblocked")

    def arm_hang_heartbeat(self) -> None:
        self.check_allowed()
        log.warning("FAULT: the housekeeping task will hang in a non-cancellable call")
        self.hang_heartbeat = True

    async def maybe_hang(self) -> None:
        """Called by the housekeeping task each round; hangs while the fault is armed."""
        if self.hang_heartbeat:
            # A worker thread that never returns, awaited without abandon_on_cancel:
            # the task can be neither finished nor cancelled, like a hung disk call.
            await trio.to_thread.run_sync(self.hang_release.wait)
