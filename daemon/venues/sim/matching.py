"""The matching engine: one price-time-priority order book per symbol.

Pure and synchronous (callers pass the wall-clock ``now_ms``), so it is
unit- and property-testable and atomic under Trio (no checkpoint inside an
operation). Real accounts and the synthetic market
(:data:`~daemon.venues.sim.accounts.MARKET_ACCOUNT`) trade in the same book,
so a resting user LIMIT order fills exactly when the market crosses it, and a
user MARKET order walks the book the market built.

What it models, as Binance documents it:

* order types ``LIMIT`` (``GTC``/``IOC``/``FOK``), ``MARKET`` (``quantity`` or
  ``quoteOrderQty``) and ``LIMIT_MAKER`` (rejected if it would take);
* filters ``PRICE_FILTER``, ``PERCENT_PRICE_BY_SIDE`` (judged against the
  book's reference price: last trade, else mid, else the start price),
  ``LOT_SIZE``, ``NOTIONAL`` → ``-1013 Filter failure: …``;
* funds locked at placement, ``-2010 Account has insufficient balance…``;
* ``newClientOrderId`` unique among **open** orders of an account and symbol:
  a duplicate of an open order is ``-2010 Duplicate order sent.``, a reused id
  after the first order filled or was canceled is a *new* order;
* commissions in the asset received (buyer pays in base, seller in quote),
  maker and taker rates; the synthetic market pays none;
* sequential trade ids per symbol, and an order book update id that grows by
  one for every operation that changed the book (what depth streams and
  ``lastUpdateId`` are made of).

Listeners (``trade_listeners``, ``book_listeners``) are called synchronously
as trades happen and when an operation's book changes are committed; the
changes of real accounts' orders and balances go to ``changes``
(:class:`~daemon.venues.sim.orderchanges.ChangeFeed`, the user data stream's
source).

Layout: :class:`MatchingEngine` is the API (lookups, placing, cancelling) and
owns the state; :class:`Matcher` runs one operation on one book (funds
locked, the taker matched, trades settled with commissions, what is left
released, the book's changes committed). Orders, trades, book sides and the
filters are in :mod:`daemon.venues.sim.orderbook`.
"""

from __future__ import annotations

import decimal
import random
import string
from collections.abc import Callable, Iterable
from decimal import ROUND_DOWN, Decimal
from typing import Final

from daemon.venues.sim import protocol as p
from daemon.venues.sim.accounts import FEES_ACCOUNT, MARKET_ACCOUNT, Ledger
from daemon.venues.sim.config import SymbolConfig
from daemon.venues.sim.orderbook import (
    DECIMAL_CONTEXT,
    ZERO,
    AccountTrade,
    BookChange,
    Fill,
    NewOrder,
    Order,
    OrderStatus,
    Side,
    SymbolBook,
    TimeInForce,
    Trade,
    check_filters,
    crosses,
    mul,
    sym_asset,
)
from daemon.venues.sim.orderchanges import ChangeFeed, cancel_request_id
from daemon.venues.sim.protocol import ApiError

__all__ = ["Matcher", "MatchingEngine"]

COMMISSION_QUANTUM: Final = Decimal("0.00000001")
_ID_ALPHABET: Final = string.ascii_letters + string.digits


