"""The trading sections of the config schema: orders, risk, accounts, strategies.

``[orders]`` (the order pipeline), ``[risk]`` (pre-trade limits, the defaults
of every account), one ``[accounts.NAME]`` entry with its ``risk`` overrides,
and one ``[strategies.NAME]`` entry. The process's sections are in
:mod:`daemon.config.sections`; their cross-key rules are checked by
:mod:`daemon.config.loader`.

Decimal amounts (risk limits) are TOML *strings* (``"0.5"``): a TOML float has
already been rounded to binary, and a limit of 0.1 BTC must mean exactly that.
``""`` means "unlimited" where a limit may be switched off.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final, Literal

import attrs

from daemon.config.declare import (
    SYMBOL_NAMES,
    DecimalLimit,
    opt,
    override,
    required,
    section,
    table,
)
from daemon.orders.ids import DEFAULT_PREFIX
from daemon.risk.limits import (
    DEFAULT_MAX_OPEN_ORDERS,
    DEFAULT_MAX_ORDERS_PER_WINDOW,
    DEFAULT_ORDER_WINDOW_S,
    RiskLimits,
)


@attrs.frozen
class OrdersConfig:
    """The order pipeline: entry, group commit, per-account executor, reconciliation.

    See docs/ARCHITECTURE.md §4 Orders and §8. The timeouts nest: one new-order request
    (``send_timeout_s``) runs inside the shielded send→persist→ack section
    (``section_deadline_s``), which must leave time to persist the answer.

    The pipeline (:class:`daemon.orders.service.OrdersService`) takes this
    section as its settings; the loader checks the ranges and the cross-key
    rules (:func:`daemon.config.loader._check_orders`), so nothing checks them a
    second time.
    """

    dispatch: Literal["sharded", "dynamic"] = opt(
        "sharded",
        help='How accounts map to executor workers: "sharded" (a fixed set of workers, '
        'each account hashed to one) or "dynamic" (a queue per account, created on first '
        "use and retired when idle). Either way one account's orders run one at a time, "
        "in submit order.",
    )
    shards: int = opt(4, ge=1, le=256, help="Sharded: number of executor workers.")
    max_account_queues: int = opt(
        64,
        ge=1,
        le=100_000,
        help="Dynamic: most live per-account queues; an order for one more account is "
        "refused with a clear error rather than growing without bound.",
    )
    account_queue_capacity: int = opt(
        1000, ge=1, le=1_000_000, help="Work items buffered by each shard or account queue."
    )
    idle_queue_s: float = opt(
        60.0, gt=0, le=86_400, help="Dynamic: an account queue idle this long is retired."
    )
    entry_queue_capacity: int = opt(
        4096,
        ge=1,
        le=1_000_000,
        help="Submissions waiting for the group commit; beyond it entry answers 503 with "
        "Retry-After (backpressure instead of unbounded memory).",
    )
    group_commit_max: int = opt(
        512,
        ge=1,
        le=100_000,
        help="Most intents recorded by one commit (one fsync shared by many orders).",
    )
    send_timeout_s: float = opt(
        5.0, gt=0, le=300, help="Timeout of one new-order request to the venue."
    )
    answer_hold_ms: float = opt(
        2.0,
        ge=0,
        le=1000,
        help="An intent sent at once (its account idle) is answered when its request is "
        "on the wire, or after at most this long: the order goes out first, the answer "
        "while the venue works. 0 answers right after the commit.",
    )
    section_deadline_s: float = opt(
        10.0,
        gt=0,
        le=3600,
        help="Bound of the shielded send -> persist -> ack section; greater than "
        "send_timeout_s, so the answer can still be persisted. Shutdown waits at most "
        "this long for a send in flight.",
    )
    drain_timeout_s: float = opt(
        10.0,
        gt=0,
        le=3600,
        help="Graceful stop: time to drain queued orders; what has not started by then "
        "stays PENDING for the next start.",
    )
    clock_skew_s: float = opt(
        1.0, ge=0, le=60, help="Assumed worst clock difference between us and the venue."
    )
    query_lag_s: float = opt(
        2.0,
        ge=0,
        le=300,
        help="How long a new order may take to become visible to the venue's order query.",
    )
    unwitnessed_hold_s: float = opt(
        10.0,
        ge=0,
        le=3600,
        help="With a user data stream configured: how much longer than the visibility grace "
        "a resend waits when the stream was down while the order may have been processed "
        "(its events then are lost; the query alone must prove absence).",
    )
    unknown_retry_s: float = opt(
        1.0, gt=0, le=3600, help="Delay between queries that resolve an UNKNOWN order."
    )
    reconcile_interval_s: float = opt(
        30.0,
        gt=0,
        le=86_400,
        reload="live",
        help="Period of reconciliation against the venue after the start-up one.",
    )
    reconcile_concurrency: int = opt(
        4,
        ge=1,
        le=64,
        help="Venue queries in flight at once during reconciliation (also bounded by the "
        "rate limiter).",
    )
    startup_reconcile_timeout_s: float = opt(
        45.0,
        gt=0,
        le=3600,
        help="Bound of the start-up reconciliation that runs before sending is enabled; "
        "less than daemon.start_timeout_s when accounts are configured.",
    )
    poll_interval_s: float = opt(
        2.0,
        gt=0,
        le=3600,
        reload="live",
        help="Period of status and fill polling of open orders.",
    )
    instance_id: str = opt(
        "",
        help="This daemon's name in the account leases of a shared store (several daemons, "
        "one PostgreSQL): stable across restarts, distinct per daemon. Empty: the host "
        "name, with @NAME when $TRADINGD_INSTANCE is set (tradingd@NAME.service sets it).",
    )
    lease_ttl_s: float = opt(
        20.0,
        gt=0,
        le=3600,
        help="How long an account's lease lasts after each renewal (on the store's clock). "
        "A send starts only while more than section_deadline_s of it is left, so it must "
        "exceed section_deadline_s + 2 x lease_renew_s; another daemon takes a dead one's "
        "accounts over after it runs out, plus section_deadline_s + query_lag_s.",
    )
    lease_renew_s: float = opt(
        3.0,
        gt=0,
        le=600,
        help="Period of the lease keeper: renews this daemon's account leases and takes "
        "over the ones another daemon let run out.",
    )
    id_prefix: str = opt(
        DEFAULT_PREFIX,
        help="Prefix of client order ids: 1-10 characters of A-Z, a-z, 0-9, '_' and '-'. "
        "It marks our orders at reconciliation; change it only with no order in flight.",
    )

    def lease_problems(self) -> list[tuple[str, str]]:
        """Cross-key rules of the lease keys, as ``(key, message)``."""
        need = self.section_deadline_s + 2 * self.lease_renew_s
        if self.lease_ttl_s <= need:
            return [
                (
                    "lease_ttl_s",
                    f"must be greater than section_deadline_s + 2 x lease_renew_s ({need:g}), "
                    f"got {self.lease_ttl_s:g}: a send starts only while more than "
                    "section_deadline_s of the lease is left",
                )
            ]
        return []

    def visibility_grace_s(self, recv_window_ms: int) -> float:
        """How long after the SENDING mark a venue's "no such order" still proves nothing.

        The mark is written before the request is sent. The request may reach
        the venue as late as the section's deadline, the venue still executes
        it if it is within ``recvWindow`` of its signed timestamp (as judged
        by a clock that may be ``clock_skew_s`` off ours), and a new order may
        take ``query_lag_s`` to show in queries. Only after all of that is an
        absent order proven absent and may be resent with the same id.
        """
        return (
            self.section_deadline_s + recv_window_ms / 1000 + self.clock_skew_s + self.query_lag_s
        )


@attrs.frozen
class RiskConfig:
    """Pre-trade risk limits of the main stage, reserved per order (docs/ARCHITECTURE.md §4).

    These are the defaults of every account; ``[accounts.NAME.risk]`` overrides
    them key by key. All of them change live on reload.
    """

    max_orders_per_window: int = opt(
        DEFAULT_MAX_ORDERS_PER_WINDOW,
        ge=0,
        le=1_000_000,
        reload="live",
        help="New orders per account per sliding order_window_s (0: no limit). The "
        "default matches Binance Spot's own 50 per 10 s, so a runaway strategy meets "
        "this limit before the venue's ban.",
    )
    order_window_s: float = opt(
        DEFAULT_ORDER_WINDOW_S,
        gt=0,
        le=86_400,
        reload="live",
        help="The order-rate window, in seconds.",
    )
    max_order_notional: DecimalLimit = opt(
        "",
        reload="live",
        help="Largest price x quantity of one order in the quote asset, a decimal "
        'string such as "1000" ("": no limit).',
    )
    max_open_orders: int = opt(
        DEFAULT_MAX_OPEN_ORDERS,
        ge=0,
        le=1_000_000,
        reload="live",
        help="Open orders per account (0: no limit).",
    )
    max_position_qty: DecimalLimit = opt(
        "",
        reload="live",
        help="Largest absolute position per symbol in base quantity, counting open "
        'orders on the same side; a decimal string ("": no limit; "0": only reducing '
        "orders).",
    )
    position_qty_by_symbol: Mapping[str, Decimal] = table(
        reload="live",
        names=SYMBOL_NAMES,
        help='Per-symbol max_position_qty, SYMBOL = "decimal" (1 BTC and 1 DOGE are not '
        "the same risk).",
    )

    def limits(self) -> RiskLimits:
        """These limits in the form pre-trade risk uses (0 and "" become "no limit")."""
        return RiskLimits(
            max_orders_per_window=self.max_orders_per_window or None,
            order_window_s=self.order_window_s,
            max_order_notional=_limit_value(self.max_order_notional),
            max_open_orders=self.max_open_orders or None,
            max_position_qty=_limit_value(self.max_position_qty),
            position_qty_by_symbol=self.position_qty_by_symbol,
        )


def _limit_value(value: DecimalLimit) -> Decimal | None:
    # Not ``value or None``: Decimal("0") is a limit (only reducing), not "no limit".
    return None if isinstance(value, str) else value


#: The keys of ``[risk]``, whose ranges and reload kinds the overrides take.
_RISK: Final = attrs.fields(RiskConfig)


@attrs.frozen
class AccountRiskConfig:
    """``[accounts.NAME.risk]``: this account's overrides of ``[risk]``.

    A key left out inherits ``[risk]``; ``position_qty_by_symbol`` entries are
    merged over the defaults' entries symbol by symbol.
    """

    max_orders_per_window: int | None = override(
        _RISK.max_orders_per_window, help="Overrides risk.max_orders_per_window (0: no limit)."
    )
    order_window_s: float | None = override(
        _RISK.order_window_s, help="Overrides risk.order_window_s."
    )
    max_order_notional: DecimalLimit | None = override(
        _RISK.max_order_notional, help='Overrides risk.max_order_notional ("": no limit).'
    )
    max_open_orders: int | None = override(
        _RISK.max_open_orders, help="Overrides risk.max_open_orders (0: no limit)."
    )
    max_position_qty: DecimalLimit | None = override(
        _RISK.max_position_qty, help='Overrides risk.max_position_qty ("": no limit).'
    )
    position_qty_by_symbol: Mapping[str, Decimal] | None = override(
        _RISK.position_qty_by_symbol,
        help="Per-symbol position limits of this account, merged over risk.position_qty_by_symbol.",
    )

    def over(self, base: RiskConfig) -> RiskConfig:
        """``base`` with these overrides applied."""
        changes: dict[str, Any] = {}
        for field in attrs.fields(AccountRiskConfig):
            value = getattr(self, field.name)
            if value is not None:
                changes[field.name] = value
        if self.position_qty_by_symbol is not None:
            changes["position_qty_by_symbol"] = types.MappingProxyType(
                {**base.position_qty_by_symbol, **self.position_qty_by_symbol}
            )
        return attrs.evolve(base, **changes)

    def overridden(self) -> tuple[str, ...]:
        """Names of the keys this account sets."""
        return tuple(
            f.name for f in attrs.fields(AccountRiskConfig) if getattr(self, f.name) is not None
        )


@attrs.frozen
class AccountConfig:
    """One trading account: ``[accounts.NAME]``."""

    venue: str = required(
        help="The [venues.NAME] this account trades on (its keys sign the orders)."
    )
    risk: AccountRiskConfig = section(
        AccountRiskConfig,
        help="This account's overrides of [risk]; unset keys inherit [risk].",
    )


@attrs.frozen
class StrategyConfig:
    """One strategy run by the daemon: ``[strategies.NAME]``.

    The class is imported when the daemon starts the strategy, never when the
    configuration is loaded (``check-config`` must not run user code), so only
    the shape of ``class`` is checked here.
    """

    class_path: str = required(
        key="class",
        help='The strategy class as "package.module:Class", e.g. '
        '"daemon.strategies.example:QuoteStrategy". Required.',
    )
    enabled: bool = opt(True, help="false keeps the table but does not run the strategy.")
    account: str = opt(
        "", help="Default [accounts.NAME] the strategy trades (empty: it names one per order)."
    )
    heartbeat_interval_s: float = opt(
        10.0,
        gt=0,
        le=3600,
        help="The strategy must beat at least this often, or it is restarted.",
    )
    max_restarts: int = opt(
        5,
        ge=0,
        le=10_000,
        help="More crashes than this within restart_period_s stop the strategy (the "
        "order pipeline keeps running).",
    )
    restart_period_s: float = opt(
        60.0, gt=0, le=86_400, help="Window of the strategy's restart intensity."
    )
    options: Mapping[str, Any] = table(
        help="[strategies.NAME.options]: free-form, passed to the strategy as read-only "
        "mappings and tuples; only the strategy checks them.",
    )

    def import_target(self) -> tuple[str, str]:
        """``(module, attribute)`` of :attr:`class_path`, for the loader to import."""
        module, _, attribute = self.class_path.partition(":")
        return module, attribute


for _cls in (OrdersConfig, RiskConfig, AccountRiskConfig, AccountConfig, StrategyConfig):
    attrs.resolve_types(_cls)
