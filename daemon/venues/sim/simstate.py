"""What of a simulator survives a restart: its state as plain values, whole or as a change.

:mod:`daemon.venues.sim.persist` keeps this in the state file
(``--state-file``); this module knows the simulator's parts. Kept: the
books (every open order, the market's and the clients', with the id
counters and the last price), every order of a real account, the accounts'
trades (``myTrades``), the balances, the audit log, the published trades,
the engine's and the market's random generators, the market's fair prices
and the next executionReport id. Not kept (a restart starts them afresh, as
a venue's restart would): connections, stream subscriptions, user data
stream subscriptions, armed faults, rate-limit windows, the market's
pause, the clock offset, bench runs and depth batches not yet flushed
(update ids go on from the last one: a client resyncs by snapshot).

A *snapshot* (:meth:`Tracker.snapshot`) is the whole state; a *change*
(:meth:`Tracker.change`) is what moved since the previous one: the books
that changed, the id counters, the real orders that changed, the new trades,
account trades and audit records, the balances, the random generators that
moved. :class:`Restored` folds a snapshot and its changes back into one
state and installs it into a freshly built, unseeded simulator.

Everything here reaches into the parts' private fields on purpose: it is
the one place that knows how a part is laid out in memory, so that the
parts themselves keep no persistence code.

Values are plain: dicts, lists, tuples, ints, strings, :class:`~decimal.Decimal`
and the engine's attrs records (:class:`Order`, :class:`Fill`,
:class:`Trade`, :class:`AccountTrade`, :class:`AuditRecord`) — no callbacks,
no Trio objects — so that a restricted unpickler can read them back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

import attrs

from daemon.venues.sim.accounts import MARKET_ACCOUNT, Balance, Ledger
from daemon.venues.sim.audit import AuditLog, AuditRecord
from daemon.venues.sim.config import SimConfig
from daemon.venues.sim.market import MarketGenerator, TradeLog
from daemon.venues.sim.matching import MatchingEngine
from daemon.venues.sim.orderbook import AccountTrade, BookSide, Order, Trade
from daemon.venues.sim.orderchanges import OrderChange
from daemon.venues.sim.userstream import UserStreamHub

__all__ = ["STATE_VERSION", "MismatchError", "Parts", "Restored", "Tracker", "fingerprint"]

#: Version of the state's layout; a file of another version is refused.
STATE_VERSION: Final = 1

OrderKey = tuple[str, int]
#: ``(next_trade_id, update_id, next_order_id, last_price)`` of one book.
Counters = tuple[int, int, int, Decimal | None]


class MismatchError(Exception):
    """The state belongs to another configuration (other symbols or accounts)."""


@attrs.frozen
class Parts:
    """The parts of one simulator whose state is kept."""

    config: SimConfig
    engine: MatchingEngine
    ledger: Ledger
    audit: AuditLog
    trade_logs: Mapping[str, TradeLog]
    market: MarketGenerator
    users: UserStreamHub


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def fingerprint(config: SimConfig) -> dict[str, Any]:
    """What a state file must have been written for: the symbols (with their filters), the keys."""
    return {
        "symbols": [_plain(attrs.asdict(s)) for s in config.symbols],
        "accounts": sorted(a.api_key for a in config.accounts),
    }


def _counters(engine: MatchingEngine) -> dict[str, Counters]:
    return {
        symbol: (book.next_trade_id, book.update_id, book.next_order_id, book.last_price)
        for symbol, book in engine._books.items()
    }


def _open_orders(engine: MatchingEngine, symbol: str) -> list[Order]:
    book = engine._books[symbol]
    return [
        order
        for side in (book.bids, book.asks)
        for level in side.levels.values()
        for order in level
    ]


def _balances(ledger: Ledger) -> dict[str, dict[str, tuple[Decimal, Decimal]]]:
    return {
        account: {asset: (b.free, b.locked) for asset, b in balances.items()}
        for account, balances in ledger._balances.items()
    }


def _last_trade_id(log: TradeLog) -> int | None:
    return log._items[-1].id if len(log) else None


def _market(market: MarketGenerator, since: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The market generator's state; with ``since``, only the symbols whose state moved."""
    symbols = {st.config.symbol: (st.fair, st.rng.getstate()) for st in market._states}
    if since is not None:
        symbols = {s: v for s, v in symbols.items() if since.get(s) != v}
    return {"next": market._next, "events": market.events, "symbols": symbols}