class MatchingEngine:
    """Books, orders and trades of every symbol; balances in a :class:`Ledger`."""

    def __init__(
        self,
        symbols: Iterable[SymbolConfig],
        ledger: Ledger,
        *,
        maker_rate: Decimal = Decimal("0.001"),
        taker_rate: Decimal = Decimal("0.001"),
        first_trade_id: int = 1,
        first_update_id: int = 1,
        seed: int = 0,
    ) -> None:
        self.ledger = ledger
        self._books = {s.symbol: SymbolBook(s, first_trade_id, first_update_id) for s in symbols}
        # (symbol, order_id) -> order: every real order, and synthetic ones while open.
        self._orders: dict[tuple[str, int], Order] = {}
        # (account, symbol, client id) -> orders with that id, oldest first.
        self._by_client_id: dict[tuple[str, str, str], list[Order]] = {}
        self._account_trades: dict[tuple[str, str], list[AccountTrade]] = {}
        self._rng = random.Random(f"engine:{seed}")
        self.trade_listeners: list[Callable[[Trade], None]] = []
        self.book_listeners: list[Callable[[BookChange], None]] = []
        #: Order and balance changes of real accounts (the user data stream's source).
        self.changes = ChangeFeed(ledger)
        self._matcher = Matcher(
            ledger,
            self._books,
            self._orders,
            self._account_trades,
            maker_rate=maker_rate,
            taker_rate=taker_rate,
            trade_listeners=self.trade_listeners,
            book_listeners=self.book_listeners,
            changes=self.changes,
        )

    # -- lookups -----------------------------------------------------------------

    @property
    def symbols(self) -> list[str]:
        return list(self._books)

    def symbol_config(self, symbol: str) -> SymbolConfig:
        """The config of ``symbol``.

        Raises:
            ApiError: -1121 Invalid symbol.
        """
        book = self._books.get(symbol)
        if book is None:
            raise ApiError(p.BAD_SYMBOL, p.MSG_INVALID_SYMBOL)
        return book.config

    def _book(self, symbol: str) -> SymbolBook:
        self.symbol_config(symbol)
        return self._books[symbol]

    def best_bid(self, symbol: str) -> Decimal | None:
        return self._book(symbol).bids.best()

    def best_ask(self, symbol: str) -> Decimal | None:
        return self._book(symbol).asks.best()

    def reference_price(self, symbol: str) -> Decimal:
        """Last trade price, else mid of the book, else the start price."""
        return self._book(symbol).reference_price()

    def update_id(self, symbol: str) -> int:
        """Id of the last committed book change (``lastUpdateId``)."""
        return self._book(symbol).update_id

    def reserve_trade_ids(self, symbol: str, count: int) -> int:
        """The first of the next ``count`` trade ids of ``symbol``, taken (bench mode)."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        book = self._book(symbol)
        book.next_trade_id += count
        return book.next_trade_id - count

    def last_trade_id(self, symbol: str) -> int:
        """Id of the last trade (``first_trade_id - 1`` before any)."""
        return self._book(symbol).next_trade_id - 1

    def depth(
        self, symbol: str, limit: int
    ) -> tuple[int, list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        """``(lastUpdateId, bids best first, asks best first)`` for ``GET /api/v3/depth``."""
        book = self._book(symbol)
        return book.update_id, book.bids.top(limit), book.asks.top(limit)

    def synthetic_orders(self, symbol: str, side: Side) -> list[Order]:
        """Open synthetic orders on one side, best price first."""
        book = self._book(symbol)
        return [
            o
            for _price, level in book.side(side).walk()
            for o in level
            if o.account == MARKET_ACCOUNT
        ]

    def order(
        self,
        account: str,
        symbol: str,
        *,
        order_id: int | None = None,
        client_order_id: str | None = None,
        now_ms: int,
    ) -> Order:
        """Find an order for ``GET /api/v3/order`` (most recent one for a client id).

        Orders not yet visible (fault injection) are skipped, as a lagging
        database would.

        Raises:
            ApiError: -2013 Order does not exist.
        """
        self._book(symbol)
        missing = ApiError(p.NO_SUCH_ORDER, p.MSG_NO_SUCH_ORDER)
        if order_id is not None:
            order = self._orders.get((symbol, order_id))
            if order is None or order.account != account or not order.visible(now_ms):
                raise missing
            if client_order_id is not None and order.client_order_id != client_order_id:
                raise missing
            return order
        assert client_order_id is not None
        for order in reversed(self._by_client_id.get((account, symbol, client_order_id), [])):
            if order.visible(now_ms):
                return order
        raise missing

    def open_orders(self, account: str, symbol: str | None, *, now_ms: int) -> list[Order]:
        """Open, visible orders of ``account`` (on ``symbol``, or all), oldest first."""
        return sorted(
            (
                o
                for o in self._orders.values()
                if o.account == account
                and o.is_open
                and (symbol is None or o.symbol == symbol)
                and o.visible(now_ms)
            ),
            key=lambda o: (o.time_ms, o.symbol, o.order_id),
        )

    def all_orders(self, account: str) -> list[Order]:
        """Every order of ``account`` the engine remembers."""
        return [o for o in self._orders.values() if o.account == account]

    def account_trades(self, account: str, symbol: str) -> list[AccountTrade]:
        """Trades of ``account`` on ``symbol``, oldest first."""
        self._book(symbol)
        return list(self._account_trades.get((account, symbol), []))

    # -- placing -----------------------------------------------------------------

    def place(
        self, account: str, request: NewOrder, *, now_ms: int, visible_at_ms: int = 0
    ) -> Order:
        """Accept (and match) a real account's order, or reject it.

        Returns the order after matching; ``order.fills`` are this placement's fills.

        Raises:
            ApiError: -1121 bad symbol, -1013 filter failure, -2010 duplicate /
                insufficient balance / would take (LIMIT_MAKER).
        """
        with decimal.localcontext(DECIMAL_CONTEXT):
            book = self._book(request.symbol)
            sym = book.config
            check_filters(sym, request, book.reference_price())
            client_id = request.client_order_id or self._generate_client_id()
            key = (account, request.symbol, client_id)
            if any(o.is_open for o in self._by_client_id.get(key, ())):
                raise p.order_rejected(p.MSG_DUPLICATE_ORDER)
            if request.type == "LIMIT_MAKER":
                assert request.price is not None
                best = book.opposite(request.side).best()
                if best is not None and crosses(request.side, request.price, best):
                    self.changes.rejected(
                        account, request, client_id, "WOULD_MATCH_IMMEDIATELY", now_ms
                    )
                    raise p.order_rejected(p.MSG_WOULD_TAKE)
            lock_asset, lock_amount = self._matcher.funds_needed(book, account, request)
            if not self.ledger.can_lock(account, lock_asset, lock_amount):
                self.changes.rejected(account, request, client_id, "INSUFFICIENT_BALANCES", now_ms)
                raise p.order_rejected(p.MSG_INSUFFICIENT_BALANCE)
            order = self._matcher.new_order(book, account, request, client_id, now_ms)
            order.visible_at_ms = visible_at_ms
            self._orders[(order.symbol, order.order_id)] = order
            self._by_client_id.setdefault(key, []).append(order)
            self._matcher.match(
                book,
                order,
                lock_asset=lock_asset,
                lock_amount=lock_amount,
                request=request,
                now_ms=now_ms,
            )
            self._matcher.commit(book)
            self.changes.balances(now_ms)
            return order

    def place_synthetic(
        self,
        symbol: str,
        side: Side,
        qty: Decimal,
        *,
        price: Decimal | None = None,
        time_in_force: TimeInForce = "GTC",
        now_ms: int,
    ) -> Order:
        """An order of the synthetic market: no filters, no balance limits.

        ``price=None`` is a MARKET order; otherwise a LIMIT order with ``time_in_force``.
        """
        with decimal.localcontext(DECIMAL_CONTEXT):
            book = self._book(symbol)
            request = NewOrder(
                symbol=symbol,
                side=side,
                type="LIMIT" if price is not None else "MARKET",
                quantity=qty,
                price=price,
                time_in_force=time_in_force if price is not None else None,
            )
            client_id = f"sim{book.next_order_id}"
            order = self._matcher.new_order(book, MARKET_ACCOUNT, request, client_id, now_ms)
            self._orders[(symbol, order.order_id)] = order
            asset = sym_asset(book.config, side)
            amount = mul(price, qty) if (price is not None and side == "BUY") else qty
            if price is None and side == "BUY":
                amount = self._matcher.simulate(book, side, qty=qty, limit=None)[1]
            self._matcher.match(
                book, order, lock_asset=asset, lock_amount=amount, request=request, now_ms=now_ms
            )
            self._matcher.commit(book)
            self.changes.balances(now_ms)
            return order

    def cancel(
        self,
        account: str,
        symbol: str,
        *,
        order_id: int | None = None,
        client_order_id: str | None = None,
        now_ms: int,
        cancel_client_order_id: str | None = None,
    ) -> Order:
        """Cancel an open order (by id, or the open order with that client id).

        ``cancel_client_order_id`` is the cancel request's own client order id
        (see :func:`~daemon.venues.sim.orderchanges.cancel_request_id`).

        Raises:
            ApiError: -2011 Unknown order sent.
        """
        with decimal.localcontext(DECIMAL_CONTEXT):
            book = self._book(symbol)
            unknown = ApiError(p.CANCEL_REJECTED, p.MSG_UNKNOWN_ORDER)
            order: Order | None = None
            if order_id is not None:
                order = self._orders.get((symbol, order_id))
                if order is not None and (
                    order.account != account
                    or (client_order_id is not None and order.client_order_id != client_order_id)
                ):
                    order = None
            else:
                assert client_order_id is not None
                candidates = self._by_client_id.get((account, symbol, client_order_id), [])
                order = next((o for o in reversed(candidates) if o.is_open), None)
            if order is None or not order.is_open:
                raise unknown
            self._matcher.close(book, order, "CANCELED", now_ms)
            self.changes.canceled(order, cancel_request_id(order, cancel_client_order_id), now_ms)
            self._matcher.commit(book)
            self.changes.balances(now_ms)
            return order

    def cancel_synthetic(self, symbol: str, order_id: int, *, now_ms: int) -> None:
        """Withdraw an open synthetic order (the market thinning its book)."""
        with decimal.localcontext(DECIMAL_CONTEXT):
            book = self._book(symbol)
            order = self._orders.get((symbol, order_id))
            if order is None or order.account != MARKET_ACCOUNT or not order.is_open:
                return
            self._matcher.close(book, order, "CANCELED", now_ms)
            self._matcher.commit(book)

    # -- internals ---------------------------------------------------------------

    def _generate_client_id(self) -> str:
        return "".join(self._rng.choice(_ID_ALPHABET) for _ in range(22))


class Matcher:
    """Runs one operation of the engine on one book, against the ledger.

    Shares the engine's state (the books, the order index, the account
    trades, the listeners); callers hold :data:`DECIMAL_CONTEXT`.
    """

    def __init__(
        self,
        ledger: Ledger,
        books: dict[str, SymbolBook],
        orders: dict[tuple[str, int], Order],
        account_trades: dict[tuple[str, str], list[AccountTrade]],
        *,
        maker_rate: Decimal,
        taker_rate: Decimal,
        trade_listeners: list[Callable[[Trade], None]],
        book_listeners: list[Callable[[BookChange], None]],
        changes: ChangeFeed,
    ) -> None:
        self.ledger = ledger
        self.changes = changes
        self.maker_rate = maker_rate
        self.taker_rate = taker_rate
        self._books = books
        self._orders = orders
        self._account_trades = account_trades
        self.trade_listeners = trade_listeners
        self.book_listeners = book_listeners

    def new_order(
        self, book: SymbolBook, account: str, request: NewOrder, client_id: str, now_ms: int
    ) -> Order:
        """A new order on ``book``, with the book's next order id (not yet indexed or matched)."""
        order_id = book.next_order_id
        book.next_order_id += 1
        return Order(
            symbol=request.symbol,
            order_id=order_id,
            client_order_id=client_id,
            account=account,
            side=request.side,
            type=request.type,
            time_in_force=request.time_in_force or "GTC",
            price=request.price if request.price is not None else ZERO,
            orig_qty=request.quantity if request.quantity is not None else ZERO,
            orig_quote_order_qty=request.quote_order_qty or ZERO,
            time_ms=now_ms,
            update_time_ms=now_ms,
        )

    def funds_needed(
        self, book: SymbolBook, account: str, request: NewOrder
    ) -> tuple[str, Decimal]:
        """The asset and amount an order must lock before it may match."""
        sym = book.config
        if request.side == "BUY":
            if request.type != "MARKET":
                assert request.price is not None and request.quantity is not None
                return sym.quote_asset, mul(request.price, request.quantity)
            if request.quote_order_qty is not None:
                return sym.quote_asset, request.quote_order_qty
            assert request.quantity is not None
            return sym.quote_asset, self.simulate(book, "BUY", qty=request.quantity, limit=None)[1]
        if request.type == "MARKET" and request.quote_order_qty is not None:
            base, _quote = self.simulate(book, "SELL", quote=request.quote_order_qty, limit=None)
            return sym.base_asset, base
        assert request.quantity is not None
        return sym.base_asset, request.quantity

    def simulate(
        self,
        book: SymbolBook,
        side: Side,
        *,
        qty: Decimal | None = None,
        quote: Decimal | None = None,
        limit: Decimal | None,
    ) -> tuple[Decimal, Decimal]:
        """What a taker would get without trading: ``(base filled, quote amount)``."""
        step = book.config.step_size
        filled = ZERO
        spent = ZERO
        for price, _level in book.opposite(side).walk():
            if not crosses(side, limit, price):
                break
            available = book.opposite(side).totals[price]
            if qty is not None:
                take = min(available, qty - filled)
            else:
                assert quote is not None
                take = min(available, ((quote - spent) / price // step) * step)
            if take <= 0:
                break
            filled += take
            spent += mul(price, take)
        return filled, spent

    def match(
        self,
        book: SymbolBook,
        order: Order,
        *,
        lock_asset: str,
        lock_amount: Decimal,
        request: NewOrder,
        now_ms: int,
    ) -> None:
        """Lock ``order``'s funds and match it: it rests (GTC LIMIT) or is done (lock released).

        A FOK order that cannot fill entirely expires untouched.
        """
        ledger = self.ledger
        self.changes.new(order, now_ms)
        if request.time_in_force == "FOK":
            filled, _ = self.simulate(book, order.side, qty=order.orig_qty, limit=request.price)
            if filled < order.orig_qty:
                order.status = "EXPIRED"
                self.changes.taker_done(order, now_ms)
                return
        ledger.lock(order.account, lock_asset, lock_amount)
        order.locked = lock_amount
        quote_budget = request.quote_order_qty if request.type == "MARKET" else None
        self._match(book, order, quote_budget, now_ms)
        rests = request.type in ("LIMIT", "LIMIT_MAKER") and order.time_in_force == "GTC"
        if order.remaining > 0 and rests and quote_budget is None:
            book.side(order.side).add(order)
            book.touch(order.side, order.price)
            order.status = "PARTIALLY_FILLED" if order.executed_qty > 0 else "NEW"
            self.changes.taker_done(order, now_ms)
            return
        if quote_budget is not None:
            # A quoteOrderQty order has no quantity until it ran (``_match`` grew
            # orig_qty with each fill); it is FILLED unless the book ran dry first.
            exhausted = book.opposite(order.side).best() is None
            order.status = "EXPIRED" if exhausted or order.executed_qty == 0 else "FILLED"
        elif order.remaining == 0:
            order.status = "FILLED"
        else:
            order.status = "EXPIRED"
        self._release(order)
        self.changes.taker_done(order, now_ms)
        if order.account == MARKET_ACCOUNT:
            self._orders.pop((order.symbol, order.order_id), None)

    def _match(
        self, book: SymbolBook, taker: Order, quote_budget: Decimal | None, now_ms: int
    ) -> None:
        step = book.config.step_size
        opposite = book.opposite(taker.side)
        limit = taker.price if taker.type != "MARKET" else None
        while True:
            best = opposite.best()
            if best is None or not crosses(taker.side, limit, best):
                return
            if quote_budget is not None:
                left = quote_budget - taker.cumm_quote_qty
                want = (left / best // step) * step
            else:
                want = taker.remaining
            if want <= 0:
                return
            maker = opposite.levels[best][0]
            qty = min(want, maker.remaining)
            if quote_budget is not None:
                taker.orig_qty += qty
            self._trade(book, maker, taker, price=best, qty=qty, now_ms=now_ms)

    def _trade(
        self,
        book: SymbolBook,
        maker: Order,
        taker: Order,
        *,
        price: Decimal,
        qty: Decimal,
        now_ms: int,
    ) -> None:
        sym = book.config
        quote = mul(price, qty)
        trade_id = book.next_trade_id
        book.next_trade_id += 1
        book.last_price = price
        buyer, seller = (maker, taker) if maker.side == "BUY" else (taker, maker)
        ledger = self.ledger
        # Funds change hands from what each side locked.
        ledger.transfer(buyer.account, seller.account, sym.quote_asset, quote, from_locked=True)
        buyer.locked -= quote
        ledger.transfer(seller.account, buyer.account, sym.base_asset, qty, from_locked=True)
        seller.locked -= qty
        buyer_fee = self._commission(buyer, qty, buyer is maker)
        seller_fee = self._commission(seller, quote, seller is maker)
        if buyer_fee:
            ledger.transfer(buyer.account, FEES_ACCOUNT, sym.base_asset, buyer_fee)
        if seller_fee:
            ledger.transfer(seller.account, FEES_ACCOUNT, sym.quote_asset, seller_fee)
        for order, fee, asset in (
            (buyer, buyer_fee, sym.base_asset),
            (seller, seller_fee, sym.quote_asset),
        ):
            order.executed_qty += qty
            order.cumm_quote_qty += quote
            order.update_time_ms = now_ms
            if order is taker:
                order.fills.append(Fill(price, qty, fee, asset, trade_id))
            if order.account != MARKET_ACCOUNT:
                self._account_trades.setdefault((order.account, sym.symbol), []).append(
                    AccountTrade(
                        symbol=sym.symbol,
                        id=trade_id,
                        order_id=order.order_id,
                        price=price,
                        qty=qty,
                        quote_qty=quote,
                        commission=fee,
                        commission_asset=asset,
                        time_ms=now_ms,
                        is_buyer=order is buyer,
                        is_maker=order is maker,
                    )
                )
        # A BUY taker locked at its limit (or an estimate); give back what the better price saved.
        if taker.side == "BUY" and taker.type != "MARKET":
            excess = taker.locked - mul(taker.price, taker.remaining)
            if excess > 0:
                ledger.unlock(taker.account, sym.quote_asset, excess)
                taker.locked -= excess
        # The maker leaves the book when done.
        opposite = book.side(maker.side)
        opposite.reduce(price, qty)
        if maker.remaining == 0:
            opposite.pop_front(price)
            maker.status = "FILLED"
            self._release(maker)
            if maker.account == MARKET_ACCOUNT:
                self._orders.pop((maker.symbol, maker.order_id), None)
        else:
            maker.status = "PARTIALLY_FILLED"
        maker_fee, maker_asset = (
            (buyer_fee, sym.base_asset) if maker is buyer else (seller_fee, sym.quote_asset)
        )
        self.changes.maker_trade(maker, Fill(price, qty, maker_fee, maker_asset, trade_id), now_ms)
        book.touch(maker.side, price)
        trade = Trade(
            symbol=sym.symbol,
            id=trade_id,
            price=price,
            qty=qty,
            quote_qty=quote,
            time_ms=now_ms,
            buyer_is_maker=maker.side == "BUY",
        )
        for listener in self.trade_listeners:
            listener(trade)

    def _commission(self, order: Order, amount: Decimal, is_maker: bool) -> Decimal:
        if order.account == MARKET_ACCOUNT:
            return ZERO
        rate = self.maker_rate if is_maker else self.taker_rate
        return mul(amount, rate).quantize(COMMISSION_QUANTUM, rounding=ROUND_DOWN)

    def _release(self, order: Order) -> None:
        """Give back whatever an order that is done still holds locked."""
        if order.locked:
            sym = self._books[order.symbol].config
            self.ledger.unlock(order.account, sym_asset(sym, order.side), order.locked)
            order.locked = ZERO

    def close(self, book: SymbolBook, order: Order, status: OrderStatus, now_ms: int) -> None:
        """Take a resting ``order`` off the book with ``status``; release what it holds."""
        book.side(order.side).remove(order)
        book.touch(order.side, order.price)
        order.status = status
        order.update_time_ms = now_ms
        self._release(order)
        if order.account == MARKET_ACCOUNT:
            self._orders.pop((order.symbol, order.order_id), None)

    def commit(self, book: SymbolBook) -> None:
        """Close one operation: bump the update id if the book changed and tell listeners."""
        if not book.pending_bids and not book.pending_asks:
            return
        book.update_id += 1
        change = BookChange(
            symbol=book.config.symbol,
            update_id=book.update_id,
            bids=tuple(book.pending_bids.items()),
            asks=tuple(book.pending_asks.items()),
        )
        book.pending_bids = {}
        book.pending_asks = {}
        for listener in self.book_listeners:
            listener(change)
