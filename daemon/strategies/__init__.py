"""User strategies: loaded by import path, run as supervised children.

Read top to bottom:

* :mod:`.spec` — :class:`StrategySpec`, one ``[strategies.NAME]`` table;
* :mod:`.loader` — ``class = "package.module:Class"`` resolved at daemon
  start, every problem reported at once (:class:`StrategyLoadError`);
* :mod:`.base` — the contract: :class:`StrategyContext` (entry API, latest
  prices, symbol rules, heartbeat, message ids), the :class:`Strategy`
  protocol, :class:`PriceSource` and :class:`MarketDataPrices`;
* :mod:`.service` — :class:`StrategiesService`: one nested supervisor per
  strategy, so a crashing strategy is restarted per its policy, then stays
  stopped, and never takes its siblings or the order pipeline down;
* :mod:`.example` — :class:`QuoteStrategy`, the built-in example.
"""

from __future__ import annotations

from daemon.strategies.base import (
    MarketDataPrices,
    PriceSource,
    Strategy,
    StrategyContext,
    StrategyOptionsError,
)
from daemon.strategies.example import QuoteOptions, QuoteStrategy
from daemon.strategies.loader import (
    LoadProblem,
    LoadProblemKind,
    StrategyLoadError,
    load_strategies,
    load_strategy_class,
)
from daemon.strategies.service import StrategiesService
from daemon.strategies.spec import StrategySpec

__all__ = [
    "LoadProblem",
    "LoadProblemKind",
    "MarketDataPrices",
    "PriceSource",
    "QuoteOptions",
    "QuoteStrategy",
    "StrategiesService",
    "Strategy",
    "StrategyContext",
    "StrategyLoadError",
    "StrategyOptionsError",
    "StrategySpec",
    "load_strategies",
    "load_strategy_class",
]
