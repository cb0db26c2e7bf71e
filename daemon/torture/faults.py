"""The faults of a torture scenario: a seeded schedule, and how each kind is applied.

:func:`schedule` draws the whole sequence of fault kinds of a scenario from
its seed before anything runs, so a seed replays the same faults with the
same parameters (each event draws from its own ``Random(seed:i)``);
only the moments depend on the machine. :class:`Stage` holds the running
programs and applies one event (:meth:`Stage.apply`):

* process faults on the daemon — ``SIGKILL`` at a random moment, just after a
  client saw a 202, just after a send reached the venue (sometimes with the
  answer held back, so the venue has the order and the daemon does not know),
  during start-up reconciliation, during a reload; ``SIGSTOP``/``SIGCONT``
  (a frozen process: no watchdog ping may arrive while it is frozen, and a
  freeze longer than the watchdog gets it killed, as systemd would);
  ``SIGTERM`` during a drain with a burst of intents queued;
* a venue outage — the simulator SIGKILLed and restarted from its state file
  after a few seconds (REST, streams and the WebSocket API down together);
* venue faults armed in the simulator for a few seconds — 5xx, ``-1006``,
  ``-1007`` and timeouts before and after processing, query errors, 429
  bursts, a 418 IP ban earned by a noisy neighbour on the same host, stream
  drops, stalls and malformed frames, user data stream cuts and stalls,
  order visibility lag within ``query_lag_s``, clock skew within and beyond
  ``recvWindow``;
* the disk under the store filling up (a tmpfs, root only).
"""

from __future__ import annotations

import errno
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from daemon.torture.procs import DaemonProc, SimProc, TortureError, poll
from daemon.torture.record import Event, Restart, ScenarioResult
from daemon.torture.setup import FAULT_KINDS, Profile
from daemon.torture.venue_faults import ORDER_PATH, STALL_S, VENUE_FAULTS
from daemon.torture.workload import Workload

__all__ = ["STALL_S", "Stage", "schedule"]

#: Bound of one daemon start up to READY=1 (start-up reconciliation included).
READY_TIMEOUT_S = 90.0


def schedule(
    profile: Profile,
    seed: int,
    count: int,
    *,
    disk: bool,
    only: frozenset[str] | None = None,
) -> list[str]:
    """The fault kinds of one scenario, in order.

    ``disk``: whether disk-full can run; ``only``: draw from these kinds alone
    (``--faults``).
    """
    rng = random.Random(f"{seed}:schedule")
    kinds = [k for k in FAULT_KINDS if (disk or k != "disk-full") and (only is None or k in only)]
    if not kinds:
        return []
    weights = [profile.weight(k) for k in kinds]
    return rng.choices(kinds, weights, k=count)