class Tracker:
    """Watches one simulator and says what changed since the last snapshot or change.

    The engine's listeners mark the books and the real orders that moved;
    everything else is compared with what was last written (counters,
    generator states, the ends of the logs), which costs microseconds.
    """

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.seq = 0
        self._dirty_books: set[str] = set()
        self._dirty_orders: dict[OrderKey, Order] = {}
        self._counters: dict[str, Counters] = {}
        self._engine_rng: object = None
        self._audit_seq = 0
        self._execution_id = 0
        self._events = -1
        self._market_symbols: dict[str, Any] = {}
        self._trade_ids: dict[str, int | None] = {}
        self._account_trades: dict[tuple[str, str], int] = {}
        engine = parts.engine
        engine.book_listeners.append(lambda change: self._dirty_books.add(change.symbol))
        engine.trade_listeners.append(lambda trade: self._dirty_books.add(trade.symbol))
        engine.changes.order_listeners.append(self._on_order)

    def _on_order(self, change: OrderChange) -> None:
        order = change.order
        self._dirty_orders[(order.symbol, order.order_id)] = order

    def snapshot(self) -> dict[str, Any]:
        """The whole state (and the starting point of the next :meth:`change`)."""
        p = self.parts
        engine = p.engine
        self._mark_written()
        return {
            "version": STATE_VERSION,
            "fingerprint": fingerprint(p.config),
            "seq": self.seq,
            "counters": self._counters,
            "books": {symbol: _open_orders(engine, symbol) for symbol in engine._books},
            "orders": [o for o in engine._orders.values() if o.account != MARKET_ACCOUNT],
            "account_trades": {k: list(v) for k, v in engine._account_trades.items()},
            "engine_rng": self._engine_rng,
            "balances": _balances(p.ledger),
            "audit_seq": self._audit_seq,
            "audit": list(p.audit._records),
            "trades": {s: log._view(audit=True) for s, log in p.trade_logs.items()},
            "market": _market(p.market),
            "execution_id": self._execution_id,
        }

    def _mark_written(self) -> None:
        p = self.parts
        self._dirty_books.clear()
        self._dirty_orders.clear()
        self._counters = _counters(p.engine)
        self._engine_rng = p.engine._rng.getstate()
        self._audit_seq = p.audit._next_seq
        self._execution_id = p.users.next_execution_id
        self._events = p.market.events
        self._market_symbols = _market(p.market)["symbols"]
        self._trade_ids = {s: _last_trade_id(log) for s, log in p.trade_logs.items()}
        self._account_trades = {k: len(v) for k, v in p.engine._account_trades.items()}

    def change(self) -> dict[str, Any] | None:
        """What changed since the last snapshot or change (``None``: nothing)."""
        p = self.parts
        engine = p.engine
        counters = _counters(engine)
        rng = engine._rng.getstate()
        trade_ids = {s: _last_trade_id(log) for s, log in p.trade_logs.items()}
        if not (
            self._dirty_books
            or self._dirty_orders
            or counters != self._counters
            or rng != self._engine_rng
            or p.audit._next_seq != self._audit_seq
            or p.users.next_execution_id != self._execution_id
            or p.market.events != self._events
            or trade_ids != self._trade_ids
        ):
            return None
        trades: dict[str, list[Trade]] = {}
        for symbol, log in p.trade_logs.items():
            last = self._trade_ids.get(symbol)
            if trade_ids[symbol] != last:
                start = (last + 1) if last is not None else 0
                trades[symbol] = log.from_id(start, len(log), audit=True)
        account_trades: dict[tuple[str, str], list[AccountTrade]] = {}
        if self._dirty_books:
            for key, items in engine._account_trades.items():
                done = self._account_trades.get(key, 0)
                if len(items) > done:
                    account_trades[key] = items[done:]
        audit: list[AuditRecord] = []
        if p.audit._next_seq != self._audit_seq:
            for record in reversed(p.audit._records):
                if record.seq < self._audit_seq:
                    break
                audit.append(record)
            audit.reverse()
        self.seq += 1
        out = {
            "seq": self.seq,
            "counters": counters,
            "books": {symbol: _open_orders(engine, symbol) for symbol in self._dirty_books},
            "orders": [o for key, o in self._dirty_orders.items() if engine._orders.get(key) is o],
            "account_trades": account_trades,
            "engine_rng": rng if rng != self._engine_rng else None,
            "balances": _balances(p.ledger),
            "audit_seq": p.audit._next_seq,
            "audit": audit,
            "trades": trades,
            "market": (
                _market(p.market, self._market_symbols) if p.market.events != self._events else None
            ),
            "execution_id": p.users.next_execution_id,
        }
        self._mark_written()
        return out


