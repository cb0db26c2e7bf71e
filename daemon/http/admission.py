"""Who gets a connection: the server's limits, its two connection pools and its refusal log.

Admission, in order: the general pool (``max_connections``, at most
``max_connections_per_client`` per peer address when set); when it is full
and ``evict_waiting`` is on, the connection that has waited longest for a
request head is evicted to make room; else the reserve
(``reserved_connections``, with the same eviction), where only ``priority``
requests are served and the whole request must arrive within the head
deadline; else ``503`` without parsing (:mod:`daemon.http.server`).

:class:`ServerLimits` holds every limit of one server, checked;
:class:`ConnectionPool` admits, evicts and releases connections (a
:class:`Slot` each); :class:`RejectLog` counts refusals and evictions and
logs them as one summary line per interval, not one each
(:func:`flush_pressure` writes the last line of a burst).
"""

from __future__ import annotations

import logging
import math

import attrs
import trio

__all__ = ["LINGER_S", "ConnectionPool", "RejectLog", "ServerLimits", "Slot", "flush_pressure"]

log = logging.getLogger("tradingd.http")

#: Longest we keep reading (and discarding) from a client after answering with
#: ``Connection: close``, so that the kernel does not reset the connection (and
#: destroy our answer) because of unread request bytes.
LINGER_S = 1.0


@attrs.frozen(kw_only=True)
class ServerLimits:
    """The checked limits of one server.

    No field has a default: :func:`serve_http` passes every one (its keyword
    arguments hold the server's defaults; the admin API passes its limits
    from ``[admin]``).
    """

    max_connections: int
    request_timeout_s: float
    idle_timeout_s: float
    max_body_bytes: int
    max_header_bytes: int
    head_timeout_s: float
    max_connections_per_client: int
    reserved_connections: int
    evict_waiting: bool
    reject_log_interval_s: float

    def __attrs_post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {self.max_connections}")
        for name in (
            "request_timeout_s",
            "idle_timeout_s",
            "head_timeout_s",
            "reject_log_interval_s",
        ):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")
        if self.max_body_bytes < 0:
            raise ValueError(f"max_body_bytes must be >= 0, got {self.max_body_bytes}")
        if self.max_header_bytes < 256:
            raise ValueError(f"max_header_bytes must be >= 256, got {self.max_header_bytes}")
        for name in ("max_connections_per_client", "reserved_connections"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def linger_s(self) -> float:
        return min(LINGER_S, self.request_timeout_s)

    @property
    def head_s(self) -> float:
        """The deadline for a request head: never longer than the whole request's."""
        return min(self.head_timeout_s, self.request_timeout_s)


@attrs.define(eq=False)
class Slot:
    """One admitted connection: which pool it is in, and whether it may be evicted now.

    ``waiting_since`` is set while the connection waits for (or reads) a
    request head — a new connection, a kept-alive one between requests, or a
    reserve connection until its whole request is in — and ``None`` while a
    request is being served. Only waiting connections are ever evicted.
    """

    host: str
    reserve: bool
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    waiting_since: float | None = None
    released: bool = False


class RejectLog:
    """Counts refused and evicted connections; one summary line per interval, not one each."""

    def __init__(self, interval_s: float, max_connections: int, name: str) -> None:
        self.interval_s = interval_s
        self.name = name
        self.max_connections = max_connections
        self.refused = 0
        self.evicted = 0
        self.reserved = 0
        self._since: float | None = None

    def count(self, kind: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        now = trio.current_time()
        if self._since is None:
            self._since = now
        elif now - self._since >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        """Log the counts since the last line, if any (called by the count and a timer)."""
        if not (self.refused or self.evicted or self.reserved):
            self._since = None
            return
        span = trio.current_time() - (self._since or trio.current_time())
        log.warning(
            "%s under connection pressure in the last %.1f s (max_connections=%d): "
            "%d connection(s) refused with 503, %d waiting connection(s) evicted, "
            "%d non-priority request(s) refused from the reserve",
            self.name,
            span,
            self.max_connections,
            self.refused,
            self.evicted,
            self.reserved,
        )
        self.refused = self.evicted = self.reserved = 0
        self._since = None


class ConnectionPool:
    """The general pool and the reserve of one server: which connections hold a slot.

    :meth:`admit` gives a new connection a :class:`Slot` (evicting the
    longest-waiting connection of a full pool when ``evict_waiting`` is on),
    or ``None`` when there is no room; :meth:`release` frees it again.
    """

    def __init__(self, limits: ServerLimits, pressure: RejectLog) -> None:
        self._limits = limits
        self.pressure = pressure
        self._slots: set[Slot] = set()
        self._general = 0
        self._reserve = 0
        self._per_client: dict[str, int] = {}

    def admit(self, host: str) -> Slot | None:
        """A slot for a new connection from ``host``, in the general pool or the reserve."""
        limits = self._limits
        per_client = limits.max_connections_per_client
        within_client = not per_client or self._per_client.get(host, 0) < per_client
        if within_client and (self._general < limits.max_connections or self._evict(reserve=False)):
            return self._take(host, reserve=False)
        if self._reserve < limits.reserved_connections or (
            limits.reserved_connections and self._evict(reserve=True)
        ):
            return self._take(host, reserve=True)
        return None

    def _take(self, host: str, *, reserve: bool) -> Slot:
        slot = Slot(host, reserve, waiting_since=trio.current_time())
        self._slots.add(slot)
        if reserve:
            self._reserve += 1
        else:
            self._general += 1
            self._per_client[host] = self._per_client.get(host, 0) + 1
        return slot

    def release(self, slot: Slot) -> None:
        """Free ``slot`` (idempotent: an evicted slot is released before its task ends)."""
        if slot.released:
            return
        slot.released = True
        self._slots.discard(slot)
        if slot.reserve:
            self._reserve -= 1
        else:
            self._general -= 1
            left = self._per_client[slot.host] - 1
            if left:
                self._per_client[slot.host] = left
            else:
                del self._per_client[slot.host]

    def _evict(self, *, reserve: bool) -> bool:
        """Close the longest-waiting connection of a pool; ``False`` if none is waiting."""
        if not self._limits.evict_waiting:
            return False
        waiting = [s for s in self._slots if s.reserve == reserve and s.waiting_since is not None]
        if not waiting:
            return False
        victim = min(waiting, key=lambda s: s.waiting_since or 0.0)
        victim.scope.cancel()
        self.release(victim)  # its place is taken now, before the task notices
        self.pressure.count("evicted")
        return True


async def flush_pressure(pressure: RejectLog) -> None:
    """Log the last counts of a burst of refusals even when no new one comes."""
    while True:
        await trio.sleep(pressure.interval_s)
        pressure.flush()
