"""A hypothesis state machine over the matching engine.

Random real orders (LIMIT GTC/IOC/FOK, MARKET by quantity or quote, LIMIT_MAKER),
cancels, and synthetic market flow, checked after every step:

* every asset is conserved over all accounts (fees and the market included);
* no real account ever has a negative free or locked balance;
* what an account has locked is exactly what its open orders hold, and an open
  order holds exactly what it may still spend (price x remaining, or remaining);
* the fees account holds exactly the commissions charged, each at its rate;
* no order fills beyond its quantity; FILLED means fully filled;
* the resting book is never crossed; trade ids and update ids are sequential.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from daemon.venues.sim.accounts import FEES_ACCOUNT, MARKET_ACCOUNT, Ledger
from daemon.venues.sim.config import SymbolConfig
from daemon.venues.sim.matching import MatchingEngine
from daemon.venues.sim.orderbook import BookChange, NewOrder, Trade
from daemon.venues.sim.protocol import ApiError

SYMBOL = SymbolConfig(
    symbol="BTCUSDT",
    base_asset="BTC",
    quote_asset="USDT",
    start_price=Decimal("10000"),
    tick_size=Decimal("0.5"),
    min_price=Decimal("0.5"),
    max_price=Decimal("100000"),
    step_size=Decimal("0.001"),
    min_qty=Decimal("0.001"),
    max_qty=Decimal("100"),
    min_notional=Decimal("1"),
    max_notional=Decimal("1000000"),
)
ACCOUNTS = ("alice", "bob")
ALLOWED_REJECTS = {-1013, -2010}

prices = st.integers(19_980, 20_020).map(lambda ticks: Decimal(ticks) * Decimal("0.5"))
quantities = st.integers(1, 400).map(lambda steps: Decimal(steps) * Decimal("0.001"))
sides = st.sampled_from(("BUY", "SELL"))
client_ids = st.sampled_from(("a", "b", "c", None))


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger()
        for account in ACCOUNTS:
            self.ledger.open_account(
                account, "secret", {"BTC": Decimal("2"), "USDT": Decimal("30000")}
            )
        self.engine = MatchingEngine(
            [SYMBOL], self.ledger, maker_rate=Decimal("0.001"), taker_rate=Decimal("0.002")
        )
        self.initial = self.ledger.totals()
        self.now = 0
        self.trade_ids: list[int] = []
        self.update_ids: list[int] = []
        self.engine.trade_listeners.append(self._trade)
        self.engine.book_listeners.append(self._book)

    def _trade(self, trade: Trade) -> None:
        self.trade_ids.append(trade.id)
        assert trade.qty > 0 and trade.quote_qty == trade.price * trade.qty

    def _book(self, change: BookChange) -> None:
        self.update_ids.append(change.update_id)

    def _tick(self) -> int:
        self.now += 1
        return self.now

    @rule(
        account=st.sampled_from(ACCOUNTS),
        side=sides,
        kind=st.sampled_from(("LIMIT", "LIMIT_MAKER", "MARKET", "MARKET_QUOTE")),
        tif=st.sampled_from(("GTC", "IOC", "FOK")),
        price=prices,
        qty=quantities,
        quote=st.integers(1, 3000).map(Decimal),
        client_id=client_ids,
    )
    def place(
        self,
        account: str,
        side: str,
        kind: str,
        tif: str,
        price: Decimal,
        qty: Decimal,
        quote: Decimal,
        client_id: str | None,
    ) -> None:
        if kind == "LIMIT":
            request = NewOrder("BTCUSDT", side, "LIMIT", qty, None, price, tif, client_id)  # type: ignore[arg-type]
        elif kind == "LIMIT_MAKER":
            request = NewOrder("BTCUSDT", side, "LIMIT_MAKER", qty, None, price, None, client_id)  # type: ignore[arg-type]
        elif kind == "MARKET":
            request = NewOrder("BTCUSDT", side, "MARKET", qty, None, None, None, client_id)  # type: ignore[arg-type]
        else:
            request = NewOrder("BTCUSDT", side, "MARKET", None, quote, None, None, client_id)  # type: ignore[arg-type]
        try:
            order = self.engine.place(account, request, now_ms=self._tick())
        except ApiError as exc:
            assert exc.code in ALLOWED_REJECTS, exc
            return
        assert sum(f.qty for f in order.fills) == order.executed_qty

    @rule(account=st.sampled_from(ACCOUNTS), client_id=st.sampled_from(("a", "b", "c")))
    def cancel(self, account: str, client_id: str) -> None:
        try:
            order = self.engine.cancel(
                account, "BTCUSDT", client_order_id=client_id, now_ms=self._tick()
            )
        except ApiError as exc:
            assert exc.code == -2011
            return
        assert order.status == "CANCELED" and order.locked == 0

    @rule(side=sides, price=st.one_of(st.none(), prices), qty=quantities)
    def market_flow(self, side: str, price: Decimal | None, qty: Decimal) -> None:
        self.engine.place_synthetic("BTCUSDT", side, qty, price=price, now_ms=self._tick())  # type: ignore[arg-type]

    @rule(side=sides, index=st.integers(0, 5))
    def market_withdraws(self, side: str, index: int) -> None:
        mine = self.engine.synthetic_orders("BTCUSDT", side)  # type: ignore[arg-type]
        if mine:
            victim = mine[index % len(mine)]
            self.engine.cancel_synthetic("BTCUSDT", victim.order_id, now_ms=self._tick())

    @invariant()
    def conserved(self) -> None:
        totals = self.ledger.totals()
        for asset, amount in self.initial.items():
            assert totals.get(asset, Decimal(0)) == amount, asset

    @invariant()
    def no_negative_real_balances(self) -> None:
        for account in (*ACCOUNTS, FEES_ACCOUNT):
            for asset, balance in self.ledger.balances(account).items():
                assert balance.free >= 0, (account, asset, balance)
                assert balance.locked >= 0, (account, asset, balance)

    @invariant()
    def locked_matches_open_orders(self) -> None:
        for account in ACCOUNTS:
            held = {"BTC": Decimal(0), "USDT": Decimal(0)}
            for order in self.engine.all_orders(account):
                assert Decimal(0) <= order.executed_qty <= order.orig_qty
                assert order.status != "FILLED" or order.executed_qty == order.orig_qty
                if order.is_open:
                    held["USDT" if order.side == "BUY" else "BTC"] += order.locked
                else:
                    assert order.locked == 0
            balances = self.ledger.balances(account)
            for asset, amount in held.items():
                locked = balances[asset].locked if asset in balances else Decimal(0)
                assert locked == amount, (account, asset)

    @invariant()
    def open_orders_lock_exactly_what_they_may_spend(self) -> None:
        for account in ACCOUNTS:
            for order in self.engine.open_orders(account, "BTCUSDT", now_ms=self.now):
                expected = order.price * order.remaining if order.side == "BUY" else order.remaining
                assert order.locked == expected, order

    @invariant()
    def fees_are_the_commissions_charged(self) -> None:
        charged = {"BTC": Decimal(0), "USDT": Decimal(0)}
        for account in ACCOUNTS:
            for t in self.engine.account_trades(account, "BTCUSDT"):
                rate = Decimal("0.001") if t.is_maker else Decimal("0.002")
                amount = t.qty if t.is_buyer else t.quote_qty
                assert t.commission == (amount * rate).quantize(
                    Decimal("0.00000001"), rounding=ROUND_DOWN
                )
                assert t.commission_asset == ("BTC" if t.is_buyer else "USDT")
                charged[t.commission_asset] += t.commission
        fees = self.ledger.balances(FEES_ACCOUNT)
        for asset, amount in charged.items():
            assert (fees[asset].free if asset in fees else Decimal(0)) == amount

    @invariant()
    def book_not_crossed_and_ids_sequential(self) -> None:
        bid, ask = self.engine.best_bid("BTCUSDT"), self.engine.best_ask("BTCUSDT")
        assert bid is None or ask is None or bid < ask
        assert self.trade_ids == list(range(1, len(self.trade_ids) + 1))
        assert self.update_ids == list(range(1, len(self.update_ids) + 1))
        assert self.engine.update_id("BTCUSDT") == len(self.update_ids)
        assert MARKET_ACCOUNT not in ACCOUNTS


EngineMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestEngine = EngineMachine.TestCase
