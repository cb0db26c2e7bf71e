"""Both stages of pre-trade risk together, as the risk gate runs them.

:class:`PreTradeRisk` runs the start stage (:func:`daemon.risk.checks.check_start`:
filters, symbol status, trading switches) and the main stage's limit checks
(:class:`~daemon.risk.book.RiskBook`) and, only if neither has a reason to
refuse, reserves, all in one synchronous step.
"""

from __future__ import annotations

import logging

from daemon.model.instruments import SymbolInfo
from daemon.risk.book import RiskBook
from daemon.risk.checks import RiskDecision, RiskRequest, check_start
from daemon.risk.reservation import Reservation
from daemon.risk.state import TradingStates

__all__ = ["PreTradeRisk"]

#: Named as when this lived in ``limits.py``: the log lines keep their logger.
log = logging.getLogger("tradingd.risk.limits")


class PreTradeRisk:
    """Both stages together, as the risk gate runs them.

    :meth:`submit` runs the start stage and the main stage's checks and, only
    if neither has a reason to refuse, reserves, all in one synchronous step.
    A rejection lists the reasons of *both* stages, so a caller learns
    everything that is wrong at once.

    Args:
        book: The main stage's limits and reservations.
        states: The operator's trading switches.
    """

    def __init__(self, book: RiskBook, states: TradingStates) -> None:
        self.book = book
        self.states = states

    def evaluate(self, request: RiskRequest, symbol_info: SymbolInfo | None) -> RiskDecision:
        """Every reason of both stages to refuse ``request``, without reserving."""
        start = check_start(
            request,
            symbol_info,
            states=self.states,
            exposure=self.book.exposure(request.account, request.symbol),
        )
        return start + self.book.check(request)

    def submit(
        self, request: RiskRequest, symbol_info: SymbolInfo | None
    ) -> Reservation | RiskDecision:
        """Judge ``request``; a ``RESERVED`` reservation when it passes, else every reason."""
        decision = self.evaluate(request, symbol_info)
        if decision.rejected:
            log.debug(
                "risk rejected %s (%s): %s",
                request.client_order_id,
                request.account,
                ", ".join(decision.codes),
            )
            return decision
        return self.book.reserve(request)
