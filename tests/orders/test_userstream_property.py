"""Property: the stream, polling and reconciliation overlap without double-counting.

One venue order lives at the :class:`~tests.helpers.model_venue.ModelVenue`
(placed, half filled, filled, canceled or expired, in a drawn order) while
one real :class:`~daemon.orders.ledger.OrderLedger` over a real SQLite store
hears about it from every side at once, in drawn interleavings:

* its user data stream events (the venue's ``executionReport`` log) through the
  real :class:`~daemon.orders.userstream.UserStreamApplier` — any event
  published so far, so they come duplicated and out of order;
* polled reports (the order as the venue answered about it at some earlier
  moment) through the real :meth:`Executor.apply_observation
  <daemon.orders.executor.Executor.apply_observation>`, as the open-order poll
  applies them;
* reconciliation: a status refresh of an open order
  (:meth:`~daemon.orders.executor.Executor.refresh`) or the query of an UNKNOWN
  one (:meth:`~daemon.orders.executor.Executor.resolve`), answered from the
  venue's truth now.

Up to three of them run concurrently (the venue's calls are checkpoints, so
their steps interleave on the order's lock). The send's outcome is drawn too:
answered (the order ACCEPTED, or FILLED with its fills), ambiguous (UNKNOWN), or
a send section that overran its deadline (left SENDING until reconciliation
settles it, while the stream's events for it are applied).

After every batch: every stored fill is one of the venue's trades (its
quantity and price), the stored position is the signed sum of the stored
fills, and the executed quantity is at most the venue's and at most what the
stored fills add up to. At the end, once every event has been applied at
least once: the stored fills are exactly the venue's trades, the executed
quantity, state and position (stored and in the risk book) are the venue's,
the state history is legal, and no report contradicted the record.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Final

import attrs
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.config import OrdersConfig
from daemon.model.instruments import ExchangeInfo
from daemon.model.orders import OrderReport, OrderType, Side, TimeInForce
from daemon.orders.executor import OPEN_STATES, Executor
from daemon.orders.intent import OrderIntent
from daemon.orders.ledger import OrderLedger, OrderVenue
from daemon.orders.records import IntentRecord
from daemon.orders.state import TRANSITIONS, OrderState, from_order_report
from daemon.orders.userstream import StreamWitness, UserStreamApplier
from daemon.risk.book import RiskBook
from daemon.risk.limits import LimitTable, RiskLimits
from daemon.risk.pretrade import PreTradeRisk
from daemon.risk.state import TradingStates
from daemon.store import SqliteStore, inline_runner
from daemon.store.orders import OrderStore
from tests.helpers.model_venue import ModelVenue, VenueOrder

VENUE: Final = "model"
ACCOUNT: Final = "main"
SYMBOL: Final = "BTCUSDT"
QUANTITY: Final = Decimal("0.010")
SETTINGS: Final = OrdersConfig(query_lag_s=1.0, unknown_retry_s=0.5)
S = OrderState

#: A tmpfs keeps the FULL-synchronous commits cheap.
_TMP_ROOT: Final = "/dev/shm" if Path("/dev/shm").is_dir() else None


class _Venues:
    """:class:`~daemon.orders.ledger.VenueAccess` over the model venue (always up)."""

    def __init__(self, venue: ModelVenue) -> None:
        self.venue = venue

    def client(self, venue: str) -> OrderVenue | None:
        return self.venue

    async def wait_client(self, venue: str) -> OrderVenue:
        await trio.lowlevel.checkpoint()
        return self.venue

    def exchange_info(self, venue: str) -> ExchangeInfo | None:
        return None

    def recv_window_ms(self, venue: str) -> int:
        return 5000


@attrs.frozen
class Step:
    """One thing that happens: the venue acts, or the ledger hears about the order.

    ``kind``: ``venue`` (``what``: fill_part, fill, cancel or expire the order, if
    still open), ``event`` (apply the stream event number ``pick`` of those
    published so far), ``poll`` (apply the report of the ``pick``-th earlier
    moment) or ``reconcile`` (query the venue now: refresh or resolve).
    """

    kind: str
    pick: int = 0
    what: str = ""


#: What the venue does to the order (partial fills most often, so that it has trades).
VENUE_ACTIONS = ["fill_part", "fill_part", "fill_part", "fill", "cancel", "expire"]
STEPS = st.one_of(
    st.builds(Step, st.just("venue"), st.just(0), st.sampled_from(VENUE_ACTIONS)),
    st.builds(Step, st.just("venue"), st.just(0), st.sampled_from(VENUE_ACTIONS)),
    st.builds(Step, st.just("event"), st.integers(0, 30)),
    st.builds(Step, st.just("event"), st.integers(0, 30)),
    st.builds(Step, st.just("poll"), st.integers(0, 30)),
    st.builds(Step, st.just("reconcile")),
)
#: Batches of steps run concurrently.
BATCHES = st.lists(st.lists(STEPS, min_size=1, max_size=3), min_size=1, max_size=12)


class Rig:
    """The venue, the ledger over its store, the executor and the stream's applier."""

    def __init__(self, store: OrderStore) -> None:
        self.venue = ModelVenue(VENUE)
        self.store = store
        limits = LimitTable(default=RiskLimits(max_orders_per_window=None))
        book = RiskBook(limits, clock=trio.current_time)
        self.ledger = OrderLedger(store, PreTradeRisk(book, TradingStates()), None)
        enabled = trio.Event()
        enabled.set()
        self.executor = Executor(
            self.ledger, _Venues(self.venue), SETTINGS, sending_enabled=enabled
        )
        self.applier = UserStreamApplier(VENUE, self.ledger, self.executor, StreamWitness(VENUE))
        #: The order as the venue answered about it at each moment so far (polls).
        self.polls: list[OrderReport] = []
        self.applied: set[int] = set()
        self.coid = ""

    @property
    def order(self) -> VenueOrder:
        [order] = self.venue.orders.values()
        return order

    async def place(self, type: OrderType, side: Side, outcome: str) -> None:
        """Record the intent SENDING, place it at the venue, persist the answer or UNKNOWN,
        or leave it SENDING as a send section that overran its deadline does."""
        limit = type is OrderType.LIMIT
        intent = OrderIntent.create(
            message_id="m1",
            account=ACCOUNT,
            symbol=SYMBOL,
            side=side,
            type=type,
            quantity=QUANTITY,
            price=Decimal("29000.00") if limit else None,
            time_in_force=TimeInForce.GTC if limit else None,
        )
        record = IntentRecord.from_intent(intent, venue=VENUE)
        self.coid = record.client_order_id
        await self.store.record_intents([record], sending={self.coid})
        await self.ledger.load()
        sending = self.ledger.get(self.coid)
        assert sending is not None and sending.state is S.SENDING
        report = await self.venue.new_order(sending.to_intent().to_new_order())
        self.polls.append(report)
        async with self.ledger.lock(self.coid):
            if outcome == "answered":
                await self.ledger.apply_report(sending, report, reason="venue answered new order")
            elif outcome == "unknown":
                await self.ledger.mark_unknown(sending, "VenueOutcomeUnknownError: HTTP 503")
            else:
                self.executor.stuck.add(self.coid)  # the section overran: SENDING, stuck

    async def run(self, step: Step) -> None:
        if step.kind == "venue":
            self._venue_acts(step.what)
        elif step.kind == "event":
            log = self.venue.stream.log
            index = step.pick % len(log)
            self.applied.add(index)
            await self.applier.apply(log[index])
        elif step.kind == "poll":
            record = self.ledger.get(self.coid)
            if record is not None:
                report = self.polls[step.pick % len(self.polls)]
                await self.executor.apply_observation(record, report, reason="open-order poll")
        else:
            record = self.ledger.get(self.coid)
            if record is not None and record.state is S.SENDING:
                await self.executor.settle_stuck()
            elif record is not None and record.state is S.UNKNOWN:
                await self.executor.resolve(self.coid)
            elif record is not None and record.state in OPEN_STATES:
                await self.executor.refresh(self.coid)

    def _venue_acts(self, what: str) -> None:
        order = self.order
        if not order.is_open:
            return
        if what == "cancel":
            self.venue.cancel_outside(order.order_id)
        elif what == "expire":
            self.venue.expire_outside(order.order_id)
        else:
            half = ((order.quantity - order.executed) / 2).quantize(Decimal("0.001"))
            self.venue.fill(order.order_id, half if what == "fill_part" and half > 0 else None)
        self.polls.append(self.venue.report(order))

    # ------------------------------------------------------------------ checks

    async def stored(self) -> tuple[IntentRecord, dict[int, tuple[Decimal, Decimal]], Decimal]:
        record = await self.store.get(self.coid)
        assert record is not None
        fills = await self.store.fills_for(self.coid)
        by_trade = {f.trade_id: (f.quantity, f.price) for f in fills}
        assert len(by_trade) == len(fills), f"a trade stored twice: {fills}"
        position = (await self.store.positions(ACCOUNT)).get((ACCOUNT, SYMBOL), Decimal(0))
        return record, by_trade, position

    def _signed(self, quantity: Decimal) -> Decimal:
        return quantity if self.order.side is Side.BUY else -quantity

    async def check_safety(self) -> None:
        record, fills, position = await self.stored()
        trades = {
            t.trade_id: (t.quantity, t.price) for t in self.venue.trades_of(self.order.order_id)
        }
        assert fills.items() <= trades.items(), f"stored {fills}, venue trades {trades}"
        stored = sum((q for q, _ in fills.values()), Decimal(0))
        assert position == self._signed(stored), (position, fills)
        assert record.executed_qty <= self.order.executed, (record, self.order)
        assert record.executed_qty <= stored, (record, fills)
        assert self.ledger.contradictions == 0

    async def check_final(self) -> None:
        record, fills, position = await self.stored()
        order = self.order
        trades = {t.trade_id: (t.quantity, t.price) for t in self.venue.trades_of(order.order_id)}
        assert fills == trades
        assert record.executed_qty == order.executed, (record, order)
        assert record.state is from_order_report(self.venue.report(order)), (record, order)
        assert record.venue_order_id == order.order_id
        assert position == self._signed(order.executed)
        assert self.ledger.risk.book.position(ACCOUNT, SYMBOL) == position
        history = await self.store.history(self.coid)
        assert history[0].target is S.PENDING
        for before, after in itertools.pairwise(history):
            assert after.source is before.target and after.target in TRANSITIONS[before.target], [
                h.target.value for h in history
            ]
        assert history[-1].target is record.state
        assert self.ledger.contradictions == 0


