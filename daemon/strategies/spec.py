"""How one strategy is configured and supervised: :class:`StrategySpec`.

The config loader owns the TOML side (``[strategies.NAME]``,
:class:`daemon.config.StrategyConfig`): the keys, their defaults and ranges are
declared there, once. :meth:`StrategySpec.from_config` turns one loaded table
into this module's value, which the strategy layer works with (and which
checks itself again, for specs built in code)::

    [strategies.quote]
    class = "daemon.strategies.example:QuoteStrategy"
    enabled = true
    account = "main"                 # "" = none: the strategy must name one itself
    heartbeat_interval_s = 5.0
    max_restarts = 5                 # more restarts than this within ...
    restart_period_s = 60.0          # ... this many seconds: the strategy stays stopped
    [strategies.quote.options]
    symbol = "BTCUSDT"
    quantity = "0.001"
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from daemon.config import StrategyConfig
from daemon.errors import ConfigError
from daemon.strategies.base import STRATEGY_NAME_PATTERN, _none_if_empty

__all__ = ["StrategySpec"]


def _frozen_options(options: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(options))


@attrs.frozen(kw_only=True)
class StrategySpec:
    """One ``[strategies.NAME]`` table, validated.

    No field has a default (but ``options``: an empty table): the keys'
    defaults are :class:`~daemon.config.StrategyConfig`'s, and
    :meth:`from_config` passes every one.

    Attributes:
        name: Table name; logger ``tradingd.strategy.NAME``, supervisor
            ``strategy:NAME``, and the prefix of the strategy's message ids.
        class_path: ``"package.module:Class"``.
        enabled: Disabled strategies are neither loaded nor run (but listed in status).
        account: Default account (``None``: none).
        heartbeat_interval_s: The strategy must heartbeat at least this often.
        max_restarts: Restarts allowed within ``restart_period_s``; one more
            and the strategy stays stopped (its siblings and the daemon go on).
        restart_period_s: The intensity window.
        options: The strategy's own options table (read-only).

    Raises:
        ConfigError: listing every invalid value, each named ``strategies.NAME.KEY``.
    """

    name: str
    class_path: str
    enabled: bool
    account: str | None = attrs.field(converter=_none_if_empty)
    heartbeat_interval_s: float
    max_restarts: int
    restart_period_s: float
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_options)

    def __attrs_post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(problems)

    @property
    def key(self) -> str:
        """``strategies.NAME``: how messages name this table."""
        return f"strategies.{self.name}"

    def problems(self) -> list[str]:
        """Every invalid value, one line each (empty: valid)."""
        key = f"strategies.{self.name}"
        found: list[str] = []
        # Typed as object: the values come from a config object, unchecked at run time.
        name: object = self.name
        class_path: object = self.class_path
        enabled: object = self.enabled
        account: object = self.account
        max_restarts: object = self.max_restarts
        if not isinstance(name, str) or STRATEGY_NAME_PATTERN.match(name) is None:
            found.append(
                f"{key}: the name must be 1-32 characters of [A-Za-z0-9_-] starting with a "
                f"letter or digit"
            )
        if not isinstance(class_path, str) or not class_path.strip():
            found.append(f'{key}.class: required, like "package.module:Class"')
        if not isinstance(enabled, bool):
            found.append(f"{key}.enabled: must be true or false, got {enabled!r}")
        if account is not None and not isinstance(account, str):
            found.append(f"{key}.account: must be a string, got {account!r}")
        if not _positive_number(self.heartbeat_interval_s):
            found.append(
                f"{key}.heartbeat_interval_s: must be a number > 0, got "
                f"{self.heartbeat_interval_s!r}"
            )
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            found.append(f"{key}.max_restarts: must be an integer >= 0, got {max_restarts!r}")
        if not _positive_number(self.restart_period_s):
            found.append(
                f"{key}.restart_period_s: must be a number > 0, got {self.restart_period_s!r}"
            )
        return found

    @classmethod
    def from_config(cls, name: str, cfg: StrategyConfig) -> StrategySpec:
        """Build from the config loader's ``[strategies.NAME]`` table.

        Raises:
            ConfigError: a value is invalid (the name, or a section built in
                code rather than by the loader).
        """
        return cls(
            name=name,
            class_path=cfg.class_path,
            enabled=cfg.enabled,
            account=cfg.account,
            heartbeat_interval_s=cfg.heartbeat_interval_s,
            max_restarts=cfg.max_restarts,
            restart_period_s=cfg.restart_period_s,
            options=cfg.options,
        )


def _positive_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )
