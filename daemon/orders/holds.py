"""Send holds: no new order to a venue that asked us to wait, and the intents held back.

A new order that a rate limit stopped — our own limiter refused it before
sending, or the venue answered 429/418 (a request rejected before
processing) — goes back to PENDING (:func:`~daemon.orders.state.not_executed`).
It must then not go out again before the venue's ``Retry-After`` (or, when
nobody said how long, a backoff that doubles with each consecutive rate limit
of that venue, from :data:`BACKOFF_BASE_S` up to :data:`BACKOFF_MAX_S`).
:class:`SendHolds` keeps that per venue, for the executor:

* while a venue is held, a place item of one of its accounts does not start
  its send section: the intent stays (or goes back to) PENDING and is
  *deferred*;
* an intent is deferred too while an earlier intent of its account is
  deferred, so an account's orders still go out in submission order;
* when the hold ends, the tracker (:class:`~daemon.orders.reconcile.Reconciler`)
  queues the account's deferred intents again, in submission order
  (:meth:`SendHolds.release_due`).

Memory only: after a restart every PENDING intent is queued anyway, and the
venue client's limiter (frozen by the 429's ``Retry-After``) still spaces them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import trio

from daemon.orders.records import IntentRecord
from daemon.orders.state import NotExecuted

__all__ = ["BACKOFF_BASE_S", "BACKOFF_MAX_S", "SendHolds"]

#: First wait after a rate limit that named no wait (doubles per consecutive one).
BACKOFF_BASE_S: Final = 1.0
#: Longest such wait.
BACKOFF_MAX_S: Final = 60.0


class SendHolds:
    """Per-venue holds after a rate limit, and the PENDING intents held back by them.

    Args:
        clock: Monotonic seconds (Trio's clock).
        base_s: First backoff when the rate limit named no wait.
        max_s: Cap on that backoff.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = trio.current_time,
        base_s: float = BACKOFF_BASE_S,
        max_s: float = BACKOFF_MAX_S,
    ) -> None:
        self.clock = clock
        self.base_s = base_s
        self.max_s = max_s
        #: venue → when (clock) new orders may go out again.
        self._until: dict[str, float] = {}
        #: venue → rate limits in a row (for the backoff).
        self._strikes: dict[str, int] = {}
        #: account → {client order id: submission seq} of the intents held back.
        self._deferred: dict[str, dict[str, int]] = {}
        #: account → its venue (of the accounts with intents held back).
        self._venue_of: dict[str, str] = {}
        self.local = 0
        self.venue = 0

    # ------------------------------------------------------------------ holds

    def hold(self, venue: str, proof: NotExecuted) -> float:
        """Hold ``venue`` after a rate-limited send; the wait (seconds) it asked for."""
        strikes = self._strikes.get(venue, 0) + 1
        self._strikes[venue] = strikes
        if proof.cause.startswith("venue"):
            self.venue += 1
        else:
            self.local += 1
        wait = proof.retry_after_s
        if wait is None or wait <= 0:
            wait = min(self.max_s, self.base_s * 2 ** min(strikes - 1, 30))
        until = self.clock() + wait
        self._until[venue] = max(until, self._until.get(venue, until))
        return wait

    def answered(self, venue: str) -> None:
        """A send to ``venue`` got past the rate limits: the backoff starts over."""
        self._strikes.pop(venue, None)

    def remaining(self, venue: str) -> float:
        """Seconds until ``venue`` takes new orders again (0: not held)."""
        until = self._until.get(venue)
        if until is None:
            return 0.0
        left = until - self.clock()
        if left <= 0:
            del self._until[venue]
            return 0.0
        return left

    def blocks(self, venue: str, account: str, seq: int | None = None) -> bool:
        """Whether a new order of ``account`` (submission ``seq``; ``None``: a new one)
        must wait: its venue is held, or an earlier intent of the account is deferred."""
        if self.remaining(venue) > 0:
            return True
        waiting = self._deferred.get(account)
        if not waiting:
            return False
        return seq is None or any(other < seq for other in waiting.values())

    # ------------------------------------------------------------------ deferred intents

    def defer(self, record: IntentRecord) -> None:
        """Remember a PENDING intent held back (its place item ended without sending)."""
        self._deferred.setdefault(record.account, {})[record.client_order_id] = record.seq
        self._venue_of[record.account] = record.venue

    def is_deferred(self, record: IntentRecord) -> bool:
        return record.client_order_id in self._deferred.get(record.account, {})

    def release_due(self, pending: Callable[[str], IntentRecord | None]) -> list[tuple[str, str]]:
        """The deferred intents whose venue is no longer held, as ``(account, client
        order id)`` in submission order per account; forgotten once returned.

        ``pending(coid)`` gives the intent while it is still PENDING (``None``
        otherwise: canceled meanwhile, or sent by another path); the others are
        dropped.
        """
        due: list[tuple[str, str]] = []
        for account, waiting in list(self._deferred.items()):
            if self.remaining(self._venue_of[account]) > 0:
                continue
            del self._deferred[account], self._venue_of[account]
            records = [r for coid in waiting if (r := pending(coid)) is not None]
            due += [(account, r.client_order_id) for r in sorted(records, key=lambda r: r.seq)]
        return due

    def next_release_in(self) -> float | None:
        """Seconds until deferred intents can be released (``None``: none deferred)."""
        waits = [self.remaining(self._venue_of[account]) for account in self._deferred]
        return min(waits) if waits else None

    def deferred_count(self) -> int:
        return sum(len(waiting) for waiting in self._deferred.values())

    def snapshot(self) -> dict[str, Any]:
        held = {venue: round(self.remaining(venue), 3) for venue in sorted(self._until)}
        return {
            "rate_limited": {"local": self.local, "venue": self.venue},
            "held_venues": {venue: left for venue, left in held.items() if left > 0},
            "held_back": self.deferred_count(),
        }
