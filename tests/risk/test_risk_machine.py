"""Model-based test: both risk stages under reserve/commit/rollback/fill/release/halt/resume."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from daemon.model import Side
from daemon.risk import (
    LimitTable,
    PreTradeRisk,
    Reservation,
    ReservationState,
    ReservationStateError,
    RiskBook,
    RiskDecision,
    RiskLimits,
    TradingState,
    TradingStates,
)
from tests.helpers.clock import FakeClock
from tests.helpers.risk import BTC, D, request

ETH = attrs.evolve(BTC, symbol="ETHUSDT")
SYMBOLS = {"BTCUSDT": BTC, "ETHUSDT": ETH}
ACCOUNTS = ("a", "b")
WINDOW_S = 5.0
LIMITS = {
    "a": RiskLimits(
        max_orders_per_window=3,
        order_window_s=WINDOW_S,
        max_order_notional=D(400),
        max_open_orders=3,
        max_position_qty=D(6),
    ),
    "b": RiskLimits(
        max_orders_per_window=4,
        order_window_s=WINDOW_S,
        max_order_notional=D(300),
        max_open_orders=2,
        max_position_qty=D(4),
        position_qty_by_symbol={"ETHUSDT": D(2)},
    ),
}
SEVERITY = {"ACTIVE": 0, "REDUCING": 1, "HALTED": 2}


def fmt(value: Decimal) -> str:
    return format(value.normalize(), "f") if value != 0 else "0"


@attrs.define
class ModelOrder:
    account: str
    symbol: str
    side: Side
    qty: Decimal
    at: float
    executed: Decimal = Decimal(0)
    state: str = "RESERVED"


class RiskMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.states = TradingStates()
        self.book = RiskBook(LimitTable(default=LIMITS["a"], accounts=LIMITS), clock=self.clock)
        self.risk = PreTradeRisk(self.book, self.states)
        self.count = 0
        # The model: plain dictionaries, recomputed from first principles.
        self.global_state = "ACTIVE"
        self.account_state: dict[str, str] = {}
        self.positions: dict[tuple[str, str], Decimal] = {}
        self.orders: dict[int, ModelOrder] = {}  # live (RESERVED/COMMITTED) and rate-only
        self.handles: dict[int, Reservation] = {}
        self.rate_slots: dict[str, list[tuple[float, int]]] = {a: [] for a in ACCOUNTS}

    # ------------------------------------------------------------------ model helpers

    def live(self, *states: str) -> list[int]:
        return sorted(i for i, o in self.orders.items() if o.state in states)

    def open_qty(self, account: str, symbol: str, side: Side) -> Decimal:
        return sum(
            (
                o.qty - o.executed
                for o in self.orders.values()
                if o.state in ("RESERVED", "COMMITTED")
                and (o.account, o.symbol, o.side) == (account, symbol, side)
            ),
            Decimal(0),
        )

    def expected_codes(
        self, account: str, symbol: str, side: Side, qty: Decimal, price: Decimal
    ) -> list[str]:
        out: list[str] = []
        if price % Decimal("0.01"):
            out.append("PRICE_TICK")
        own = self.account_state.get(account, "ACTIVE")
        if self.global_state == "HALTED":
            out.append("TRADING_HALTED")
        if own == "HALTED":
            out.append("ACCOUNT_HALTED")
        position = self.positions.get((account, symbol), Decimal(0))
        buys = self.open_qty(account, symbol, Side.BUY)
        sells = self.open_qty(account, symbol, Side.SELL)
        halted = "HALTED" in (self.global_state, own)
        if not halted and "REDUCING" in (self.global_state, own):
            if side is Side.BUY:
                ok = position < 0 and position + buys + qty <= 0
            else:
                ok = position > 0 and position - sells - qty >= 0
            if not ok:
                out.append("REDUCE_ONLY_VIOLATION")
        limits = LIMITS[account]
        now = self.clock.now
        in_window = sum(1 for at, _ in self.rate_slots[account] if at + WINDOW_S > now)
        assert limits.max_orders_per_window is not None
        if in_window >= limits.max_orders_per_window:
            out.append("ORDER_RATE_EXCEEDED")
        assert limits.max_order_notional is not None
        if qty * price > limits.max_order_notional:
            out.append("ORDER_NOTIONAL_ABOVE_MAX")
        open_orders = sum(
            1
            for o in self.orders.values()
            if o.account == account and o.state in ("RESERVED", "COMMITTED")
        )
        assert limits.max_open_orders is not None
        if open_orders >= limits.max_open_orders:
            out.append("OPEN_ORDERS_EXCEEDED")
        max_position = limits.position_qty_by_symbol.get(symbol, limits.max_position_qty)
        assert max_position is not None
        extent = position + buys + qty if side is Side.BUY else sells + qty - position
        if extent > max_position:
            out.append("POSITION_LIMIT_EXCEEDED")
        return out

    def move(self, order: ModelOrder, delta: Decimal) -> None:
        key = (order.account, order.symbol)
        signed = delta if order.side is Side.BUY else -delta
        self.positions[key] = self.positions.get(key, Decimal(0)) + signed

    # ------------------------------------------------------------------ rules

    @initialize(
        positions=st.lists(st.integers(-3, 3), min_size=4, max_size=4),
        reducing=st.sampled_from([None, "a", "b", "all"]),
    )
    def start(self, positions: list[int], reducing: str | None) -> None:
        pairs = [(a, s) for a in ACCOUNTS for s in sorted(SYMBOLS)]
        for (account, symbol), position in zip(pairs, positions, strict=True):
            self.set_position(account, symbol, position)
        if reducing is not None:
            self.switch(None if reducing == "all" else reducing, TradingState.REDUCING)

    @rule(
        account=st.sampled_from(ACCOUNTS),
        symbol=st.sampled_from(sorted(SYMBOLS)),
        side=st.sampled_from(Side),
        qty=st.integers(1, 4),
        price=st.sampled_from(["50", "100", "150", "100.005"]),
    )
    def submit(self, account: str, symbol: str, side: Side, qty: int, price: str) -> None:
        self.count += 1
        expected = self.expected_codes(account, symbol, side, D(qty), D(price))
        req = request(
            account,
            symbol=symbol,
            side=side.value,
            qty=str(qty),
            price=price,
            coid=f"o{self.count}",
        )
        result = self.risk.submit(req, SYMBOLS[symbol])
        if expected:
            assert isinstance(result, RiskDecision)
            assert list(result.codes) == expected
            return
        assert isinstance(result, Reservation), result.codes
        assert result.state is ReservationState.RESERVED
        self.orders[result.id] = ModelOrder(account, symbol, side, D(qty), self.clock.now)
        self.handles[result.id] = result
        self.rate_slots[account].append((self.clock.now, result.id))

    @rule(pick=st.integers(0, 50), twice=st.booleans())
    def commit(self, pick: int, twice: bool) -> None:
        ids = self.live("RESERVED")
        if not ids:
            return
        rid = ids[pick % len(ids)]
        self.handles[rid].commit()
        if twice:
            self.handles[rid].commit()
        self.orders[rid].state = "COMMITTED"

    @rule(pick=st.integers(0, 50), twice=st.booleans())
    def rollback(self, pick: int, twice: bool) -> None:
        ids = self.live("RESERVED")
        if not ids:
            return
        rid = ids[pick % len(ids)]
        self.handles[rid].rollback()
        if twice:
            self.handles[rid].rollback()
        del self.orders[rid]
        order_account = self.handles.pop(rid).account
        self.rate_slots[order_account] = [
            slot for slot in self.rate_slots[order_account] if slot[1] != rid
        ]

    @rule(pick=st.integers(0, 50))
    def illegal_transitions_change_nothing(self, pick: int) -> None:
        ids = self.live("RESERVED", "COMMITTED")
        if not ids:
            return
        rid = ids[pick % len(ids)]
        handle = self.handles[rid]
        before = self.book.snapshot()
        with pytest.raises(ReservationStateError):
            if handle.state is ReservationState.RESERVED:
                handle.release(filled_qty=D(0))
            else:
                handle.rollback()
        assert self.book.snapshot() == before

    @rule(pick=st.integers(0, 50), pct=st.integers(0, 100), end=st.booleans())
    def fill_or_release(self, pick: int, pct: int, end: bool) -> None:
        ids = self.live("COMMITTED")
        if not ids:
            return
        rid = ids[pick % len(ids)]
        order = self.orders[rid]
        executed = max(order.executed, (order.qty * pct / 100).quantize(D("0.01")))
        self.move(order, executed - order.executed)
        order.executed = executed
        if end:
            self.handles[rid].release(filled_qty=executed)
            order.state = "RELEASED"
            del self.handles[rid]
        else:
            self.handles[rid].record_fill(executed)

    @rule(advance=st.sampled_from([0.25, 1.0, 2.5, 5.0]))
    def advance_clock(self, advance: float) -> None:
        self.clock.now += advance

    @rule(
        account=st.one_of(st.none(), st.sampled_from(ACCOUNTS)),
        state=st.sampled_from([*TradingState, TradingState.ACTIVE, TradingState.REDUCING]),
    )
    def switch(self, account: str | None, state: TradingState) -> None:
        if state is TradingState.HALTED:
            self.states.halt(account)
        elif state is TradingState.REDUCING:
            self.states.reduce_only(account)
        else:
            self.states.resume(account)
        if account is None:
            self.global_state = state.value
        else:
            self.account_state[account] = state.value

    @rule(
        account=st.sampled_from(ACCOUNTS),
        symbol=st.sampled_from(sorted(SYMBOLS)),
        position=st.integers(-3, 3),
    )
    def set_position(self, account: str, symbol: str, position: int) -> None:
        self.book.set_position(account, symbol, D(position))
        self.positions[(account, symbol)] = D(position)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def book_matches_model(self) -> None:
        now = self.clock.now
        expected: dict[str, Any] = {}
        for account in ACCOUNTS:
            symbols = {}
            for symbol in sorted(SYMBOLS):
                row = (
                    self.positions.get((account, symbol), Decimal(0)),
                    self.open_qty(account, symbol, Side.BUY),
                    self.open_qty(account, symbol, Side.SELL),
                )
                if any(row):
                    symbols[symbol] = {
                        "position": fmt(row[0]),
                        "open_buy_qty": fmt(row[1]),
                        "open_sell_qty": fmt(row[2]),
                    }
            times = [at for at, _ in self.rate_slots[account] if at + WINDOW_S > now]
            open_orders = len(
                [
                    o
                    for o in self.orders.values()
                    if o.account == account and o.state in ("RESERVED", "COMMITTED")
                ]
            )
            if open_orders or times or symbols:
                expected[account] = {
                    "open_orders": open_orders,
                    "order_times": times,
                    "symbols": symbols,
                }
        assert self.book.snapshot() == expected

    @invariant()
    def effective_states_match(self) -> None:
        for account in ACCOUNTS:
            own = self.account_state.get(account, "ACTIVE")
            strictest = max(self.global_state, own, key=SEVERITY.__getitem__)
            assert self.states.effective(account).value == strictest

    @invariant()
    def committed_index_matches(self) -> None:
        for rid in self.live("COMMITTED"):
            handle = self.handles[rid]
            assert self.book.find(handle.client_order_id) is handle


RiskMachine.TestCase.settings = settings(max_examples=120, stateful_step_count=40, deadline=None)
TestRiskMachine = RiskMachine.TestCase