class Restored:
    """A snapshot with its changes folded in, ready to :meth:`install`."""

    def __init__(self, snapshot: Mapping[str, Any]) -> None:
        self.seq: int = snapshot["seq"]
        self.fingerprint: dict[str, Any] = snapshot["fingerprint"]
        self.counters: dict[str, Counters] = dict(snapshot["counters"])
        self.books: dict[str, tuple[int, list[Order]]] = {
            s: (self.seq, orders) for s, orders in snapshot["books"].items()
        }
        self.orders: dict[OrderKey, tuple[int, Order]] = {
            (o.symbol, o.order_id): (self.seq, o) for o in snapshot["orders"]
        }
        self.account_trades: dict[tuple[str, str], list[AccountTrade]] = {
            k: list(v) for k, v in snapshot["account_trades"].items()
        }
        self.engine_rng: Any = snapshot["engine_rng"]
        self.balances: dict[str, dict[str, tuple[Decimal, Decimal]]] = snapshot["balances"]
        self.audit_seq: int = snapshot["audit_seq"]
        self.audit: list[AuditRecord] = list(snapshot["audit"])
        self.trades: dict[str, list[Trade]] = {s: list(v) for s, v in snapshot["trades"].items()}
        self.market: dict[str, Any] = snapshot["market"]
        self.execution_id: int = snapshot["execution_id"]

    def apply(self, change: Mapping[str, Any]) -> None:
        """Fold in the next change.

        Raises:
            ValueError: it is not the next one (a change is missing).
        """
        seq = change["seq"]
        if seq != self.seq + 1:
            raise ValueError(f"change {seq} follows change {self.seq}: one is missing")
        self.seq = seq
        self.counters = dict(change["counters"])
        for symbol, orders in change["books"].items():
            self.books[symbol] = (seq, orders)
        for order in change["orders"]:
            self.orders[(order.symbol, order.order_id)] = (seq, order)
        for key, items in change["account_trades"].items():
            self.account_trades.setdefault(key, []).extend(items)
        if change["engine_rng"] is not None:
            self.engine_rng = change["engine_rng"]
        self.balances = change["balances"]
        self.audit_seq = change["audit_seq"]
        self.audit.extend(change["audit"])
        for symbol, trades in change["trades"].items():
            self.trades.setdefault(symbol, []).extend(trades)
        market = change["market"]
        if market is not None:
            self.market = {
                "next": market["next"],
                "events": market["events"],
                "symbols": {**self.market["symbols"], **market["symbols"]},
            }
        self.execution_id = change["execution_id"]

    def check(self, config: SimConfig) -> None:
        """Refuse a state written for other symbols or accounts.

        Raises:
            MismatchError: saying what differs.
        """
        mine = fingerprint(config)
        theirs = self.fingerprint
        if theirs.get("symbols") != mine["symbols"]:
            names = [s.get("symbol") for s in theirs.get("symbols", [])]
            raise MismatchError(
                f"it was written for symbols {names}, not for this configuration's "
                f"{[s.symbol for s in config.symbols]} (the same names, filters and prices)"
            )
        if theirs.get("accounts") != mine["accounts"]:
            raise MismatchError(
                "it was written for other accounts (API keys) than this configuration's"
            )

    def install(self, p: Parts) -> None:
        """Put this state into ``p``, a simulator built from the same config and not yet seeded."""
        self.check(p.config)
        engine = p.engine
        real: dict[OrderKey, tuple[int, Order]] = dict(self.orders)
        open_orders: dict[str, list[Order]] = {}
        for symbol, (seq, orders) in self.books.items():
            for order in orders:
                key = (order.symbol, order.order_id)
                if order.account != MARKET_ACCOUNT and real.get(key, (-1, order))[0] < seq:
                    real[key] = (seq, order)
            open_orders[symbol] = orders
        engine._orders.clear()
        engine._by_client_id.clear()
        for key, (_seq, order) in sorted(real.items(), key=lambda item: item[0][1]):
            engine._orders[key] = order
            engine._by_client_id.setdefault(
                (order.account, order.symbol, order.client_order_id), []
            ).append(order)
        for symbol, book in engine._books.items():
            book.next_trade_id, book.update_id, book.next_order_id, book.last_price = self.counters[
                symbol
            ]
            book.bids = BookSide(descending=True)
            book.asks = BookSide(descending=False)
            for order in sorted(open_orders.get(symbol, []), key=lambda o: o.order_id):
                key = (symbol, order.order_id)
                live = real[key][1] if order.account != MARKET_ACCOUNT else order
                engine._orders[key] = live
                book.side(live.side).add(live)
        engine._account_trades.clear()
        engine._account_trades.update(self.account_trades)
        engine._rng.setstate(self.engine_rng)
        ledger = p.ledger
        ledger._balances.clear()
        for account, balances in self.balances.items():
            ledger._balances[account] = {
                a: Balance(free, locked) for a, (free, locked) in balances.items()
            }
        audit = p.audit
        audit._records = deque(self.audit, maxlen=audit._records.maxlen)
        audit._next_seq = self.audit_seq
        for symbol, log in p.trade_logs.items():
            log._items = self.trades.get(symbol, [])[-log.audit_retention :]
            log._start = 0
        market = p.market
        market._next = self.market["next"]
        market.events = self.market["events"]
        for st in market._states:
            st.fair, rng_state = self.market["symbols"][st.config.symbol]
            st.rng.setstate(rng_state)
        p.users.next_execution_id = self.execution_id
