"""The root of the config schema, :class:`Config`, and the walk over its keys.

:class:`Config` holds one field per table: the sections of
:mod:`daemon.config.sections` and :mod:`daemon.config.trading`, and the named
entries (``[venues.NAME]``, ``[accounts.NAME]``, ``[strategies.NAME]``).

The walk (:func:`leaves`, :func:`schema_fields`, :func:`entry_type`) is shared
by the reload diff (:mod:`daemon.config.reload`), the secret checks
(:mod:`daemon.config.environment`) and the key listing
(:mod:`daemon.config.describe`): internal tunables are skipped, sections are
descended into, and named entries are walked entry by entry.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

import attrs

from daemon import tomlschema
from daemon.config.declare import Reload, named, section
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
from daemon.config.trading import AccountConfig, OrdersConfig, RiskConfig, StrategyConfig
from daemon.risk.limits import LimitTable
from daemon.secrets import SecretRef


@attrs.frozen
class Config:
    """The whole configuration."""

    daemon: DaemonConfig = section(DaemonConfig, help="Process-wide settings.")
    logging: LoggingConfig = section(LoggingConfig, help="Logging.")
    supervision: SupervisionConfig = section(SupervisionConfig, help="Restart policy.")
    health: HealthConfig = section(HealthConfig, help="Liveness and watchdog.")
    admin: AdminConfig = section(AdminConfig, help="Loopback admin API.")
    testing: TestingConfig = section(TestingConfig, help="Test-only switches.")
    store: StoreConfig = section(StoreConfig, help="The embedded SQLite store.")
    marketdata: MarketDataConfig = section(MarketDataConfig, help="Market-data capture.")
    orders: OrdersConfig = section(OrdersConfig, help="The order pipeline.")
    risk: RiskConfig = section(
        RiskConfig, help="Pre-trade risk limits (defaults of every account)."
    )
    intake: IntakeConfig = section(IntakeConfig, help="Order intents from a Redis stream.")
    venues: Mapping[str, VenueConfig] = named(
        help="Exchange connections, one [venues.NAME] table each."
    )
    accounts: Mapping[str, AccountConfig] = named(
        help="Trading accounts, one [accounts.NAME] table each."
    )
    strategies: Mapping[str, StrategyConfig] = named(
        help="Strategies run by the daemon, one [strategies.NAME] table each."
    )
    #: Where the configuration came from (not a TOML key).
    source: str = attrs.field(default="<defaults>", metadata={tomlschema.INTERNAL: True})

    def limit_table(self) -> LimitTable:
        """Pre-trade risk limits: ``[risk]`` as the default, and one
        :class:`~daemon.risk.limits.RiskLimits` per account, merged from the
        defaults and that account's ``[accounts.NAME.risk]`` overrides (every
        account is listed, so the limits that apply to it are explicit).
        """
        return LimitTable(
            default=self.risk.limits(),
            accounts={
                name: account.risk.over(self.risk).limits()
                for name, account in self.accounts.items()
            },
        )

    def store_path(self) -> Path:
        """The database file (``store.path`` under ``daemon.state_dir`` if relative)."""
        path = self.store.path
        return path if path.is_absolute() else self.daemon.state_dir / path

    def control_socket_path(self, environ: Mapping[str, str] | None = None) -> Path:
        """The control socket path (see ``daemon.control_socket``)."""
        env = os.environ if environ is None else environ
        if self.daemon.control_socket:
            return Path(self.daemon.control_socket)
        runtime = env.get("RUNTIME_DIRECTORY")
        if runtime:
            # systemd may pass several directories separated by ':'.
            return Path(runtime.split(":")[0]) / "control.sock"
        return self.daemon.state_dir / "control.sock"


attrs.resolve_types(Config)


# --------------------------------------------------------------------------- walking the schema


def is_section(tp: Any) -> bool:
    """A nested table of the schema (not a value type such as a secret reference)."""
    return attrs.has(tp) and tp is not SecretRef


def entry_type(tp: Any) -> type[Any] | None:
    """The entry class of a named-entry table (``Mapping[str, VenueConfig]``), else None.

    Tables of plain values (``position_qty_by_symbol``, strategy ``options``)
    are one key: they are compared and replaced as a whole.
    """
    if get_origin(tp) in (dict, Mapping):
        entry = get_args(tp)[1]
        if is_section(entry):
            return entry  # type: ignore[no-any-return]
    return None


def schema_fields(cls: type[Any]) -> list[attrs.Attribute[Any]]:
    """The fields of ``cls`` that are TOML keys (internal tunables left out)."""
    return [f for f in attrs.fields(cls) if not f.metadata.get(tomlschema.INTERNAL)]


@attrs.frozen
class Leaf:
    """One key of a loaded configuration."""

    key: str
    value: Any
    reload: Reload
    #: The named entry (``("accounts", "main")``) the key belongs to, if any.
    entry: tuple[str, ...] | None


def leaves(
    obj: Any, path: tuple[str, ...] = (), entry: tuple[str, ...] | None = None
) -> Iterator[Leaf]:
    """Every key of ``obj`` (a loaded section or the whole :class:`Config`), depth first."""
    for field in schema_fields(type(obj)):
        key = (*path, tomlschema.toml_key(field))
        value = getattr(obj, field.name)
        if is_section(field.type):
            yield from leaves(value, key, entry)
        elif entry_type(field.type) is not None:
            for name, item in value.items():
                yield from leaves(item, (*key, name), (*key, name))
        else:
            yield Leaf(".".join(key), value, field.metadata.get("reload", "restart"), entry)
