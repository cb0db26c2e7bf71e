"""The rules of account leases, with no SQL: who may hold an account, and the fencing token.

Several daemons may share one store (PostgreSQL); each account is traded by
exactly one of them at a time. The ``account_leases`` table holds one row per
account: ``(account, owner, holder, token, expires_at_ms, …)``. ``owner`` is
the daemon's configured instance id (stable across restarts), ``holder`` one
run of it (a fresh id per process), ``token`` the **fencing token**, and
``expires_at_ms`` is on the *store's* clock (the database server's time, never
a daemon's), so daemons on hosts whose clocks differ still agree on expiry.

What a claim may do (:func:`decide`), as in the compare-and-set ``UPDATE …
SET owner = me, token = token + 1, expires_at = now + ttl WHERE account = …
AND (owner = me OR expires_at < now)``:

* **renew** (:attr:`Claim.RENEW`): only the current holder; the expiry moves,
  the token stays (also after the lease ran out, if nobody took it meanwhile:
  nobody else could write in between);
* **take** (:attr:`Claim.TAKE`): a lease that has expired (or was released,
  or never held); the token grows by one;
* **start** (:attr:`Claim.START`): as take, and also a lease still held under
  this daemon's own owner id by an earlier run of it — a restart does not
  wait for its own old lease to run out; the token still grows, so any
  straggler of the old run is fenced off.

The token only grows. Every order change of an account (and every intent
recorded for it) checks, inside its own transaction, that the account's row
still carries the writer's owner and token (:func:`fence_ok`), so a daemon
that was paused while another took the account over cannot change anything
when it wakes up.

Pure values and functions: both backends' SQL (:mod:`daemon.store.leases`,
:mod:`daemon.store.pg_leases`) read the row, ask these rules, and write the
answer back with a compare-and-set on the row they read.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import attrs

__all__ = [
    "Claim",
    "Fence",
    "LeaseGrant",
    "LeaseRow",
    "decide",
    "fence_ok",
    "released",
    "vacant",
]

#: The fencing check an order change runs inside its transaction, before it writes:
#: ``fence(conn, account)`` raises :class:`~daemon.errors.LeaseLostError` unless the
#: account's lease still carries the writer's owner and token.
Fence = Callable[[Any, str], None]


class Claim(enum.Enum):
    """What a daemon asks of one account's lease (see the module docstring)."""

    START = "start"
    TAKE = "take"
    RENEW = "renew"


@attrs.frozen
class LeaseRow:
    """One ``account_leases`` row. Times are the store's clock, epoch milliseconds.

    An account nobody has held yet is :func:`vacant` (owner ``""``, token 0,
    expired since the epoch).
    """

    account: str
    owner: str
    holder: str
    token: int
    expires_at_ms: int
    acquired_at_ms: int
    renewed_at_ms: int

    def expired(self, now_ms: int) -> bool:
        """Whether the lease has run out (or was released) at ``now_ms``."""
        return self.expires_at_ms <= now_ms

    def held_by(self, owner: str, holder: str) -> bool:
        return self.owner == owner and self.holder == holder


def vacant(account: str) -> LeaseRow:
    """The row of an account no daemon has held yet."""
    return LeaseRow(account, "", "", 0, 0, 0, 0)


@attrs.frozen
class LeaseGrant:
    """What one claim of one account found and left.

    Attributes:
        account: The account.
        held: Whether the claimant holds the lease after the claim.
        row: The row as stored after the claim.
        previous: The row as it was before.
        now_ms: The store's clock when the claim was decided.
    """

    account: str
    held: bool
    row: LeaseRow
    previous: LeaseRow
    now_ms: int

    @property
    def taken_over(self) -> bool:
        """Held now, and before by *another* daemon (not vacant, not this owner)."""
        return self.held and self.previous.owner not in ("", self.row.owner)

    @property
    def acquired(self) -> bool:
        """Held now with a new token (a take or a start, not a renewal)."""
        return self.held and self.row.token != self.previous.token


def decide(
    row: LeaseRow, *, owner: str, holder: str, now_ms: int, ttl_ms: int, claim: Claim
) -> LeaseRow | None:
    """The row after ``claim`` by ``(owner, holder)`` at ``now_ms``, or ``None`` if refused.

    A holder that already holds the lease always renews it (token kept),
    whatever the claim says.
    """
    if ttl_ms <= 0:
        raise ValueError(f"a lease needs a positive ttl, got {ttl_ms} ms")
    if not owner or not holder:
        raise ValueError("a lease needs an owner and a holder")
    expires = now_ms + ttl_ms
    if row.held_by(owner, holder):
        return attrs.evolve(
            row, expires_at_ms=max(expires, row.expires_at_ms), renewed_at_ms=now_ms
        )
    if claim is Claim.RENEW:
        return None
    free = row.expired(now_ms) or (claim is Claim.START and row.owner == owner)
    if not free:
        return None
    return LeaseRow(
        account=row.account,
        owner=owner,
        holder=holder,
        token=row.token + 1,
        expires_at_ms=expires,
        acquired_at_ms=now_ms,
        renewed_at_ms=now_ms,
    )


def released(row: LeaseRow, *, owner: str, holder: str, now_ms: int) -> LeaseRow | None:
    """The row after its holder gave it up at ``now_ms`` (expired now, token kept),
    or ``None`` if ``(owner, holder)`` does not hold it."""
    if not row.held_by(owner, holder):
        return None
    return attrs.evolve(row, expires_at_ms=min(row.expires_at_ms, now_ms))


def fence_ok(row: LeaseRow | None, *, owner: str, token: int) -> bool:
    """Whether a writer holding ``(owner, token)`` may still change the account's orders.

    Every acquisition by another run or another daemon grows the token, so
    the pair names one run's tenure exactly; expiry alone does not fence (a
    lease that ran out and was not taken by anyone leaves nobody else writing).
    """
    return row is not None and row.owner == owner and row.token == token
