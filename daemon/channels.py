"""The registry of named bounded queues: :class:`Queues`, :class:`Queue`, :class:`Overflow`.

Each hand-off between tasks is a bounded ``trio.open_memory_channel(N)``
with N from config and a declared overflow policy (docs/ARCHITECTURE.md §5
Bounded queues lists every one). A queue opened here, through
:meth:`Queues.open`, carries its contract (producer, consumer, capacity,
:class:`Overflow`) and is shown, with its depth, in ``/status`` and
``/metrics``. Its owner keeps it across restarts of the tasks on either side
and hands each task a *clone* of its end, so a restart of one side does not
close the queue for the other.

Not every queue is built here. The market-data queues are
(``marketdata.NAME.stream``/``trades``/``depth``, opened by
:class:`~daemon.marketdata.service.MarketDataService` in ``Daemon.queues``).
The order pipeline opens its own channels — the entry queue in
:class:`~daemon.orders.entry.Entry`, the per-account queues in
:class:`~daemon.orders.dispatch.Dispatcher` — with the same discipline
(bounded, capacity from ``[orders]``, a declared answer when full) and
reports them through ``OrdersService.status()``/``metrics()`` instead.
"""

from __future__ import annotations

import enum
from typing import Any, Generic, TypeVar

import attrs
import trio

T = TypeVar("T")


class Overflow(enum.Enum):
    """What a producer experiences when the queue is full."""

    #: The producer waits (backpressure). Nothing is ever dropped.
    BLOCK = "block"
    #: Only the latest value per key matters; older ones are replaced (counted).
    CONFLATE = "conflate"


@attrs.define(eq=False)
class Queue(Generic[T]):
    """One declared queue: its ends, its contract and its counters."""

    name: str
    capacity: int
    overflow: Overflow
    producer: str
    consumer: str
    send: trio.MemorySendChannel[T]
    receive: trio.MemoryReceiveChannel[T]
    dropped: int = 0

    def stats(self) -> dict[str, Any]:
        """JSON-able depth and contract, for /status and /metrics."""
        st = self.send.statistics()
        return {
            "name": self.name,
            "depth": st.current_buffer_used,
            "capacity": self.capacity,
            "overflow": self.overflow.value,
            "producer": self.producer,
            "consumer": self.consumer,
            "producers_waiting": st.tasks_waiting_send,
            "consumers_waiting": st.tasks_waiting_receive,
            "dropped": self.dropped,
        }


class Queues:
    """The registry of the daemon's queues."""

    def __init__(self) -> None:
        self._queues: dict[str, Queue[Any]] = {}

    def open(
        self,
        name: str,
        capacity: int,
        *,
        overflow: Overflow,
        producer: str,
        consumer: str,
    ) -> Queue[Any]:
        """Create and register a queue; names are unique, capacity at least 1."""
        if name in self._queues:
            raise ValueError(f"queue {name!r} already exists")
        if capacity < 1:
            # A zero-capacity channel is a rendezvous, not a queue: every hand-off
            # would couple producer and consumer latency. Say it explicitly.
            raise ValueError(f"queue {name!r}: capacity must be >= 1, got {capacity}")
        send, receive = trio.open_memory_channel[Any](capacity)
        queue: Queue[Any] = Queue(name, capacity, overflow, producer, consumer, send, receive)
        self._queues[name] = queue
        return queue

    def remove(self, name: str) -> None:
        """Forget a queue (its owner ended; a new incarnation opens a fresh one)."""
        self._queues.pop(name, None)

    def get(self, name: str) -> Queue[Any]:
        return self._queues[name]

    def snapshot(self) -> list[dict[str, Any]]:
        """Stats of every queue, sorted by name."""
        return [self._queues[n].stats() for n in sorted(self._queues)]
