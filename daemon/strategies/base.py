"""What a strategy is, and what it gets: the contract between tradingd and user code.

A strategy is a class named in the config (``[strategies.NAME] class =
"package.module:Class"``). For every *incarnation* (first start and every
restart) the daemon builds a fresh :class:`StrategyContext` and a fresh
instance, then awaits :meth:`Strategy.run` until it is cancelled. The instance
therefore never inherits half-updated state from a crashed predecessor; what
must survive a restart lives where the daemon keeps it durably (open orders in
the order store, reachable through ``ctx.gateway.open_orders``).

The context gives a strategy exactly three ways to touch the world:

* ``ctx.gateway`` — the in-process order entry (:class:`~daemon.orders.gateway.OrderGateway`),
  the same path ``POST /orders`` takes: validation, pre-trade risk, the durable
  outbox. Refusals arrive as exceptions (:class:`~daemon.errors.RiskRejectedError`,
  :class:`~daemon.orders.gateway.EntrySaturatedError`, …); a strategy should
  log them and carry on rather than crash.
* ``ctx.prices`` — the latest order-book views (:class:`PriceSource`): latest
  values, never a queue, so a slow strategy never makes market data wait.
* ``ctx.symbol_info(symbol)`` — the venue's symbol rules (tick size, step size,
  minimum notional) to round prices and quantities before submitting.

and one duty: call ``ctx.heartbeat()`` at least every ``heartbeat_interval_s``.
A strategy that stops doing so is presumed hung, cancelled and restarted by
its supervisor (:mod:`daemon.strategies.service`).

Idempotency: every submission needs a ``message_id``. :meth:`StrategyContext.message_id`
makes valid ones: without arguments a fresh id per call (unique across
incarnations and daemon restarts), with *stable parts* a deterministic id, so
that a strategy restarted in the middle of a submission can resubmit the same
logical order and get the same intent back instead of a second order.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Final, Protocol, runtime_checkable

import attrs
import trio

from daemon.errors import ConfigError
from daemon.marketdata.book import BookView
from daemon.model.instruments import SymbolInfo
from daemon.orders.gateway import OrderGateway
from daemon.orders.intent import MESSAGE_ID_PATTERN

__all__ = [
    "DEFAULT_WAIT_RECHECK_S",
    "MESSAGE_ID_MAX_CHARS",
    "STRATEGY_NAME_PATTERN",
    "BookPredicate",
    "MarketDataPrices",
    "PriceSource",
    "Strategy",
    "StrategyContext",
    "StrategyOptionsError",
    "new_run_id",
]

#: Strategy names are config table names (``[strategies.NAME]``); they become
#: logger names and the prefix of every message id the strategy makes.
STRATEGY_NAME_PATTERN: Final = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,31}\Z")
#: The entry's limit on a message id (``daemon.orders.intent.MESSAGE_ID_PATTERN``).
MESSAGE_ID_MAX_CHARS: Final = 64
#: How often :meth:`MarketDataPrices.wait_book` re-fetches the books mapping,
#: so that it notices market data starting, stopping or replacing its values.
DEFAULT_WAIT_RECHECK_S: Final = 1.0
#: Separates a message id's parts; therefore not allowed inside a stable part.
_SEP: Final = ":"
#: Bytes of randomness in a run id (hex: twice as many characters).
_RUN_ID_BYTES: Final = 6

log = logging.getLogger("tradingd.strategies")

BookPredicate = Callable[[BookView], bool]


class StrategyOptionsError(ConfigError):
    """A strategy's ``options`` table is invalid; ``problems`` lists every problem.

    A :class:`~daemon.errors.ConfigError`: raised by a strategy class's
    ``validate_options`` at daemon start (the start fails) and by its
    constructor (a crash, counted toward its restart intensity).
    """


# ---------------------------------------------------------------------------------------------
# Prices
# ---------------------------------------------------------------------------------------------


@runtime_checkable
class PriceSource(Protocol):
    """Latest order-book views, by symbol."""

    def book(self, symbol: str) -> BookView | None:
        """The latest view of ``symbol``, or ``None`` (market data down, symbol not captured)."""
        ...

    async def wait_book(self, symbol: str, predicate: BookPredicate) -> BookView:
        """Wait until the view of ``symbol`` satisfies ``predicate``; return that view.

        Waits as long as it takes (market data may be down): bound it with a
        cancel scope and heartbeat in between.
        """
        ...


class MarketDataPrices:
    """:class:`PriceSource` over the market-data service's books.

    Args:
        get_books: Returns the *current* mapping ``symbol -> AsyncValue[BookView]``
            (a :class:`~daemon.marketdata.book.LocalBook` is accepted too: its
            ``latest`` is used), or ``None`` while market data is not running.
            Called on every read, never cached, because market data may restart
            and replace its books.
        recheck_s: How long :meth:`wait_book` waits on one value before it
            fetches the mapping again.

    Why poll at all: an ``AsyncValue`` that market data has dropped never
    changes again, and a waiter parked on it would wait forever. Waiting on the
    current value for at most ``recheck_s`` and then looking again bounds that,
    while a change of the live value still wakes the waiter at once.
    """

    def __init__(
        self,
        get_books: Callable[[], Mapping[str, Any] | None],
        *,
        recheck_s: float = DEFAULT_WAIT_RECHECK_S,
    ) -> None:
        if not recheck_s > 0:
            raise ValueError(f"recheck_s must be > 0, got {recheck_s!r}")
        self._get_books = get_books
        self.recheck_s = recheck_s
        self._warned_missing: set[str] = set()

    def _value(self, symbol: str) -> Any | None:
        books = self._get_books()
        if books is None:
            return None
        item = books.get(symbol)
        if item is None:
            if symbol not in self._warned_missing:
                self._warned_missing.add(symbol)
                log.warning(
                    "market data does not capture %s (it has %s): strategies waiting "
                    "for its book will wait",
                    symbol,
                    ", ".join(sorted(books)) or "no symbols",
                )
            return None
        return getattr(item, "latest", item)

    def book(self, symbol: str) -> BookView | None:
        """The latest view of ``symbol`` (``None`` when there is none)."""
        value = self._value(symbol)
        if value is None:
            return None
        view: BookView = value.value
        return view

    async def wait_book(self, symbol: str, predicate: BookPredicate) -> BookView:
        """Wait for a view of ``symbol`` satisfying ``predicate`` (see the class docstring)."""
        while True:
            value = self._value(symbol)
            if value is None:
                await trio.sleep(self.recheck_s)
                continue
            with trio.move_on_after(self.recheck_s):
                view: BookView = await value.wait_value(predicate)
                return view


# ---------------------------------------------------------------------------------------------
# The context
# ---------------------------------------------------------------------------------------------


def new_run_id() -> str:
    """A random token naming one incarnation of a strategy (12 hex characters).

    Random rather than the incarnation number: numbers start again at 1 after
    a daemon restart, and a fresh message id that repeats an old one would
    silently return the old intent instead of placing a new order.
    """
    return secrets.token_hex(_RUN_ID_BYTES)


def _read_only(options: Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(options, MappingProxyType):
        return options
    return MappingProxyType(dict(options))


def _none_if_empty(value: str | None) -> str | None:
    """``""`` (the config's way of saying "no account") becomes ``None``."""
    return value or None


def _no_heartbeat() -> None:
    """Heartbeat sink of a context that runs outside a supervisor (tests, tools)."""


def _check_name(_inst: object, _attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or STRATEGY_NAME_PATTERN.match(value) is None:
        raise ValueError(
            f"strategy name must be 1-32 characters of [A-Za-z0-9_-] starting with a letter "
            f"or digit, got {value!r}"
        )


@attrs.frozen(kw_only=True)
class StrategyContext:
    """What one incarnation of a strategy gets (see the module docstring).

    Attributes:
        name: The strategy's name (``[strategies.NAME]``).
        account: The account it trades on by default (``None``: none configured).
        options: Its ``options`` table, read-only.
        gateway: The in-process order entry.
        prices: Latest order-book views.
        symbol_info: ``symbol_info(symbol)`` → the venue's rules, or ``None``
            when exchange info does not list it (or is not loaded).
        heartbeat_interval_s: The heartbeat the supervisor expects (``None``:
            not watched).
        run_id: Random token of this incarnation (part of fresh message ids).
        log: Logger ``tradingd.strategy.NAME``.
    """

    name: str = attrs.field(validator=_check_name)
    account: str | None = attrs.field(converter=_none_if_empty)
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_read_only)
    gateway: OrderGateway
    prices: PriceSource
    symbol_info: Callable[[str], SymbolInfo | None]
    heartbeat_fn: Callable[[], None] = attrs.field(default=_no_heartbeat, repr=False)
    heartbeat_interval_s: float | None = None
    run_id: str = attrs.field(factory=new_run_id)
    log: logging.Logger = attrs.field(init=False, repr=False)
    _seq: Iterator[int] = attrs.field(init=False, repr=False, factory=lambda: itertools.count(1))

    @log.default
    def _logger(self) -> logging.Logger:
        return logging.getLogger(f"tradingd.strategy.{self.name}")

    def heartbeat(self) -> None:
        """Prove liveness to the supervisor (the current incarnation's ``ChildContext``)."""
        self.heartbeat_fn()

    @property
    def beat_every_s(self) -> float:
        """How often a waiting strategy should wake up to heartbeat (half the interval)."""
        if self.heartbeat_interval_s is None:
            return 1.0
        return self.heartbeat_interval_s / 2

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, heartbeating in between (a long idle wait is not a hang)."""
        deadline = trio.current_time() + seconds
        while True:
            self.heartbeat()
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                await trio.lowlevel.checkpoint()  # a zero sleep still yields
                return
            await trio.sleep(min(remaining, self.beat_every_s))

    @property
    def message_id_prefix(self) -> str:
        """``"NAME:"``: every message id this strategy makes starts with it."""
        return f"{self.name}{_SEP}"

    def owns(self, message_id: str) -> bool:
        """Whether ``message_id`` was made by a strategy of this name (any incarnation)."""
        return message_id.startswith(self.message_id_prefix)

    def message_id(self, *parts: str | int) -> str:
        """A valid idempotency key (1-64 printable ASCII characters, no spaces).

        * ``message_id()`` — fresh: ``NAME:RUNID:N``, unique per call within
          this incarnation and, through the random run id, across
          incarnations and daemon restarts.
        * ``message_id("grid", 3, 17)`` — stable: ``NAME:grid:3:17``, the same
          in every incarnation, for orders that must be placed at most once
          even when the strategy crashes between submitting and learning the
          answer. Ids longer than 64 characters are shortened to
          ``NAME:`` + a hash of the parts (still deterministic).

        Raises:
            ValueError: a part is empty, or holds a space, a non-printable or
                non-ASCII character, or ``":"`` (the separator: ``("a:b",)``
                and ``("a", "b")`` must not give the same id).
        """
        if not parts:
            return f"{self.message_id_prefix}{self.run_id}{_SEP}{next(self._seq)}"
        texts = []
        for part in parts:
            text = str(part)
            if not text or _SEP in text or MESSAGE_ID_PATTERN.match(text) is None:
                raise ValueError(
                    f"strategy {self.name}: message id part {text!r} must be printable ASCII "
                    f"without spaces or {_SEP!r}"
                )
            texts.append(text)
        candidate = self.message_id_prefix + _SEP.join(texts)
        if len(candidate) <= MESSAGE_ID_MAX_CHARS:
            return candidate
        digest = hashlib.sha256(_SEP.join(texts).encode("ascii")).hexdigest()
        room = MESSAGE_ID_MAX_CHARS - len(self.message_id_prefix) - 1
        return f"{self.message_id_prefix}#{digest[:room]}"


# ---------------------------------------------------------------------------------------------
# The strategy contract
# ---------------------------------------------------------------------------------------------


class Strategy(Protocol):
    """A user strategy (loaded by import path; see the module docstring).

    The constructor should only read and check its options (raise
    :class:`StrategyOptionsError` listing every problem); an exception there
    counts as a crash. ``run`` works until it is cancelled, calling
    ``ctx.heartbeat()`` at least every ``heartbeat_interval_s``. Returning
    from ``run`` is a crash too (a strategy runs until stopped). On stop,
    ``run`` is cancelled; cleanup in ``finally`` must be bounded
    (``with trio.move_on_after(t, shield=True):``).

    A class may also offer ``validate_options(options, *, account) ->
    Sequence[str]`` (a classmethod returning every problem, empty when fine):
    the daemon calls it at start, so a typo in an options table fails the
    start instead of crash-looping the strategy.
    """

    def __init__(self, ctx: StrategyContext) -> None: ...

    async def run(self) -> None: ...
