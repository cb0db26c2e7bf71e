"""Market data values: trades, depth updates, depth snapshots, and sequence checks.

Venue-neutral, pure and frozen. Prices and quantities are :class:`~decimal.Decimal`
(venues send them as strings); a float never enters the model, because binary
floating point cannot represent a tick size like ``0.1`` and would silently
change prices on the way to the store.

The sequence helpers at the end are the pure half of gap detection: a feed
compares consecutive trade ids (:func:`trade_gap`) and depth update ids
(:func:`classify_depth_update`, :func:`depth_continuous`) and backfills or
re-snapshots through REST when they break.
"""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Any

import attrs

__all__ = [
    "DepthContinuity",
    "DepthSnapshot",
    "DepthUpdate",
    "Level",
    "Trade",
    "classify_depth_update",
    "depth_continuous",
    "trade_gap",
]

#: One book level: ``(price, quantity)``. A quantity of zero in a depth update
#: means "remove this price level".
Level = tuple[Decimal, Decimal]


def _finite_decimal(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise TypeError(f"{attribute.name} must be a finite Decimal, got {value!r}")


def _levels(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple):
        raise TypeError(f"{attribute.name} must be a tuple of (price, quantity) levels")
    for level in value:
        if (
            not isinstance(level, tuple)
            or len(level) != 2
            or not all(isinstance(x, Decimal) and x.is_finite() for x in level)
        ):
            raise TypeError(f"{attribute.name}: bad level {level!r}; want (Decimal, Decimal)")


@attrs.frozen
class Trade:
    """One public trade, from a REST trade list or the ``<symbol>@trade`` stream.

    Attributes:
        venue: Venue name (``"binance"``); with ``symbol`` and ``trade_id`` the
            natural key under which trades are stored idempotently.
        symbol: The venue's symbol, upper case (``"BTCUSDT"``).
        trade_id: The venue's trade id; sequential per symbol on Binance, which
            is what makes gaps detectable (:func:`trade_gap`).
        price: Trade price.
        quantity: Base-asset quantity.
        quote_quantity: Quote-asset quantity (``price * quantity`` when the venue
            does not send it, as on the trade stream).
        buyer_is_maker: True when the buyer's order was resting (a sell hit the bid).
        trade_time_ms: When the trade happened (venue clock, epoch ms).
        event_time_ms: When the venue emitted the stream event; ``None`` for REST.
    """

    venue: str
    symbol: str
    trade_id: int
    price: Decimal = attrs.field(validator=_finite_decimal)
    quantity: Decimal = attrs.field(validator=_finite_decimal)
    quote_quantity: Decimal = attrs.field(validator=_finite_decimal)
    buyer_is_maker: bool
    trade_time_ms: int
    event_time_ms: int | None = None


@attrs.frozen
class DepthUpdate:
    """One diff-depth event (``<symbol>@depth@100ms``): levels changed in ``[U, u]``.

    Attributes:
        venue: Venue name.
        symbol: The venue's symbol, upper case.
        first_update_id: ``U``, the first book update id in this event.
        final_update_id: ``u``, the last book update id in this event.
        bids: Changed bid levels (absolute quantities; 0 removes the level).
        asks: Changed ask levels.
        event_time_ms: ``E``, when the venue emitted the event.
    """

    venue: str
    symbol: str
    first_update_id: int
    final_update_id: int
    bids: tuple[Level, ...] = attrs.field(validator=_levels)
    asks: tuple[Level, ...] = attrs.field(validator=_levels)
    event_time_ms: int


@attrs.frozen
class DepthSnapshot:
    """A REST depth snapshot (``GET /api/v3/depth``), the base diff updates apply to.

    Attributes:
        venue: Venue name.
        symbol: The venue's symbol, upper case.
        last_update_id: The book's update id at the snapshot (``lastUpdateId``).
        bids: Bid levels, best (highest) first.
        asks: Ask levels, best (lowest) first.
    """

    venue: str
    symbol: str
    last_update_id: int
    bids: tuple[Level, ...] = attrs.field(validator=_levels)
    asks: tuple[Level, ...] = attrs.field(validator=_levels)


# --------------------------------------------------------------------------- sequences


def trade_gap(prev_id: int | None, new_id: int) -> range:
    """The trade ids missing between the last seen trade and a new one.

    Binance trade ids are sequential per symbol, so after ``prev_id`` the next
    trade must be ``prev_id + 1``. The result is empty when the new trade is
    the next one, when nothing was seen before (``prev_id is None``), and when
    ``new_id <= prev_id`` (a duplicate or replay, which the consumer drops —
    writes are idempotent on the trade id anyway). Otherwise it is the range
    to backfill through ``historicalTrades?fromId=``.

    >>> trade_gap(10, 11)
    range(11, 11)
    >>> list(trade_gap(10, 14))
    [11, 12, 13]
    """
    if prev_id is None or new_id <= prev_id + 1:
        return range(0)
    return range(prev_id + 1, new_id)


class DepthContinuity(enum.Enum):
    """What to do with a diff-depth update given the last applied update id."""

    APPLY = "apply"  #: continues the book: apply it
    STALE = "stale"  #: entirely at or before the book's state: drop it
    GAP = "gap"  #: updates are missing: the book is invalid, re-snapshot


def classify_depth_update(
    prev_u: int, update: DepthUpdate, *, after_snapshot: bool = False
) -> DepthContinuity:
    """Binance's procedure for keeping a local book in sync with a diff stream.

    Args:
        prev_u: After a snapshot, its ``lastUpdateId``; later, the ``u`` of the
            last update applied.
        update: The next update from the stream (or the buffer).
        after_snapshot: True while no update has been applied since the
            snapshot. The first update to apply must then straddle the
            snapshot (``U <= lastUpdateId + 1 <= u``); later ones must follow
            on exactly (``U == prev_u + 1``).

    Updates with ``u <= prev_u`` are always :attr:`~DepthContinuity.STALE`
    (already contained in the book).
    """
    if update.final_update_id <= prev_u:
        return DepthContinuity.STALE
    if after_snapshot:
        ok = update.first_update_id <= prev_u + 1 <= update.final_update_id
    else:
        ok = update.first_update_id == prev_u + 1
    return DepthContinuity.APPLY if ok else DepthContinuity.GAP


def depth_continuous(prev_u: int, update: DepthUpdate, *, after_snapshot: bool = False) -> bool:
    """Whether ``update`` may be applied on top of ``prev_u`` (see :func:`classify_depth_update`).

    False both for a gap and for a stale update; use
    :func:`classify_depth_update` to tell them apart.
    """
    return (
        classify_depth_update(prev_u, update, after_snapshot=after_snapshot)
        is DepthContinuity.APPLY
    )