class Stage:
    """The programs of one scenario and the faults applied to them."""

    def __init__(
        self,
        *,
        sim: SimProc,
        daemon: DaemonProc,
        work: Workload,
        result: ScenarioResult,
        started: float,
        disk_dir: Path | None,
    ) -> None:
        self.sim = sim
        self.daemon = daemon
        self.work = work
        self.result = result
        self.started = started
        self.disk_dir = disk_dir
        self.filler: Path | None = None
        self._ready_s: list[float] = []

    # -- the daemon's lifecycle -----------------------------------------------------

    async def start_daemon(self, cause: str | None) -> None:
        """Start an incarnation and wait for READY=1 (a restart when ``cause`` is set)."""
        self.work.admin.base_url = None
        inc = await self.daemon.start()
        ready_s = await self.daemon.wait_ready(inc, timeout_s=READY_TIMEOUT_S)
        self._ready_s.append(ready_s)
        if cause is not None:
            self.result.restarts.append(Restart(cause, round(ready_s, 3)))
        self.work.admin.base_url = inc.admin_url

    async def kill_daemon(self) -> None:
        self.work.admin.base_url = None
        await self.daemon.kill()
        self.result.kills += 1

    async def kill_and_restart(self, cause: str) -> None:
        await self.kill_daemon()
        await self.start_daemon(cause)

    def _typical_ready_s(self) -> float:
        return sorted(self._ready_s)[len(self._ready_s) // 2] if self._ready_s else 1.0

    # -- applying events ------------------------------------------------------------

    async def apply(self, index: int, kind: str, rng: random.Random) -> Event:
        if not self.daemon.current.alive:
            # It exited on its own (a crash: judged at the end); start it, as systemd would.
            await self.start_daemon("exited on its own")
        event = Event(index, kind, round(time.monotonic() - self.started, 3))
        venue_fault = VENUE_FAULTS.get(kind)
        if venue_fault is not None:
            await venue_fault(self.sim, rng, event.detail)
        else:
            handler: Callable[[random.Random, dict[str, Any]], Awaitable[None]] = getattr(
                self, "_" + kind.replace("-", "_")
            )
            await handler(rng, event.detail)
        return event

    async def _kill_random(self, rng: random.Random, detail: dict[str, Any]) -> None:
        await trio.sleep(rng.uniform(0.0, 1.5))
        await self.kill_and_restart("kill-random")

    async def _kill_after_202(self, rng: random.Random, detail: dict[str, Any]) -> None:
        aimed = await poll(
            self._accepted_since(self.work.log.accepted_count), timeout_s=8.0, interval_s=0.002
        )
        detail["aim"] = "aimed" if aimed else "timed out"
        if aimed:
            await trio.sleep(rng.uniform(0.0, 0.01))
        await self.kill_and_restart("kill-after-202")

    def _accepted_since(self, seen: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return self.work.log.accepted_count > seen

        return check

    async def _audit_count(self) -> int:
        return int((await self.sim.control("GET", "/sim/status"))["auditRecords"])

    async def _kill_after_send(self, rng: random.Random, detail: dict[str, Any]) -> None:
        """Kill just after the venue accepted an order (its answer may still be on the way).

        Half the time the next new order's answer is held back beyond the
        daemon's send timeout, so the kill lands while the venue has the order
        and the daemon is still waiting: only a query can tell then.
        """
        held = rng.random() < 0.5
        detail["held_answer"] = held
        if held:
            await self.sim.arm(
                {"kind": "rest_timeout", "phase": "after", "delay_s": STALL_S, "count": 1}
                | ORDER_PATH
            )
        before = await self._audit_count()

        async def sent() -> bool:
            return await self._audit_count() > before

        aimed = await poll(sent, timeout_s=8.0, interval_s=0.003)
        detail["aim"] = "aimed" if aimed else "timed out"
        if aimed and held:
            await trio.sleep(0.2)
        await self.kill_and_restart("kill-after-send")

    async def _kill_in_startup(self, rng: random.Random, detail: dict[str, Any]) -> None:
        await self.kill_daemon()
        self.work.admin.base_url = None
        inc = await self.daemon.start()
        delay = rng.uniform(0.1, 0.9) * self._typical_ready_s()
        await trio.sleep(delay)
        detail["after_s"] = round(delay, 3)
        detail["aim"] = "missed (ready first)" if inc.notify.times("READY", "1") else "aimed"
        await self.kill_and_restart("kill-in-startup")

    async def _kill_in_reload(self, rng: random.Random, detail: dict[str, Any]) -> None:
        self.daemon.signal(signal.SIGHUP)
        await trio.sleep(rng.uniform(0.0, 0.3))
        await self.kill_and_restart("kill-in-reload")

    async def _reload(self, rng: random.Random, detail: dict[str, Any]) -> None:
        inc = self.daemon.current
        before = len(inc.notify.times("READY", "1"))
        self.daemon.signal(signal.SIGHUP)

        async def ready_again() -> bool:
            return len(inc.notify.times("READY", "1")) > before

        reloaded = await poll(ready_again, timeout_s=10.0)
        detail["ready_again"] = reloaded
        if not reloaded or not inc.alive:
            raise TortureError(f"no READY=1 after a reload:\n{inc.log_tail()}")

    async def _freeze(self, rng: random.Random, detail: dict[str, Any]) -> None:
        """SIGSTOP; no ping may arrive while frozen; past the watchdog, kill it as systemd would."""
        inc = self.daemon.current
        hold = rng.uniform(0.3, 2.0 * self.daemon.watchdog_s)
        detail["hold_s"] = round(hold, 3)
        self.daemon.signal(signal.SIGSTOP)
        stopped = time.monotonic()
        await trio.sleep(hold)
        # A datagram sent just before the stop may be read just after it.
        pings = [t for t in inc.notify.times("WATCHDOG", "1") if stopped + 0.1 < t]
        detail["pings_while_frozen"] = len(pings)
        if hold >= self.daemon.watchdog_s:
            detail["outcome"] = "watchdog kill"
            await self.kill_and_restart("freeze (watchdog kill)")
            return
        self.daemon.signal(signal.SIGCONT)
        resumed = time.monotonic()
        detail["outcome"] = "continued"

        async def pinging() -> bool:
            return any(t > resumed for t in inc.notify.times("WATCHDOG", "1"))

        if await poll(pinging, timeout_s=15.0):
            detail["pings_resumed_s"] = round(time.monotonic() - resumed, 3)

    async def _term_drain(self, rng: random.Random, detail: dict[str, Any]) -> None:
        """SIGTERM right after a burst of intents started: the drain must end cleanly."""
        async with trio.open_nursery() as nursery:
            accepted = self._accepted_since(self.work.log.accepted_count)
            nursery.start_soon(self.work.burst, rng.randint(4, 10), rng)
            await poll(accepted, timeout_s=3.0, interval_s=0.002)
            self.daemon.signal(signal.SIGTERM)
            code = await self.daemon.wait_exit(30.0)
            detail["exit_code"] = code
            if code is None:
                await self.kill_daemon()
            else:
                self.work.admin.base_url = None
            await self.start_daemon("term-drain")
        if code != 0:
            raise TortureError(f"SIGTERM during a drain: exit status {code}")

    async def _venue_outage(self, rng: random.Random, detail: dict[str, Any]) -> None:
        down = rng.uniform(1.0, 6.0)
        detail["down_s"] = round(down, 3)
        await self.sim.kill()
        await trio.sleep(down)
        await self.sim.start()
        self.result.sim_restarts += 1

    # -- the disk -------------------------------------------------------------------

    def fill_disk(self) -> int:
        """Fill the store's tmpfs to ENOSPC with a filler file; bytes written."""
        assert self.disk_dir is not None
        self.filler = self.disk_dir / "filler"
        written = 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 1 << 12, 1 << 9):
                chunk = b"\0" * size
                while True:
                    try:
                        written += os.write(fd, chunk)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        return written

    def free_disk(self) -> None:
        if self.filler is not None:
            self.filler.unlink(missing_ok=True)
            self.filler = None

    async def _disk_full(self, rng: random.Random, detail: dict[str, Any]) -> None:
        """The disk fills: new intents are refused clearly, health is unhealthy, then recovery."""
        detail["filled_bytes"] = await trio.to_thread.run_sync(self.fill_disk)
        hold = rng.uniform(1.5, 4.0)
        refusals: dict[str, int] = {}
        health: set[int] = set()
        probes: list[dict[str, str]] = []
        deadline = trio.current_time() + hold
        try:
            while trio.current_time() < deadline:
                body = await self.work.body(rng, "limit-far")
                body["message_id"] = self.work.new_message_id("disk")
                answer = await self.work.admin.request("POST", "/orders", body)
                self.work.log.bodies[body["message_id"]] = body
                if answer.status in (200, 202):
                    self.work.log.note_accepted(
                        body["message_id"], str(answer.body.get("client_order_id"))
                    )
                else:
                    probes.append(body)
                    error = str(answer.body.get("error", answer.body))[:80]
                    refusals[f"{answer.status} {error}"] = (
                        refusals.get(f"{answer.status} {error}", 0) + 1
                    )
                health.add((await self.work.admin.request("GET", "/health")).status)
                await trio.sleep(0.2)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.free_disk)
        detail["refusals"] = refusals
        detail["health_while_full"] = sorted(health)
        freed = time.monotonic()

        async def healthy() -> bool:
            return (await self.work.admin.request("GET", "/health")).status == 200

        if await poll(healthy, timeout_s=30.0, interval_s=0.1):
            detail["healthy_again_s"] = round(time.monotonic() - freed, 3)
        # The refused probes are retried now (same message_id): accepted after recovery.
        async with trio.open_nursery() as nursery:
            for body in probes[:5]:
                nursery.start_soon(self.work.submit, body)
