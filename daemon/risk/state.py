"""Trading state: the operator's switch over *new* order submissions.

Each account has a :class:`TradingState`, and one global switch covers them
all; the state that applies to an account is the more restrictive of the two
(:meth:`TradingStates.effective`):

* ``ACTIVE``: anything the other checks allow;
* ``REDUCING``: only orders that reduce the absolute position of the account
  in that symbol without flipping it (a wind-down: close out, never add);
* ``HALTED``: nothing new.

The switch gates **new submissions only**. It is read by the start stage of
the risk gate (:func:`daemon.risk.checks.check_start`) and by nothing else, so
halting never cancels, loses or rolls back an intent that was already
accepted: its reservation still commits, the executor still sends it, its
fills still move the position. (Cancelling what is working at the venue is a
separate, explicit operator action.)

Resuming the global switch does not clear per-account settings: an account an
operator halted on its own stays halted until it is resumed by name, so
"resume everything" after a market-wide halt cannot silently re-enable an
account that was stopped for its own reasons.

The registry is a plain synchronous object (no I/O, no awaits), so it can be
read in the same step as the reservation that follows the check.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["StateChange", "TradingState", "TradingStates"]

log = logging.getLogger("tradingd.risk.state")


class TradingState(enum.Enum):
    """What new orders an account (or everything) may submit."""

    ACTIVE = "ACTIVE"  #: normal trading
    REDUCING = "REDUCING"  #: only orders that reduce the absolute position, never flip it
    HALTED = "HALTED"  #: no new orders at all

    @property
    def severity(self) -> int:
        """How restrictive the state is (higher is stricter), for combining switches."""
        return _SEVERITY[self]

    @classmethod
    def strictest(cls, *states: TradingState) -> TradingState:
        """The most restrictive of ``states`` (``ACTIVE`` when none)."""
        return max(states, key=_SEVERITY.__getitem__, default=cls.ACTIVE)


_SEVERITY = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


@attrs.frozen
class StateChange:
    """One operator change of a switch, kept for ``/status`` and audit logs.

    Attributes:
        account: The account, or ``None`` for the global switch.
        state: The new state.
        reason: Free text from the operator ("" when none was given).
        at: The registry clock's time of the change.
    """

    account: str | None
    state: TradingState
    reason: str
    at: float


def _zero_clock() -> float:
    return 0.0


class TradingStates:
    """The global switch plus one switch per account.

    Only non-``ACTIVE`` accounts are stored, so the registry stays as small as
    the set of accounts an operator has touched.

    Args:
        clock: Time source for :attr:`StateChange.at` (``trio.current_time``
            in the daemon; a fake in tests). Only used for reporting.
    """

    def __init__(self, *, clock: Callable[[], float] = _zero_clock) -> None:
        self._clock = clock
        self._global = StateChange(None, TradingState.ACTIVE, "", clock())
        self._accounts: dict[str, StateChange] = {}

    # ------------------------------------------------------------------ reading

    @property
    def global_state(self) -> TradingState:
        """The global switch."""
        return self._global.state

    def account_state(self, account: str) -> TradingState:
        """The account's own switch (``ACTIVE`` unless an operator changed it)."""
        change = self._accounts.get(account)
        return change.state if change is not None else TradingState.ACTIVE

    def effective(self, account: str) -> TradingState:
        """The state that applies to new orders of ``account``: the stricter switch wins."""
        return TradingState.strictest(self._global.state, self.account_state(account))

    def accounts(self) -> dict[str, TradingState]:
        """Accounts whose own switch is not ``ACTIVE``."""
        return {account: change.state for account, change in self._accounts.items()}

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able view for ``/status``."""

        def row(change: StateChange) -> dict[str, Any]:
            return {"state": change.state.value, "reason": change.reason, "at": change.at}

        return {
            "global": row(self._global),
            "accounts": {name: row(change) for name, change in sorted(self._accounts.items())},
        }

    # ------------------------------------------------------------------ writing

    def set_state(
        self, state: TradingState, account: str | None = None, *, reason: str = ""
    ) -> None:
        """Set the global switch (``account=None``) or one account's switch.

        Affects the next :func:`~daemon.risk.checks.check_start` only; orders
        already accepted are not touched (see the module docstring).
        """
        if not isinstance(state, TradingState):
            raise TypeError(f"state must be a TradingState, got {state!r}")
        if account is not None and (not isinstance(account, str) or not account):
            raise ValueError(f"account must be a non-empty string or None, got {account!r}")
        before = self.global_state if account is None else self.account_state(account)
        change = StateChange(account, state, reason, self._clock())
        if account is None:
            self._global = change
        elif state is TradingState.ACTIVE:
            self._accounts.pop(account, None)
        else:
            self._accounts[account] = change
        if before is not state:
            level = logging.INFO if state is TradingState.ACTIVE else logging.WARNING
            log.log(
                level,
                "trading state of %s: %s -> %s%s",
                "all accounts" if account is None else f"account {account!r}",
                before.value,
                state.value,
                f" ({reason})" if reason else "",
            )

    def halt(self, account: str | None = None, *, reason: str = "") -> None:
        """Refuse every new order of ``account`` (or of everyone, with ``None``)."""
        self.set_state(TradingState.HALTED, account, reason=reason)

    def reduce_only(self, account: str | None = None, *, reason: str = "") -> None:
        """Accept only position-reducing orders of ``account`` (or of everyone)."""
        self.set_state(TradingState.REDUCING, account, reason=reason)

    def resume(self, account: str | None = None, *, reason: str = "") -> None:
        """Set ``account``'s switch (or the global one) back to ``ACTIVE``.

        Resuming globally leaves per-account switches as they are.
        """
        self.set_state(TradingState.ACTIVE, account, reason=reason)