async def _scenario(
    path: Path,
    type: OrderType,
    side: Side,
    outcome: str,
    batches: list[list[Step]],
    finale: st.DataObject,
) -> None:
    db = await SqliteStore.open(path, runner=inline_runner)
    try:
        rig = Rig(OrderStore(db))
        await rig.place(type, side, outcome)
        await rig.check_safety()
        for batch in batches:
            async with trio.open_nursery() as nursery:
                for step in batch:
                    nursery.start_soon(rig.run, step)
            await rig.check_safety()
        # Every event reaches the ledger at least once, the rest in any order.
        left = [i for i in range(len(rig.venue.stream.log)) if i not in rig.applied]
        for index in finale.draw(st.permutations(left), label="remaining events"):
            await rig.run(Step("event", index))
            await rig.check_safety()
        await rig.check_final()
    finally:
        await db.aclose()


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    type=st.sampled_from([OrderType.LIMIT] * 3 + [OrderType.MARKET]),
    side=st.sampled_from(Side),
    outcome=st.sampled_from(["answered", "unknown", "overran"]),
    batches=BATCHES,
    finale=st.data(),
)
def test_stream_polls_and_reconciliation_end_with_exactly_the_venues_fills(
    type: OrderType, side: Side, outcome: str, batches: list[list[Step]], finale: st.DataObject
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="userstream-property-", dir=_TMP_ROOT))
    try:
        trio.run(_scenario, tmp / "orders.db", type, side, outcome, batches, finale)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
