"""The local book against a model exchange (hypothesis, stateful).

The model is an exchange book whose every change has the next update id,
batched into diff events like Binance's 100 ms stream; events travel through
a lossy wire and the conflating depth queue to the :class:`LocalBook`, and
REST snapshots can be fresh or lag behind. Two properties:

* **safety** — whenever the book says it is in sync, its levels are exactly
  the exchange's book at the book's ``last_update_id``;
* **liveness** — once the wire stops losing events, draining it and taking
  the snapshots the book asks for brings it in sync at the latest update.
"""

from __future__ import annotations

from decimal import Decimal

import trio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from daemon.channels import Overflow, Queues
from daemon.marketdata.book import DepthConflator, LocalBook, UpdateResult
from daemon.model.marketdata import DepthSnapshot, DepthUpdate

V, S = "fake", "BTCUSDT"
Side = dict[Decimal, Decimal]


class BookMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.bids: Side = {}
        self.asks: Side = {}
        self.uid = 100
        self.states: dict[int, tuple[Side, Side]] = {100: ({}, {})}
        self.batch: tuple[int, Side, Side] | None = None
        self.wire: list[DepthUpdate] = []
        queue = Queues().open(
            "depth", 1, overflow=Overflow.CONFLATE, producer="wire", consumer="book"
        )
        self.queue = DepthConflator(queue, [S])
        self.book = LocalBook(V, S)
        self.gaps = 0

    # -- the exchange ---------------------------------------------------------------

    @rule(
        bid=st.booleans(),
        price=st.integers(1, 3),
        quantity=st.integers(0, 3),
        flush=st.booleans(),
    )
    def change_rule(self, bid: bool, price: int, quantity: int, flush: bool) -> None:
        self.change(bid, price, quantity)
        if flush:
            self.flush()

    def change(self, bid: bool, price: int, quantity: int) -> None:
        side = self.bids if bid else self.asks
        p, q = Decimal(price), Decimal(quantity)
        if q:
            side[p] = q
        else:
            side.pop(p, None)
        self.uid += 1
        self.states[self.uid] = (dict(self.bids), dict(self.asks))
        first, bids, asks = self.batch if self.batch else (self.uid, {}, {})
        (bids if bid else asks)[p] = q
        self.batch = (first, bids, asks)

    def flush(self) -> None:
        if self.batch is None:
            return
        first, bids, asks = self.batch
        self.batch = None
        self.wire.append(
            DepthUpdate(
                venue=V,
                symbol=S,
                first_update_id=first,
                final_update_id=self.uid,
                bids=tuple(bids.items()),
                asks=tuple(asks.items()),
                event_time_ms=self.uid,
            )
        )

    # -- the network and the client -------------------------------------------------

    @rule(fates=st.lists(st.booleans(), min_size=1, max_size=4))
    def deliver(self, fates: list[bool]) -> None:
        """The next events in order: delivered (True) or lost on the wire (False)."""
        for delivered in fates:
            if not self.wire:
                return
            event = self.wire.pop(0)
            if delivered:
                self.queue.offer(event)

    @rule(
        changes=st.lists(
            st.tuples(st.booleans(), st.integers(1, 3), st.integers(0, 3)), min_size=1, max_size=4
        ),
        fates=st.lists(st.booleans(), min_size=1, max_size=4),
        lag=st.integers(0, 6),
    )
    def burst(self, changes: list[tuple[bool, int, int]], fates: list[bool], lag: int) -> None:
        """Several events in a row, some lost, conflated before the book takes them."""
        for bid, price, quantity in changes:
            self.change(bid, price, quantity)
            self.flush()
        self.deliver(fates)
        self.snapshot(lag)
        while self.queue.pending():
            self.consume()

    @rule()
    def consume(self) -> None:
        try:
            update = self.queue.take_nowait()
        except trio.WouldBlock:
            return
        if self.book.on_update(update) is UpdateResult.GAP:
            self.gaps += 1

    @rule()
    def reconnect(self) -> None:
        self.wire.clear()  # in flight on the old connection: gone
        self.book.invalidate("reconnect")

    @rule(lag=st.integers(0, 6))
    def snapshot(self, lag: int) -> None:
        if not self.book.needs_snapshot:
            return
        at = max(100, self.uid - lag)  # REST may answer from a slightly older state
        bids, asks = self.states[at]
        self.book.on_snapshot(
            DepthSnapshot(
                venue=V,
                symbol=S,
                last_update_id=at,
                bids=tuple(sorted(bids.items(), reverse=True)),
                asks=tuple(sorted(asks.items())),
            )
        )

    @rule()
    def settle(self) -> None:
        """No more losses: drain everything, snapshot on demand; the book must converge.

        A book in sync but behind (its last event was lost and the snapshot was
        older) only learns so from the next event: the exchange moves once more.
        """
        for _ in range(4):
            self.flush()
            while self.wire:
                self.queue.offer(self.wire.pop(0))
            while self.queue.pending():
                self.consume()
            if self.book.needs_snapshot:
                self.snapshot(0)
            if self.book.in_sync and self.book.last_update_id == self.uid:
                break
            self.change(True, 1, self.uid % 3 + 1)
        assert self.book.in_sync, self.book.reason
        assert self.book.last_update_id == self.uid
        assert self.book.levels() == (self.bids, self.asks)

    # -- the property -----------------------------------------------------------------

    @invariant()
    def in_sync_means_exact(self) -> None:
        if self.book.in_sync:
            assert self.book.last_update_id is not None
            assert self.book.levels() == self.states[self.book.last_update_id]


BookMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None, database=None
)
TestBookAgainstModel = BookMachine.TestCase
