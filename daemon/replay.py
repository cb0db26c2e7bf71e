"""Replaying dead letters: ``tradingd dead-letters replay ID... | --source S [--dry-run]``.

A dead letter is sent back through the normal path of its source, and the
idempotency keys of that path make a replay safe however often it is done:

* ``orders`` (an intent the venue refused for good): its request is submitted
  again through :meth:`~daemon.orders.service.OrdersService.submit`, the entry
  path of ``POST /orders``. The same ``message_id`` derives the same client
  order id, so an intent the store still has is answered as a duplicate
  (with its state: REJECTED) and **no order is sent**; only an intent the
  store no longer has (a store restored from an older backup) is recorded
  and sent again — once, whatever the number of replays.
* ``marketdata.NAME.stream`` (a frame that could not be decoded): the raw
  frame is decoded again with today's codec; a trade is stored on its natural
  key ``(venue, symbol, trade_id)`` (``ON CONFLICT DO NOTHING``: a trade the
  feed backfilled meanwhile is "already stored"); a depth update or anything
  else that now decodes is not stored (books are rebuilt from snapshots), and
  a frame that still cannot be decoded stays.

A letter whose replay succeeded (submitted, duplicate, stored, already
stored) is removed from the dead letters (the store's
:meth:`~daemon.resilience.DeadLetterStore.replay`: a letter is replayed by one
request at a time); one that failed or was skipped stays, its attempts and
last error updated, with the outcome said. ``dry_run`` says what would happen and changes
nothing. Each letter's outcome is answered: ``{"id", "source", "outcome",
"detail", "removed"}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from daemon.control import Args, shown
from daemon.errors import TradingdError, VenueDecodeError
from daemon.model.marketdata import Trade
from daemon.orders.control import error_answer
from daemon.orders.ledger import DEAD_LETTER_SOURCE
from daemon.resilience import DeadLetter, DeadLetterStore
from daemon.resilience.deadletter import ReplayStatus
from daemon.venues.binance import codec

if TYPE_CHECKING:
    from daemon.orders.service import OrdersService

__all__ = ["MAX_REPLAY", "NotReplayedError", "TradeSink", "handle_replay", "replay_letter"]

log = logging.getLogger("tradingd.app")

#: Letters one replay request takes at most (a source with more: replay again).
MAX_REPLAY: Final = 1000
_MARKETDATA_PREFIX: Final = "marketdata."
_STREAM_SUFFIX: Final = ".stream"


class TradeSink(Protocol):
    """Where a replayed trade is stored (the store's :class:`~daemon.store.MarketDataStore`)."""

    async def insert_trades(self, trades: Sequence[Trade]) -> Any: ...


async def handle_replay(
    message: Mapping[str, Any],
    *,
    letters: DeadLetterStore | None,
    orders: OrdersService | None,
    trades: TradeSink | None,
) -> dict[str, Any]:
    """The control socket's ``{"cmd": "dead-letters", "action": "replay", ...}``.

    Arguments: ``ids`` (a list) or ``source`` (every letter of it, oldest
    first, at most :data:`MAX_REPLAY`), and ``dry_run``.
    """
    args = Args(message, known=("action", "ids", "source", "dry_run"))
    ids = args.integers("ids")
    source = args.string("source")
    dry_run = args.flag("dry_run")
    args.check()
    if not ids and not source:
        return {"ok": False, "error": "say which letters: ids or source"}
    if letters is None:
        return {"ok": False, "error": "the store is not open"}
    chosen: list[DeadLetter] = []
    missing: list[int] = []
    for letter_id in ids or ():
        letter = await letters.get(letter_id)
        if letter is None:
            missing.append(letter_id)
        elif source is None or letter.source == source:
            chosen.append(letter)
    if not ids and source is not None:
        chosen = list(await letters.list(source=source, limit=MAX_REPLAY))
    results = []
    for letter in chosen:
        result = await _replay_one(letter, letters, orders=orders, trades=trades, dry_run=dry_run)
        log.info(
            "dead letter %s (%s) replayed%s: %s %s",
            letter.letter_id,
            letter.source,
            " (dry run)" if dry_run else "",
            result["outcome"],
            result["detail"],
        )
        results.append(result)
    return {"ok": True, "dry_run": dry_run, "replayed": results, "missing": missing}


class NotReplayedError(Exception):
    """A letter's replay did not go through (its dead letter stays, attempts counted)."""


async def _replay_one(
    letter: DeadLetter,
    letters: DeadLetterStore,
    *,
    orders: OrdersService | None,
    trades: TradeSink | None,
    dry_run: bool,
) -> dict[str, Any]:
    """Replay one letter through the store's :meth:`~DeadLetterStore.replay` (removed on
    success, its failure recorded otherwise; a letter being replayed already is busy)."""
    if dry_run or letter.letter_id is None:
        result = await replay_letter(letter, orders=orders, trades=trades, dry_run=True)
        return {**result, "removed": False}
    seen: dict[str, Any] = {}

    async def handler(current: DeadLetter) -> None:
        seen.update(await replay_letter(current, orders=orders, trades=trades, dry_run=False))
        if not seen["ok"]:
            raise NotReplayedError(f"{seen['outcome']}: {seen['detail']}")

    done = await letters.replay(letter.letter_id, handler)
    if done.status is ReplayStatus.BUSY:
        seen = {"ok": False, "outcome": "busy", "detail": "being replayed already"}
    elif done.status is ReplayStatus.NOT_FOUND:
        seen = {"ok": False, "outcome": "gone", "detail": "removed meanwhile"}
    return {
        "id": letter.letter_id,
        "source": letter.source,
        **seen,
        "removed": done.status is ReplayStatus.REPLAYED,
    }


async def replay_letter(
    letter: DeadLetter,
    *,
    orders: OrdersService | None,
    trades: TradeSink | None,
    dry_run: bool,
) -> dict[str, Any]:
    """Send ``letter`` back through its source's normal path (see the module docstring)."""
    if letter.source == DEAD_LETTER_SOURCE:
        ok, outcome, detail = await _replay_order(letter, orders, dry_run=dry_run)
    elif letter.source.startswith(_MARKETDATA_PREFIX) and letter.source.endswith(_STREAM_SUFFIX):
        venue = letter.source[len(_MARKETDATA_PREFIX) : -len(_STREAM_SUFFIX)]
        ok, outcome, detail = await _replay_frame(letter, venue, trades, dry_run=dry_run)
    else:
        ok, outcome, detail = False, "skipped", f"no replay path for source {shown(letter.source)}"
    return {
        "id": letter.letter_id,
        "source": letter.source,
        "ok": ok,
        "outcome": outcome,
        "detail": detail,
    }


async def _replay_order(
    letter: DeadLetter, orders: OrdersService | None, *, dry_run: bool
) -> tuple[bool, str, str]:
    payload = letter.payload
    request = payload.get("intent") if isinstance(payload, dict) else None
    if not isinstance(request, dict):
        return False, "failed", "the letter holds no intent request"
    if orders is None:
        return False, "failed", "no order pipeline ([accounts] not configured)"
    if dry_run:
        return True, "would submit", f"message_id {shown(request.get('message_id'))}"
    try:
        result = await orders.submit(request)
    except TradingdError as exc:
        answer = error_answer(exc)
        status = answer.status if answer is not None else None
        return False, "failed", f"{status or type(exc).__name__}: {exc}"[:300]
    if result.created:
        return True, "submitted", f"{result.client_order_id} recorded as a new intent"
    return (
        True,
        "duplicate",
        f"{result.client_order_id} is already {result.state.value}: no order sent",
    )


async def _replay_frame(
    letter: DeadLetter, venue: str, trades: TradeSink | None, *, dry_run: bool
) -> tuple[bool, str, str]:
    raw = letter.payload
    if not isinstance(raw, str | bytes):
        return False, "failed", "the letter holds no raw frame"
    try:
        parsed = codec.parse_stream_message(raw, venue=venue)
    except VenueDecodeError as exc:
        return False, "still malformed", str(exc)[:300]
    if not isinstance(parsed, Trade):
        return False, "skipped", f"decodes as {type(parsed).__name__}: not stored"
    where = f"{parsed.symbol} trade {parsed.trade_id}"
    if dry_run:
        return True, "would store", where
    if trades is None:
        return False, "failed", "the store is not open"
    summary = await trades.insert_trades([parsed])
    inserted = getattr(summary, "inserted", 0)
    return True, "stored" if inserted else "already stored", where
