"""Balances per API key, kept by double entry so that nothing is created or lost.

Every movement is a transfer between two balances (free ↔ locked inside one
account, or between accounts), so the sum of each asset over all accounts is
constant — the property the matching engine's stateful test checks. Two
special accounts make that possible:

* :data:`MARKET_ACCOUNT` is the synthetic market (the seeded order flow of
  :mod:`daemon.venues.sim.market`). It has no real balance: it may go negative,
  so the synthetic market never runs out of money.
* :data:`FEES_ACCOUNT` collects commissions.

Amounts are :class:`~decimal.Decimal`; nothing is ever rounded here (the
matching engine rounds commissions before it moves them).

The ledger remembers which assets of which real accounts moved since
:meth:`Ledger.take_touched` was last called, so the matching engine can tell
the user data stream (``outboundAccountPosition``) after each operation.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Final

import attrs

__all__ = [
    "FEES_ACCOUNT",
    "MARKET_ACCOUNT",
    "Balance",
    "InsufficientBalance",
    "Ledger",
]

#: The synthetic market participant (may go negative).
MARKET_ACCOUNT: Final = "__market__"
#: Where commissions go.
FEES_ACCOUNT: Final = "__fees__"

ZERO: Final = Decimal(0)


class InsufficientBalance(Exception):
    """A real account lacks the funds for a movement (nothing was moved)."""


@attrs.define
class Balance:
    """One asset of one account."""

    free: Decimal = ZERO
    locked: Decimal = ZERO

    @property
    def total(self) -> Decimal:
        return self.free + self.locked


class Ledger:
    """Balances of every account, with credentials for the real ones."""

    def __init__(self) -> None:
        self._balances: dict[str, dict[str, Balance]] = {MARKET_ACCOUNT: {}, FEES_ACCOUNT: {}}
        self._secrets: dict[str, bytes] = {}
        # real account -> assets whose balance moved since take_touched()
        self._touched: dict[str, set[str]] = {}

    # -- accounts ----------------------------------------------------------------

    def open_account(self, api_key: str, secret_key: str, balances: Mapping[str, Decimal]) -> None:
        """Create a real account with starting free balances."""
        if api_key in self._balances:
            raise ValueError(f"account {api_key[:8]}… already exists")
        self._balances[api_key] = {
            asset: Balance(free=amount) for asset, amount in balances.items()
        }
        self._secrets[api_key] = secret_key.encode()

    def secret(self, api_key: str) -> bytes | None:
        """The HMAC secret of a real account, or ``None`` for an unknown key."""
        return self._secrets.get(api_key)

    def knows(self, api_key: str) -> bool:
        """Whether ``api_key`` is a real account (constant-time over known keys)."""
        found = False
        for key in self._secrets:
            found |= hmac.compare_digest(key.encode(), api_key.encode())
        return found

    def accounts(self) -> Iterable[str]:
        """Every account, the special ones included."""
        return self._balances.keys()

    @staticmethod
    def unlimited(account: str) -> bool:
        """Accounts allowed below zero (the synthetic market only)."""
        return account == MARKET_ACCOUNT

    # -- balances ----------------------------------------------------------------

    def balance(self, account: str, asset: str) -> Balance:
        """The balance of ``asset`` (created at zero on first use)."""
        return self._balances[account].setdefault(asset, Balance())

    def balances(self, account: str) -> dict[str, Balance]:
        """A copy of every balance of ``account``."""
        return {asset: Balance(b.free, b.locked) for asset, b in self._balances[account].items()}

    def totals(self) -> dict[str, Decimal]:
        """Sum of free + locked per asset over every account (constant by construction)."""
        out: dict[str, Decimal] = {}
        for balances in self._balances.values():
            for asset, b in balances.items():
                out[asset] = out.get(asset, ZERO) + b.total
        return out

    def take_touched(self) -> dict[str, set[str]]:
        """The real accounts and assets that moved since the last call (then forgotten)."""
        touched = self._touched
        if touched:
            self._touched = {}
        return touched

    def _touch(self, account: str, asset: str) -> None:
        if account in self._secrets:
            self._touched.setdefault(account, set()).add(asset)

    def can_lock(self, account: str, asset: str, amount: Decimal) -> bool:
        """Whether ``amount`` of ``asset`` is free in ``account``."""
        return self.unlimited(account) or self.balance(account, asset).free >= amount

    def lock(self, account: str, asset: str, amount: Decimal) -> None:
        """Move ``amount`` from free to locked.

        Raises:
            InsufficientBalance: not enough free (nothing moved).
        """
        b = self.balance(account, asset)
        if not self.unlimited(account) and b.free < amount:
            raise InsufficientBalance(f"{asset}: free {b.free} < {amount}")
        b.free -= amount
        b.locked += amount
        self._touch(account, asset)

    def unlock(self, account: str, asset: str, amount: Decimal) -> None:
        """Move ``amount`` from locked back to free."""
        b = self.balance(account, asset)
        if not self.unlimited(account) and b.locked < amount:
            raise AssertionError(f"unlocking {amount} {asset} but only {b.locked} locked")
        b.locked -= amount
        b.free += amount
        self._touch(account, asset)

    def transfer(
        self, src: str, dst: str, asset: str, amount: Decimal, *, from_locked: bool = False
    ) -> None:
        """Move ``amount`` of ``asset`` from ``src`` (free or locked) to ``dst``'s free balance.

        Raises:
            InsufficientBalance: ``src`` is a real account without the funds.
        """
        b = self.balance(src, asset)
        if from_locked:
            if not self.unlimited(src) and b.locked < amount:
                raise InsufficientBalance(f"{asset}: locked {b.locked} < {amount}")
            b.locked -= amount
        else:
            if not self.unlimited(src) and b.free < amount:
                raise InsufficientBalance(f"{asset}: free {b.free} < {amount}")
            b.free -= amount
        self.balance(dst, asset).free += amount
        self._touch(src, asset)
        self._touch(dst, asset)
