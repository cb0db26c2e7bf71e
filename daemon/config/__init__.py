"""Configuration: one TOML file, loaded strictly into frozen attrs classes.

Strict: unknown keys, wrong types and out-of-range values are errors, and
every problem is reported at once as ``FILE:LINE: dotted.key: message``
(:mod:`daemon.config.loader`). Secrets are never inline: a secret-typed key
takes ``{ credential = "NAME" }``, ``{ file = "PATH" }`` or ``{ env = "VAR" }``
(see :mod:`daemon.secrets`). Each key declares whether a change can be applied
by a reload or needs a restart (:mod:`daemon.config.reload`).

The order pipeline reads ``[orders]``; pre-trade risk reads ``[risk]`` and the
per-account overrides through :meth:`Config.limit_table`; ``[accounts.NAME]``
ties an account to a venue; ``[strategies.NAME]`` names a strategy class by
import path (imported only when the daemon starts it, never at load).

The schema *is* the attrs classes; ``config/tradingd.toml`` documents every
key with its default, and a test keeps the two in step.

Where things are (every name below is importable from ``daemon.config``):

* :mod:`~daemon.config.declare`: how a key is declared (:func:`opt`,
  :func:`required`, :func:`section`, :func:`table`, :func:`named`,
  :func:`tuning`), the :data:`Reload` kinds and :data:`DecimalLimit`;
* :mod:`~daemon.config.sections`: the process's sections (:class:`DaemonConfig`,
  :class:`LoggingConfig`, :class:`SupervisionConfig`, :class:`HealthConfig`,
  :class:`AdminConfig`, :class:`StoreConfig`, :class:`MarketDataConfig`,
  :class:`VenueConfig`, :class:`TestingConfig`, :class:`IntakeConfig`);
* :mod:`~daemon.config.trading`: :class:`OrdersConfig`, :class:`RiskConfig`,
  :class:`AccountRiskConfig`, :class:`AccountConfig`, :class:`StrategyConfig`;
* :mod:`~daemon.config.schema`: the root :class:`Config` and the walk over its keys;
* :mod:`~daemon.config.loader`: :func:`load`, :func:`loads`, :func:`check_file`,
  :func:`defaults`, the cross-key rules and :func:`parse_listen`;
* :mod:`~daemon.config.environment`: :func:`check_environment` (directories,
  socket path, secrets) and :func:`shown_path`;
* :mod:`~daemon.config.reload`: :class:`ConfigDiff`, :func:`diff`, :func:`apply_live`;
* :mod:`~daemon.config.describe`: :func:`describe_keys` and :func:`summary`
  (``check-config``'s output).
"""

from __future__ import annotations

from daemon.config.declare import (
    DecimalLimit,
    Reload,
    named,
    opt,
    override,
    required,
    section,
    table,
    tuning,
)
from daemon.config.describe import describe_keys, summary
from daemon.config.environment import (
    PSEUDO_FILESYSTEMS,
    PSEUDO_TREES,
    check_environment,
    shown_path,
)
from daemon.config.loader import check_file, defaults, load, loads, parse_listen
from daemon.config.reload import ConfigDiff, apply_live, diff
from daemon.config.schema import Config
from daemon.config.sections import (
    AdminConfig,
    DaemonConfig,
    HealthConfig,
    IntakeConfig,
    LoggingConfig,
    MarketDataConfig,
    StoreConfig,
    SupervisionConfig,
    TestingConfig,
    VenueConfig,
)
from daemon.config.trading import (
    AccountConfig,
    AccountRiskConfig,
    OrdersConfig,
    RiskConfig,
    StrategyConfig,
)

__all__ = [
    "PSEUDO_FILESYSTEMS",
    "PSEUDO_TREES",
    "AccountConfig",
    "AccountRiskConfig",
    "AdminConfig",
    "Config",
    "ConfigDiff",
    "DaemonConfig",
    "DecimalLimit",
    "HealthConfig",
    "IntakeConfig",
    "LoggingConfig",
    "MarketDataConfig",
    "OrdersConfig",
    "Reload",
    "RiskConfig",
    "StoreConfig",
    "StrategyConfig",
    "SupervisionConfig",
    "TestingConfig",
    "VenueConfig",
    "apply_live",
    "check_environment",
    "check_file",
    "defaults",
    "describe_keys",
    "diff",
    "load",
    "loads",
    "named",
    "opt",
    "override",
    "parse_listen",
    "required",
    "section",
    "shown_path",
    "summary",
    "table",
    "tuning",
]
