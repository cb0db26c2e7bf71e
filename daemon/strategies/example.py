"""The built-in example strategy: quote around the mid, through the real entry path.

:class:`QuoteStrategy` exists to show the whole loop working (``tradingd
demo``): it reads live prices, places LIMIT orders and cancels them, through
the same in-process entry as ``POST /orders`` — validation, pre-trade risk,
the durable outbox, the executor. It is not a trading idea. Configure it::

    [strategies.quote]
    class = "daemon.strategies.example:QuoteStrategy"
    account = "demo"
    [strategies.quote.options]
    symbol = "BTCUSDT"      # required
    quantity = "0.001"      # required, a decimal string (rounded down to the step size)
    offset_bps = 10         # distance from the mid, in basis points (default 10)
    interval_s = 2.0        # one order per interval (default 2.0)
    max_orders = 2          # open orders it keeps at most (default 2)
    # account = "demo"      # overrides the strategy's account

Every interval it: waits for an in-sync book with a mid; cancels its oldest
open orders so that, with the new one, at most ``max_orders`` are open; then
places one LIMIT GTC order, alternately a BUY at ``mid * (1 - offset)`` rounded
*down* to the tick size and a SELL at ``mid * (1 + offset)`` rounded *up* (so
rounding never moves a quote towards the mid). A refusal (risk, a saturated
or unavailable pipeline, a validation problem) is logged and the loop goes
on: refusals are the risk layer doing its job, never a reason to crash.

"Its" orders are the open intents on its account and symbol whose message id
starts with ``NAME:`` (:meth:`~daemon.strategies.base.StrategyContext.owns`),
so a restarted incarnation picks up the orders of the previous one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import ROUND_DOWN, ROUND_UP, Decimal, InvalidOperation
from typing import Any, Final

import attrs
import trio

from daemon.errors import RiskRejectedError
from daemon.marketdata.book import BookView
from daemon.model.instruments import SymbolInfo
from daemon.model.orders import Side
from daemon.orders.gateway import (
    EntrySaturatedError,
    EntryUnavailableError,
    IntentConflictError,
    UnknownOrderError,
)
from daemon.orders.intent import (
    ACCOUNT_PATTERN,
    DECIMAL_PATTERN,
    SYMBOL_PATTERN,
    IntentValidationError,
)
from daemon.orders.records import IntentRecord, plain
from daemon.strategies.base import StrategyContext, StrategyOptionsError

__all__ = [
    "DEFAULT_INTERVAL_S",
    "DEFAULT_MAX_ORDERS",
    "DEFAULT_OFFSET_BPS",
    "QuoteOptions",
    "QuoteStrategy",
]

DEFAULT_OFFSET_BPS: Final = Decimal(10)
DEFAULT_INTERVAL_S: Final = 2.0
DEFAULT_MAX_ORDERS: Final = 2
_BPS: Final = Decimal(10_000)
_KNOWN_OPTIONS: Final = ("symbol", "account", "quantity", "offset_bps", "interval_s", "max_orders")


@attrs.frozen(kw_only=True)
class QuoteOptions:
    """The validated options of a :class:`QuoteStrategy` (see the module docstring)."""

    symbol: str
    account: str
    quantity: Decimal
    offset_bps: Decimal = DEFAULT_OFFSET_BPS
    interval_s: float = DEFAULT_INTERVAL_S
    max_orders: int = DEFAULT_MAX_ORDERS

    @classmethod
    def parse(
        cls, options: Mapping[str, Any], *, account: str | None
    ) -> tuple[QuoteOptions | None, list[str]]:
        """Check ``options``; return the value, or ``None`` and *every* problem.

        Args:
            options: The ``options`` table.
            account: The strategy's account (used when ``options.account`` is absent).
        """
        problems = [
            f"unknown option {key!r} (known: {', '.join(_KNOWN_OPTIONS)})"
            for key in sorted(options, key=str)
            if key not in _KNOWN_OPTIONS
        ]

        symbol = options.get("symbol")
        if symbol is None:
            problems.append('symbol: required, a venue symbol like "BTCUSDT"')
        elif not isinstance(symbol, str) or SYMBOL_PATTERN.match(symbol) is None:
            problems.append(
                f'symbol: must be an upper-case venue symbol like "BTCUSDT", got {symbol!r}'
            )

        chosen = options.get("account", account) or None
        if chosen is None:
            problems.append("account: required: set options.account or the strategy's account")
        elif not isinstance(chosen, str) or ACCOUNT_PATTERN.match(chosen) is None:
            problems.append(f'account: must be an account name like "main", got {chosen!r}')

        quantity = _decimal_option(options, "quantity", problems, required=True)
        offset_bps = _decimal_option(options, "offset_bps", problems, required=False)
        if offset_bps is not None and not Decimal(0) < offset_bps < _BPS:
            problems.append(f"offset_bps: must be > 0 and < 10000, got {options['offset_bps']!r}")

        interval_s: float = DEFAULT_INTERVAL_S
        raw_interval = options.get("interval_s", DEFAULT_INTERVAL_S)
        if (
            isinstance(raw_interval, bool)
            or not isinstance(raw_interval, int | float)
            or not math.isfinite(raw_interval)
            or raw_interval <= 0
        ):
            problems.append(f"interval_s: must be a number of seconds > 0, got {raw_interval!r}")
        else:
            interval_s = float(raw_interval)

        max_orders = options.get("max_orders", DEFAULT_MAX_ORDERS)
        if isinstance(max_orders, bool) or not isinstance(max_orders, int) or max_orders < 1:
            problems.append(f"max_orders: must be an integer >= 1, got {max_orders!r}")

        if problems:
            return None, problems
        assert isinstance(symbol, str) and isinstance(chosen, str) and quantity is not None
        return (
            cls(
                symbol=symbol,
                account=chosen,
                quantity=quantity,
                offset_bps=DEFAULT_OFFSET_BPS if offset_bps is None else offset_bps,
                interval_s=interval_s,
                max_orders=max_orders,
            ),
            [],
        )


def _decimal_option(
    options: Mapping[str, Any], name: str, problems: list[str], *, required: bool
) -> Decimal | None:
    raw = options.get(name)
    if raw is None:
        if required:
            problems.append(f'{name}: required, a decimal string like "0.001"')
        return None
    if name == "quantity":
        # Quantities go to the venue: the plain notation the entry accepts, as a string
        # (a TOML float has already been through binary floating point).
        if not isinstance(raw, str) or DECIMAL_PATTERN.match(raw) is None:
            problems.append(f'{name}: must be a decimal string like "0.001", got {raw!r}')
            return None
        value = Decimal(raw)
        if value <= 0:
            problems.append(f"{name}: must be > 0, got {raw!r}")
            return None
        return value
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        problems.append(f"{name}: must be a number, got {raw!r}")
        return None
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        problems.append(f"{name}: must be a number, got {raw!r}")
        return None
    if not value.is_finite():
        problems.append(f"{name}: must be a finite number, got {raw!r}")
        return None
    return value


def _quotable(view: BookView) -> bool:
    return view.in_sync and view.mid is not None


def _exponent(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return exponent if isinstance(exponent, int) else 0


class QuoteStrategy:
    """Alternating LIMIT quotes around the mid (see the module docstring).

    Raises:
        StrategyOptionsError: from the constructor, listing every invalid option.
    """

    def __init__(self, ctx: StrategyContext) -> None:
        options, problems = QuoteOptions.parse(ctx.options, account=ctx.account)
        if options is None:
            raise StrategyOptionsError([f"strategies.{ctx.name}.options: {p}" for p in problems])
        self.ctx = ctx
        self.options = options
        self.next_side = Side.BUY
        self._warned_no_info = False

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], *, account: str | None) -> Sequence[str]:
        """Every problem of ``options`` (checked by the loader at daemon start)."""
        return QuoteOptions.parse(options, account=account)[1]

    async def run(self) -> None:
        """Quote every ``interval_s`` until cancelled."""
        o = self.options
        self.ctx.log.info(
            "quoting %s on account %s: %s every %gs, %s bps from the mid, at most %d open",
            o.symbol,
            o.account,
            plain(o.quantity),
            o.interval_s,
            o.offset_bps,
            o.max_orders,
        )
        while True:
            self.ctx.heartbeat()
            view = await self._wait_for_quotable_book()
            await self.step(view)
            await self.ctx.sleep(o.interval_s)

    async def _wait_for_quotable_book(self) -> BookView:
        symbol = self.options.symbol
        view = self.ctx.prices.book(symbol)
        if view is not None and _quotable(view):
            return view
        self.ctx.log.info("waiting for an in-sync book of %s with both sides", symbol)
        while True:
            self.ctx.heartbeat()
            with trio.move_on_after(self.ctx.beat_every_s):
                return await self.ctx.prices.wait_book(symbol, _quotable)

    async def step(self, view: BookView) -> None:
        """One interval: make room among its open orders, then place the next quote."""
        self.ctx.heartbeat()
        side = self.next_side
        self.next_side = Side.SELL if side is Side.BUY else Side.BUY
        if not await self._cancel_excess():
            return
        info = self.ctx.symbol_info(self.options.symbol)
        quote = self._quote(view, side, info)
        if quote is None:
            return
        price, quantity = quote
        await self._place(side, price, quantity, view)

    async def _own_open_orders(self) -> list[IntentRecord] | None:
        o = self.options
        try:
            records = await self.ctx.gateway.open_orders(o.account)
        except (EntryUnavailableError, EntrySaturatedError) as exc:
            self.ctx.log.warning("cannot list open orders (%s); not quoting this time", exc)
            return None
        mine = [
            r
            for r in records
            if r.symbol == o.symbol
            and r.account == o.account
            and self.ctx.owns(r.message_id)
            and not r.is_terminal
            and r.cancel_requested_at_ms is None
        ]
        return sorted(mine, key=lambda r: r.seq)

    async def _cancel_excess(self) -> bool:
        """Cancel the oldest own orders so one more fits; False: could not make room."""
        mine = await self._own_open_orders()
        if mine is None:
            return False
        excess = len(mine) - self.options.max_orders + 1
        room = True
        for record in mine[: max(excess, 0)]:
            try:
                await self.ctx.gateway.cancel(record.client_order_id)
            except UnknownOrderError:
                continue  # gone meanwhile: room made anyway
            except (EntryUnavailableError, EntrySaturatedError) as exc:
                self.ctx.log.warning(
                    "cannot cancel %s (%s); not quoting this time", record.client_order_id, exc
                )
                room = False
                continue
            self.ctx.log.info(
                "cancel requested for %s %s %s @ %s (%s)",
                record.side.value,
                plain(record.quantity),
                record.symbol,
                plain(record.price),
                record.client_order_id,
            )
        return room

    def _quote(
        self, view: BookView, side: Side, info: SymbolInfo | None
    ) -> tuple[Decimal, Decimal] | None:
        mid = view.mid
        assert mid is not None
        offset = self.options.offset_bps / _BPS
        raw = mid * (1 - offset) if side is Side.BUY else mid * (1 + offset)
        rounding = ROUND_DOWN if side is Side.BUY else ROUND_UP
        quantity = self.options.quantity
        if info is not None:
            price = info.round_price(raw, rounding)
            quantity = info.round_quantity(quantity, ROUND_DOWN)
        else:
            if not self._warned_no_info:
                self._warned_no_info = True
                self.ctx.log.warning(
                    "no symbol rules for %s: rounding prices to the book's precision",
                    self.options.symbol,
                )
            levels = [level[0] for level in (view.best_bid, view.best_ask) if level is not None]
            exponent = min(_exponent(p) for p in levels)
            price = raw.quantize(Decimal(1).scaleb(exponent), rounding=rounding)
        if price <= 0 or quantity <= 0:
            self.ctx.log.warning(
                "%s quote for %s rounds to price %s quantity %s; not placing it",
                side.value,
                self.options.symbol,
                plain(price),
                plain(quantity),
            )
            return None
        return price, quantity

    async def _place(self, side: Side, price: Decimal, quantity: Decimal, view: BookView) -> None:
        o = self.options
        request = {
            "message_id": self.ctx.message_id(),
            "account": o.account,
            "symbol": o.symbol,
            "side": side.value,
            "type": "LIMIT",
            "quantity": plain(quantity),
            "price": plain(price),
            "time_in_force": "GTC",
        }
        what = f"{side.value} {plain(quantity)} {o.symbol} @ {plain(price)}"
        try:
            result = await self.ctx.gateway.submit(request)
        except RiskRejectedError as exc:
            self.ctx.log.warning("%s refused by risk: %s", what, ", ".join(exc.codes) or exc)
        except EntrySaturatedError as exc:
            self.ctx.log.warning(
                "%s not placed: entry saturated (retry after %gs)", what, exc.retry_after_s
            )
        except EntryUnavailableError as exc:
            self.ctx.log.warning("%s not placed: entry unavailable: %s", what, exc)
        except (IntentValidationError, IntentConflictError) as exc:
            self.ctx.log.error("%s not placed: %s", what, exc)
        else:
            self.ctx.log.info(
                "placed %s (mid %s): %s %s",
                what,
                view.mid,
                result.client_order_id,
                result.state.value,
            )
