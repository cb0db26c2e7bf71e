"""Pre-trade risk: pure checks and limit reservations (docs/ARCHITECTURE.md §4 Orders).

Two stages, both pure and synchronous:

* the **start stage** (:mod:`.checks`): the venue's symbol filters, symbol
  status and the operator's trading state (:mod:`.state`), seen by every
  request;
* the **main stage**: the limits (:mod:`.limits`: order rate, notional per
  order, open orders and position), checked and *reserved* for an order by
  the book (:mod:`.book`); the :class:`Reservation` (:mod:`.reservation`) is
  later committed (intent recorded) or rolled back, and released when the
  order ends.

:class:`PreTradeRisk` (:mod:`.pretrade`) runs both in one step. Rejections
carry every coded :class:`RiskReason` at once.
"""

from __future__ import annotations

from daemon.risk.book import RiskBook
from daemon.risk.checks import (
    Exposure,
    RiskDecision,
    RiskReason,
    RiskRejectedError,
    RiskRequest,
    check_start,
)
from daemon.risk.limits import LimitTable, RiskLimits
from daemon.risk.pretrade import PreTradeRisk
from daemon.risk.reservation import Reservation, ReservationState, ReservationStateError
from daemon.risk.state import StateChange, TradingState, TradingStates

__all__ = [
    "Exposure",
    "LimitTable",
    "PreTradeRisk",
    "Reservation",
    "ReservationState",
    "ReservationStateError",
    "RiskBook",
    "RiskDecision",
    "RiskLimits",
    "RiskReason",
    "RiskRejectedError",
    "RiskRequest",
    "StateChange",
    "TradingState",
    "TradingStates",
    "check_start",
]
