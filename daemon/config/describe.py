"""Describing the configuration to people: every key, and a loaded config's summary.

:func:`describe_keys` lists every key with its default and help (the
documentation, ``config/tradingd.toml``, is checked against it);
:func:`summary` is what ``tradingd check-config`` prints for a valid file.
Neither ever shows a secret.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs

from daemon import tomlschema
from daemon.config.declare import DecimalLimit
from daemon.config.schema import Config, entry_type, is_section, schema_fields
from daemon.config.trading import RiskConfig


def describe_keys(
    cls: type[Any] = Config, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, Any, str]]:
    """Every key as (dotted path, default, help): used by docs and their test.

    Named entries appear as ``NAME`` (``venues.NAME.rest_url``); a required key
    has the default None.
    """
    for field in schema_fields(cls):
        key = (*path, tomlschema.toml_key(field))
        entry = entry_type(field.type)
        if is_section(field.type):
            assert field.type is not None
            yield from describe_keys(field.type, key)
        elif entry is not None:
            yield from describe_keys(entry, (*key, "NAME"))
        else:
            default: Any = field.default
            if default is attrs.NOTHING:
                default = None
            elif isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                default = default.factory()
            yield ".".join(key), default, field.metadata.get("help", "")


def summary(config: Config) -> str:
    """A short human summary for ``check-config`` (never contains secrets)."""
    admin = config.admin.listen or "disabled"
    token = f", token from {config.admin.token.describe()}" if config.admin.token else ""
    orders = config.orders
    if orders.dispatch == "sharded":
        dispatch = f"sharded over {orders.shards} workers"
    else:
        dispatch = f"dynamic, at most {orders.max_account_queues} account queues"
    lines = [
        f"config {config.source}: OK",
        f"  state_dir        {config.daemon.state_dir}",
        f"  control socket   {config.control_socket_path()}",
        f"  admin API        {admin}{token}",
        f"  shutdown timeout {config.daemon.shutdown_timeout_s:g}s",
        f"  restart policy   max {config.supervision.max_restarts} in "
        f"{config.supervision.period_s:g}s",
        f"  log              {config.logging.level} ({config.logging.format})",
        f"  venues           {', '.join(sorted(config.venues)) or 'none'}",
        f"  orders           {dispatch}; ids {orders.id_prefix!r}; send timeout "
        f"{orders.send_timeout_s:g}s within a {orders.section_deadline_s:g}s section",
        f"  risk (default)   {_describe_risk(config.risk)}",
    ]
    for name, account in sorted(config.accounts.items()):
        overrides = account.risk.overridden()
        risk = (
            f"; risk: {_describe_risk(account.risk.over(config.risk))}"
            f" (overrides {', '.join(overrides)})"
            if overrides
            else ""
        )
        lines.append(f"  account {name:<8} on venue {account.venue}{risk}")
    if not config.accounts:
        lines.append("  accounts         none (no order can be placed)")
    for name, strategy in sorted(config.strategies.items()):
        state = "enabled" if strategy.enabled else "disabled"
        on = f" on account {strategy.account}" if strategy.account else ""
        lines.append(f"  strategy {name:<7} {strategy.class_path}{on} ({state})")
    if config.testing.fault_injection:
        lines.append("  WARNING          testing.fault_injection is on: never in production")
    return "\n".join(lines)


def _describe_risk(risk: RiskConfig) -> str:
    def limit(value: DecimalLimit) -> str:
        return "no limit" if isinstance(value, str) else str(value)

    rate = (
        f"{risk.max_orders_per_window} orders per {risk.order_window_s:g}s"
        if risk.max_orders_per_window
        else "no order-rate limit"
    )
    open_orders = risk.max_open_orders or "no limit"
    by_symbol = ", ".join(f"{s} {q}" for s, q in sorted(risk.position_qty_by_symbol.items()))
    position = limit(risk.max_position_qty) + (f" ({by_symbol})" if by_symbol else "")
    return (
        f"{rate}, open orders {open_orders}, notional per order "
        f"{limit(risk.max_order_notional)}, position {position}"
    )
