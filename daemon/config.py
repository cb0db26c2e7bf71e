"""Configuration: one TOML file, loaded strictly into frozen attrs classes.

Why strict: a typo in a trading daemon's config (``max_restart = 50``) that is
silently ignored is a production incident waiting for its day. So:

* unknown keys are errors (with a "did you mean" hint);
* wrong types are errors (``"5"`` is not an integer; ``5`` is accepted for a float);
* out-of-range values are errors;
* every problem is reported at once, each naming the file, the dotted key path
  and the line, e.g. ``/etc/tradingd/tradingd.toml:12: admin.listen: …``.

Secrets are never inline: a secret-typed key takes ``{ credential = "NAME" }``,
``{ file = "PATH" }`` or ``{ env = "VAR" }`` (see :mod:`daemon.secrets`).

Each key declares whether a change can be applied by a reload (SIGHUP,
``tradingd reload``) or needs a restart; :func:`diff` names both kinds and
:func:`apply_live` applies the live ones.

Decimal amounts (risk limits) are TOML *strings* (``"0.5"``): a TOML float has
already been rounded to binary, and a limit of 0.1 BTC must mean exactly that.
``""`` means "unlimited" where a limit may be switched off.

The order pipeline reads ``[orders]``; pre-trade risk reads ``[risk]`` and the
per-account overrides through :meth:`Config.limit_table`; ``[accounts.NAME]``
ties an account to a venue; ``[strategies.NAME]`` names a strategy class by
import path (imported only when the daemon starts it, never at load).

The schema *is* the attrs classes below; ``config/tradingd.toml`` documents every
key with its default, and a test keeps the two in step.
"""

from __future__ import annotations

import ipaddress
import keyword
import math
import os
import re
import types
import urllib.parse
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias, get_args, get_origin

import attrs

from daemon import tomlschema
from daemon.errors import ConfigError, SecretError
from daemon.orders.ids import DEFAULT_PREFIX, digest_bits
from daemon.risk.limits import (
    DEFAULT_MAX_OPEN_ORDERS,
    DEFAULT_MAX_ORDERS_PER_WINDOW,
    DEFAULT_ORDER_WINDOW_S,
    LimitTable,
    RiskLimits,
)
from daemon.secrets import SECRET_KINDS, SecretRef, credential_path, resolve
from daemon.supervise import DEFAULT_MAX_RESTARTS, DEFAULT_PERIOD_S

Reload = Literal["live", "restart"]

#: A decimal limit as written in the file: a :class:`~decimal.Decimal`, or ``""``
#: for "unlimited" (a TOML string either way; floats are refused).
DecimalLimit: TypeAlias = Decimal | Literal[""]


def opt(
    default: Any,
    *,
    help: str,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    reload: Reload = "restart",
    names: tomlschema.EntryNames | None = None,
) -> Any:
    """Declare a config key: its default, one line of help, its range and reload kind.

    ``names`` restricts the keys of a table-valued key (e.g. symbols).
    """
    metadata: dict[str, Any] = {"help": help, "ge": ge, "gt": gt, "le": le, "reload": reload}
    if names is not None:
        metadata[tomlschema.ENTRY_NAMES] = names
    return attrs.field(default=default, metadata=metadata)


def tuning(default: Any, *, help: str) -> Any:
    """Declare a component's internal tunable: not a config key, only its code and tests set it.

    It lives in the section so that the component takes one value (the section)
    and each number has one declaration; the loader never reads it from the file
    (an unknown key there is an error) and :func:`diff` and :func:`describe_keys`
    skip it. ``default`` may be an :class:`attrs.Factory` computed from the keys.
    """
    return attrs.field(default=default, metadata={"help": help, tomlschema.INTERNAL: True})


def required(*, help: str, reload: Reload = "restart", key: str | None = None) -> Any:
    """Declare a key that has no default and must be present.

    ``key`` is the TOML key when it cannot be the attribute's name (``class``).
    """
    metadata: dict[str, Any] = {"help": help, "reload": reload}
    if key is not None:
        metadata[tomlschema.TOML_KEY] = key
    return attrs.field(metadata=metadata)


def section(cls: type[Any], *, help: str) -> Any:
    """Declare a nested table with all-default contents."""
    return attrs.field(factory=cls, metadata={"help": help, "reload": "live"})


def table(
    *, help: str, reload: Reload = "restart", names: tomlschema.EntryNames | None = None
) -> Any:
    """Declare a table-valued key whose keys the user chooses; empty by default."""
    metadata: dict[str, Any] = {"help": help, "reload": reload}
    if names is not None:
        metadata[tomlschema.ENTRY_NAMES] = names
    return attrs.field(factory=_empty_mapping, metadata=metadata)


def named(*, help: str) -> Any:
    """Declare a table of named entries such as ``[venues.NAME]`` (empty by default)."""
    return attrs.field(
        factory=_empty_mapping, metadata={"help": help, tomlschema.ENTRY_NAMES: _ENTRY_NAMES}
    )


def _empty_mapping() -> Mapping[str, Any]:
    return types.MappingProxyType({})


_SYMBOL: Final = re.compile(r"[A-Z0-9]{2,20}")
_SYMBOL_MESSAGE: Final = "symbols are 2-20 characters of A-Z and 0-9, e.g. BTCUSDT"
_SYMBOL_NAMES: Final = tomlschema.EntryNames(_SYMBOL, _SYMBOL_MESSAGE)
#: Names of entries in named tables such as ``[venues.NAME]``.
_ENTRY_NAMES: Final = tomlschema.EntryNames(
    re.compile(r"[a-z0-9][a-z0-9_-]{0,31}"),
    "names are 1-32 characters of a-z, 0-9, '_' and '-', starting with a letter or digit",
)
#: Plain decimal notation only: no exponent, no "_", no "NaN"/"Infinity".
_DECIMAL_TEXT: Final = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
Report = tomlschema.Report


# --------------------------------------------------------------------------- schema


@attrs.frozen
class DaemonConfig:
    """Process-wide settings."""

    state_dir: Path = opt(
        Path("/var/lib/tradingd"),
        help="Directory for durable state (databases, dead letters). Relative paths are "
        "resolved against the config file's directory.",
    )
    control_socket: str = opt(
        "",
        help='Unix socket for `tradingd reload/status`. Empty: "$RUNTIME_DIRECTORY/control.sock" '
        'under systemd, else "<state_dir>/control.sock".',
    )
    shutdown_timeout_s: float = opt(
        20.0,
        gt=0,
        le=3600,
        reload="live",
        help="Graceful stop: time to drain in-flight work before it is cancelled. "
        "Keep systemd's TimeoutStopSec= larger.",
    )
    start_timeout_s: float = opt(
        60.0, gt=0, le=3600, help="Time the whole tree may take to report ready."
    )


@attrs.frozen
class LoggingConfig:
    """Where and how much to log (always to stderr; journald adds timestamps)."""

    level: Literal["debug", "info", "warning", "error"] = opt(
        "info", reload="live", help="Minimum level: debug, info, warning or error."
    )
    format: Literal["auto", "text", "json"] = opt(
        "auto",
        reload="live",
        help='"text", "json" (one object per line), or "auto": journald-friendly text '
        "under systemd, text with timestamps on a terminal.",
    )


@attrs.frozen
class SupervisionConfig:
    """Restart policy of the supervision tree (Erlang/OTP style)."""

    max_restarts: int = opt(
        DEFAULT_MAX_RESTARTS,
        ge=0,
        le=10_000,
        help="More restarts than this within period_s escalates.",
    )
    period_s: float = opt(
        DEFAULT_PERIOD_S, gt=0, le=86_400, help="Window of the restart intensity."
    )
    backoff_initial_s: float = opt(0.5, ge=0, le=3600, help="First restart delay.")
    backoff_max_s: float = opt(30.0, ge=0, le=3600, help="Cap of the exponential restart delay.")
    child_shutdown_grace_s: float = opt(
        5.0, gt=0, le=3600, help="Time a child gets to stop by itself before it is cancelled."
    )


@attrs.frozen
class HealthConfig:
    """Liveness: heartbeats, event-loop lag, systemd watchdog."""

    heartbeat_interval_s: float = opt(
        1.0, gt=0, le=3600, help="Heartbeat interval of the daemon's own critical tasks."
    )
    heartbeat_tolerance: float = opt(
        5.0,
        ge=1.5,
        le=1000,
        help="A heartbeat older than interval x tolerance is stale: the child is restarted.",
    )
    lag_probe_interval_s: float = opt(
        0.1, gt=0, le=60, reload="live", help="Period of the event-loop lag (sleep drift) probe."
    )
    lag_window_s: float = opt(
        60.0, gt=0, le=86_400, reload="live", help="Window of the lag percentiles."
    )
    lag_degraded_ms: float = opt(
        100.0,
        gt=0,
        le=3_600_000,
        reload="live",
        help="p99 loop lag above this marks health degraded.",
    )
    lag_unhealthy_ms: float = opt(
        2000.0,
        gt=0,
        le=3_600_000,
        reload="live",
        help="A lag sample above this marks health unhealthy (watchdog pings stop).",
    )
    slow_step_ms: float = opt(
        20.0,
        gt=0,
        le=3_600_000,
        reload="live",
        help="Task steps longer than this are recorded by task name.",
    )
    blocked_loop_report_s: float = opt(
        1.0,
        gt=0,
        le=3600,
        reload="restart",
        help="A thread logs the blocking task when the loop is stuck in one step longer than this.",
    )
    status_interval_s: float = opt(
        5.0, gt=0, le=3600, reload="live", help="Period of systemd STATUS= updates."
    )
    min_free_disk_mb: int = opt(
        256,
        ge=0,
        le=1_000_000_000,
        reload="live",
        help="Free space under state_dir below this marks health degraded (0: no check).",
    )


@attrs.frozen
class AdminConfig:
    """The operator's HTTP API (loopback only)."""

    listen: str = opt(
        "127.0.0.1:8787",
        help='"HOST:PORT" on a loopback address; empty disables the admin API.',
    )
    token: SecretRef | None = opt(
        None,
        reload="live",
        help="Bearer token required by state-changing endpoints (a secret reference).",
    )
    max_connections: int = opt(64, ge=1, le=10_000, help="Concurrent admin connections.")
    max_connections_per_client: int = opt(
        0,
        ge=0,
        le=10_000,
        help="Most of max_connections one peer address may hold; more go to the reserve "
        "(0: no separate limit; on loopback every client is 127.0.0.1 or ::1).",
    )
    reserved_connections: int = opt(
        8,
        ge=0,
        le=1000,
        help="Extra connections beyond max_connections that only serve /health, /status "
        "and POST /trading/* (one request each), so the operator's switches always answer.",
    )
    head_timeout_s: float = opt(
        2.0,
        gt=0,
        le=60,
        help="The request line and headers must arrive within this; idle and half-open "
        "connections are closed, and when the pool is full the longest-waiting one is "
        "evicted for a new connection.",
    )
    reject_log_interval_s: float = opt(
        10.0,
        gt=0,
        le=3600,
        help="Refused and evicted connections are logged as one summary line per interval.",
    )


@attrs.frozen
class StoreConfig:
    """The embedded SQLite store (one owner thread; WAL)."""

    path: Path = opt(
        Path("tradingd.db"),
        help="Database file. Relative paths are under daemon.state_dir.",
    )
    synchronous_market: Literal["NORMAL", "FULL"] = opt(
        "NORMAL",
        help='SQLite synchronous level for market-data commits ("NORMAL" or "FULL"); '
        "order tables always commit with FULL.",
    )
    busy_timeout_s: float = opt(5.0, gt=0, le=600, help="Wait for a locked database.")
    retention_days: float = opt(
        0.0,
        ge=0,
        le=36_500,
        help="Prune market data older than this many days (0: keep everything).",
    )
    prune_interval_s: float = opt(3600.0, gt=0, le=86_400, help="How often retention runs.")
    prune_batch_rows: int = opt(
        5000,
        ge=1,
        le=1_000_000,
        help="Rows deleted per pruning transaction (small: never stalls ingestion).",
    )


@attrs.frozen
class MarketDataConfig:
    """Market-data capture: trades and book snapshots into the store.

    The capture service (:class:`daemon.marketdata.MarketDataService`) takes
    this section as its settings. The keys are checked by the loader (ranges,
    symbols, the venue); the fields after them are internal tunables, set only
    by code and tests (:func:`tuning`).
    """

    venue: str = opt("", help="The [venues.NAME] to capture from; empty disables capture.")
    symbols: tuple[str, ...] = opt((), help='Symbols to capture, e.g. ["BTCUSDT", "ETHUSDT"].')
    chunk_size: int = opt(1000, ge=1, le=100_000, help="Trades per store transaction.")
    trades_queue_capacity: int = opt(
        10_000,
        ge=1,
        le=10_000_000,
        help="Bounded trades queue between feed and writer; when full the feed waits "
        "(backpressure, never drops).",
    )
    flush_interval_s: float = opt(
        0.5, gt=0, le=60, help="Longest time a partial chunk waits before it is written."
    )
    snapshot_interval_s: float = opt(
        60.0, ge=0, le=86_400, help="Period of stored order book snapshots (0: none)."
    )
    snapshot_depth: int = opt(20, ge=1, le=5000, help="Levels per side in a stored snapshot.")
    backfill_limit: int = opt(
        1000, ge=1, le=1000, help="Trades per historicalTrades request when filling a gap."
    )
    lag_warn_s: float = opt(
        30.0,
        gt=0,
        le=86_400,
        help="Health is degraded when the consumer lag, or the time the trades queue has "
        "stayed full, exceeds this.",
    )
    tail_check_interval_s: float = opt(
        5.0,
        ge=0,
        le=86_400,
        help="When a symbol's stream has been quiet this long, compare the last captured "
        "trade id with the venue's latest (GET /api/v3/trades?limit=1, weight 25) and "
        "backfill a missed tail; again every interval while quiet (0: off).",
    )

    # Internal tunables of capture (not config keys; see :func:`tuning`).
    stream_queue_capacity: int = tuning(
        1000,
        help="Bound of the stream -> feed event queue. When it is full the stream stops "
        "reading the socket, and TCP pushes back.",
    )
    view_depth: int = tuning(20, help="Levels per side in the book view published to strategies.")
    book_snapshot_limit: int = tuning(
        attrs.Factory(lambda section: max(1000, section.snapshot_depth), takes_self=True),
        help="limit of the REST depth snapshot a book is (re)synchronised from: at least "
        "snapshot_depth (default max(1000, snapshot_depth)), deeper on purpose: diff "
        "updates remove levels, and the book must still have snapshot_depth after.",
    )
    retry_initial_s: float = tuning(
        0.1, help="First delay after a failed store write or REST call."
    )
    retry_max_s: float = tuning(
        5.0, help="Cap of those delays (equal jitter: half fixed, half random)."
    )
    heartbeat_interval_s: float = tuning(
        5.0, help="Heartbeat promise of the feed, writer and snapshotter."
    )
    drain_timeout_s: float = tuning(
        10.0, help="Grace the writer gets at shutdown to commit what is queued."
    )
    lag_window: int = tuning(
        10_000, help="How many recent commit lags p50/p99/max are computed over."
    )
    resync_warn_s: float = tuning(
        30.0,
        help="Health is degraded when a book has been out of sync this long while the "
        "stream is connected.",
    )
    backfill_failures_warn: int = tuning(
        3,
        help="Health is degraded after this many consecutive failed historicalTrades "
        "fetches (a backfill that keeps failing).",
    )


@attrs.frozen
class VenueConfig:
    """One exchange connection: ``[venues.NAME]``."""

    rest_url: str = required(
        help='Base URL of the REST API, e.g. "https://testnet.binance.vision" or the '
        'simulator\'s "http://127.0.0.1:PORT".'
    )
    ws_url: str = required(
        help='Base URL of the WebSocket streams, e.g. "wss://stream.testnet.binance.vision" '
        'or the simulator\'s "ws://127.0.0.1:PORT".'
    )
    protocol: Literal["binance"] = opt(
        "binance", help="Wire protocol: the Binance Spot API (also spoken by `tradingd sim`)."
    )
    api_key: SecretRef | None = opt(
        None, help="API key (a secret reference); needed for orders and account data."
    )
    api_secret: SecretRef | None = opt(
        None, help="API secret for HMAC-SHA256 request signing (a secret reference)."
    )
    recv_window_ms: int = opt(
        5000, ge=1, le=60_000, help="recvWindow of signed requests, in milliseconds."
    )
    request_timeout_s: float = opt(10.0, gt=0, le=300, help="Timeout of one REST request.")
    stale_after_s: float = opt(
        30.0, gt=0, le=3600, help="A stream silent this long is reconnected."
    )


@attrs.frozen
class TestingConfig:
    """Test-only switches. Never enable them in production."""

    fault_injection: bool = opt(
        False,
        help="Allow `tradingd debug-fault` to block the loop or hang a heartbeat "
        "(for watchdog tests).",
    )


@attrs.frozen
class OrdersConfig:
    """The order pipeline: entry, group commit, per-account executor, reconciliation.

    See docs/ARCHITECTURE.md §4 Orders and §8. The timeouts nest: one new-order request
    (``send_timeout_s``) runs inside the shielded send→persist→ack section
    (``section_deadline_s``), which must leave time to persist the answer.

    The pipeline (:class:`daemon.orders.service.OrdersService`) takes this
    section as its settings; the loader checks the ranges and the cross-key
    rules (:func:`_check_orders`), so nothing checks them a second time.
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
    id_prefix: str = opt(
        DEFAULT_PREFIX,
        help="Prefix of client order ids: 1-10 characters of A-Z, a-z, 0-9, '_' and '-'. "
        "It marks our orders at reconciliation; change it only with no order in flight.",
    )

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
        names=_SYMBOL_NAMES,
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


@attrs.frozen
class AccountRiskConfig:
    """``[accounts.NAME.risk]``: this account's overrides of ``[risk]``.

    A key left out inherits ``[risk]``; ``position_qty_by_symbol`` entries are
    merged over the defaults' entries symbol by symbol.
    """

    max_orders_per_window: int | None = opt(
        None,
        ge=0,
        le=1_000_000,
        reload="live",
        help="Overrides risk.max_orders_per_window (0: no limit).",
    )
    order_window_s: float | None = opt(
        None, gt=0, le=86_400, reload="live", help="Overrides risk.order_window_s."
    )
    max_order_notional: DecimalLimit | None = opt(
        None, reload="live", help='Overrides risk.max_order_notional ("": no limit).'
    )
    max_open_orders: int | None = opt(
        None,
        ge=0,
        le=1_000_000,
        reload="live",
        help="Overrides risk.max_open_orders (0: no limit).",
    )
    max_position_qty: DecimalLimit | None = opt(
        None, reload="live", help='Overrides risk.max_position_qty ("": no limit).'
    )
    position_qty_by_symbol: Mapping[str, Decimal] | None = opt(
        None,
        reload="live",
        names=_SYMBOL_NAMES,
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


_SCHEMA_CLASSES = (
    DaemonConfig,
    LoggingConfig,
    SupervisionConfig,
    HealthConfig,
    AdminConfig,
    TestingConfig,
    StoreConfig,
    MarketDataConfig,
    VenueConfig,
    OrdersConfig,
    RiskConfig,
    AccountRiskConfig,
    AccountConfig,
    StrategyConfig,
    Config,
)
for _cls in _SCHEMA_CLASSES:
    attrs.resolve_types(_cls, globals(), locals())


# --------------------------------------------------------------------------- loading


def load(path: str | os.PathLike[str]) -> Config:
    """Load and validate a config file.

    Raises:
        ConfigError: with every problem found, each naming file, key and line.
            Any failure to read the file (missing, unreadable, not a regular
            file, too long, not UTF-8) or to parse it (syntax, nesting too
            deep, an integer beyond the int-string limit) is one too.
    """
    p = Path(path)
    text = tomlschema.read_text(p)
    return loads(text, source=str(p), base_dir=_base_dir(p))


def loads(text: str, *, source: str = "<string>", base_dir: Path | None = None) -> Config:
    """Load and validate config text (see :func:`load`)."""
    config, report = _build(text, source=source, base_dir=base_dir)
    report.raise_if_any()
    return config


def check_file(
    path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> tuple[Config | None, list[str]]:
    """Every problem of a config file, in one pass: ``(config, problems)``.

    The file's own problems (syntax, keys, types, ranges, cross-key checks)
    and those only the system can reveal (:func:`check_environment`: the state
    directory, the control socket, every secret reference), each as
    ``FILE:LINE: key: message``. A key with a bad value falls back to its
    default for the checks that follow, but the environment is not checked
    for a key that already has a problem (no second, misleading report).

    Returns:
        The configuration (None when the file cannot be read or parsed) and
        the problems; the configuration is only meant to be used when there
        are none.
    """
    p = Path(path)
    try:
        text = tomlschema.read_text(p)
        config, report = _build(text, source=str(p), base_dir=_base_dir(p))
    except ConfigError as exc:
        return None, list(exc.problems)
    problems = list(report.problems)
    problems += check_environment(config, environ, lines=report.lines, skip=tuple(report.paths))
    return config, problems


def _base_dir(path: Path) -> Path:
    try:
        return path.resolve().parent
    except (OSError, RuntimeError):  # a symlink loop: resolved as far as it goes
        return path.absolute().parent


def _build(text: str, *, source: str, base_dir: Path | None) -> tuple[Config, tomlschema.Problems]:
    """Parse and build; problems are collected, not raised (a parse failure is raised)."""
    data = tomlschema.parse(text, source=source)
    report = tomlschema.Problems(source, tomlschema.locate_keys(text))
    values = _SCHEMA.build(Config, data, report)
    # Only a non-table document could make the top level invalid, and TOML
    # documents are always tables.
    assert isinstance(values, Config)
    config = attrs.evolve(values, source=source)
    config = _resolve_relative(config, base_dir)
    # Cross-key checks run even after per-key problems (invalid keys fell back to
    # their defaults), so one pass reports everything.
    _cross_checks(config, report)
    return config, report


def defaults() -> Config:
    """The configuration with every default."""
    return Config()


def _resolve_relative(config: Config, base_dir: Path | None) -> Config:
    state_dir = config.daemon.state_dir
    if base_dir is not None and not state_dir.is_absolute():
        state_dir = base_dir / state_dir
    return attrs.evolve(config, daemon=attrs.evolve(config.daemon, state_dir=state_dir))


def _secret_ref(raw: Any, path: tuple[str, ...], report: Report) -> tuple[bool, Any]:
    if isinstance(raw, str):
        # Deliberately do not echo the value: it is probably the secret itself.
        report(
            path,
            'secrets cannot be written inline; use { credential = "NAME" }, '
            '{ file = "PATH" } or { env = "VAR" }',
        )
        return False, None
    if not isinstance(raw, dict) or len(raw) != 1:
        report(path, "expected exactly one of { credential = ... }, { file = ... }, { env = ... }")
        return False, None
    ((kind, name),) = raw.items()
    if kind not in SECRET_KINDS:
        report((*path, kind), f"unknown secret source; use one of {', '.join(SECRET_KINDS)}")
        return False, None
    if not isinstance(name, str) or not name or "\x00" in name:
        report((*path, kind), "expected a non-empty string (without NUL characters)")
        return False, None
    return True, SecretRef(kind=kind, name=name)


def _decimal_text(
    raw: Any, path: tuple[str, ...], report: Report, *, unlimited: bool
) -> tuple[bool, Any]:
    """A decimal amount, which the file must write as a string (see the module docstring)."""
    example = '"0.5"'
    if isinstance(raw, str):
        if raw == "" and unlimited:
            return True, ""
        if _DECIMAL_TEXT.fullmatch(raw):
            return True, Decimal(raw)
        empty = ' or "" for no limit' if unlimited else ""
        shown = tomlschema.shown(raw)
        report(path, f"{shown} is not a decimal number; write e.g. {example}{empty}")
        return False, None
    if isinstance(raw, float):
        # Show the string the user probably meant (when there is one).
        hint = f'"{Decimal(repr(raw)):f}"' if math.isfinite(raw) else example
        report(
            path,
            f"decimals are written as strings, not floats (a float has already lost "
            f"digits); use a string, e.g. {hint}",
        )
        return False, None
    if isinstance(raw, int) and not isinstance(raw, bool):
        example = f'"{raw}"' if abs(raw) < 10**30 else example
        report(path, f"decimals are written as strings; use a string, e.g. {example}")
        return False, None
    report(path, f"expected a decimal string such as {example}, got {tomlschema.toml_type(raw)}")
    return False, None


def _decimal_limit(raw: Any, path: tuple[str, ...], report: Report) -> tuple[bool, Any]:
    return _decimal_text(raw, path, report, unlimited=True)


def _decimal(raw: Any, path: tuple[str, ...], report: Report) -> tuple[bool, Any]:
    return _decimal_text(raw, path, report, unlimited=False)


#: A bad value is reported and replaced by its default, so cross-key checks still run.
_SCHEMA: Final = tomlschema.Schema(
    hooks={
        SecretRef: _secret_ref,
        # Hooks match the annotation exactly, so the optional form is listed too.
        DecimalLimit: _decimal_limit,
        DecimalLimit | None: _decimal_limit,
        Decimal: _decimal,
    },
    fallback_to_default=True,
)


def _cross_checks(config: Config, report: Report) -> None:
    if "\x00" in config.daemon.control_socket:
        report(("daemon", "control_socket"), "a path cannot contain a NUL character")
    if config.admin.listen:
        try:
            host, _port = parse_listen(config.admin.listen)
        except ValueError as exc:
            report(("admin", "listen"), str(exc))
        else:
            if not _is_loopback(host):
                report(
                    ("admin", "listen"),
                    f"{host!r} is not a loopback address; the admin API only listens on "
                    "127.0.0.0/8, ::1 or localhost",
                )
    md = config.marketdata
    if md.venue:
        if md.venue not in config.venues:
            known = ", ".join(sorted(config.venues)) or "none configured"
            report(("marketdata", "venue"), f"no [venues.{md.venue}] table ({known})")
        if not md.symbols:
            report(("marketdata", "symbols"), "capture needs at least one symbol")
    for index, symbol in enumerate(md.symbols):
        if not _SYMBOL.fullmatch(symbol):
            report(
                ("marketdata", "symbols", str(index)),
                f"{symbol!r} is not a symbol (2-20 characters of A-Z and 0-9, e.g. BTCUSDT)",
            )
    if len(set(md.symbols)) != len(md.symbols):
        report(("marketdata", "symbols"), "lists a symbol twice")
    for name, venue in config.venues.items():
        _check_url(("venues", name, "rest_url"), venue.rest_url, ("http", "https"), report)
        _check_url(("venues", name, "ws_url"), venue.ws_url, ("ws", "wss"), report)
        if (venue.api_key is None) != (venue.api_secret is None):
            report(("venues", name), "api_key and api_secret go together: set both or neither")
    _check_orders(config, report)
    _check_risk(("risk",), config.risk, report)
    for name, account in config.accounts.items():
        if account.venue not in config.venues:
            known = ", ".join(sorted(config.venues)) or "none configured"
            report(("accounts", name, "venue"), f"no [venues.{account.venue}] table ({known})")
        _check_risk(("accounts", name, "risk"), account.risk, report)
    for name, strategy in config.strategies.items():
        problem = _class_path_problem(strategy.class_path)
        if problem:
            report(("strategies", name, "class"), problem)
        if strategy.account and strategy.account not in config.accounts:
            known = ", ".join(sorted(config.accounts)) or "none configured"
            report(
                ("strategies", name, "account"),
                f"no [accounts.{strategy.account}] table ({known})",
            )
    health = config.health
    if health.lag_unhealthy_ms <= health.lag_degraded_ms:
        report(
            ("health", "lag_unhealthy_ms"),
            f"must be greater than health.lag_degraded_ms ({health.lag_degraded_ms:g})",
        )
    sup = config.supervision
    if sup.backoff_max_s < sup.backoff_initial_s:
        report(
            ("supervision", "backoff_max_s"),
            f"must be >= supervision.backoff_initial_s ({sup.backoff_initial_s:g})",
        )


def _check_orders(config: Config, report: Report) -> None:
    orders = config.orders
    if orders.section_deadline_s <= orders.send_timeout_s:
        report(
            ("orders", "section_deadline_s"),
            f"must be greater than orders.send_timeout_s ({orders.send_timeout_s:g}): the "
            "section sends and then persists the answer",
        )
    # Start-up reconciliation only runs for configured accounts; a capture-only
    # daemon with a short start_timeout_s is not refused for a pipeline it does
    # not run.
    start_timeout = config.daemon.start_timeout_s
    if config.accounts and orders.startup_reconcile_timeout_s >= start_timeout:
        report(
            ("orders", "startup_reconcile_timeout_s"),
            f"must be less than daemon.start_timeout_s ({start_timeout:g}), got "
            f"{orders.startup_reconcile_timeout_s:g}: start-up reconciliation is part of the start",
        )
    if not orders.id_prefix:
        report(
            ("orders", "id_prefix"),
            "must not be empty: the prefix tells our orders from others at reconciliation",
        )
    else:
        try:
            digest_bits(orders.id_prefix)
        except ValueError as exc:
            report(("orders", "id_prefix"), str(exc))


def _check_risk(
    path: tuple[str, ...], risk: RiskConfig | AccountRiskConfig, report: Report
) -> None:
    """Signs of the decimal limits (the loader's ranges are for ints and floats)."""
    notional = risk.max_order_notional
    if isinstance(notional, Decimal) and notional <= 0:
        report(
            (*path, "max_order_notional"),
            f'must be > 0, got "{notional}" (write "" for no limit)',
        )
    position = risk.max_position_qty
    if isinstance(position, Decimal) and position < 0:
        report((*path, "max_position_qty"), f'must be >= 0, got "{position}"')
    for symbol, qty in (risk.position_qty_by_symbol or {}).items():
        if qty < 0:
            report((*path, "position_qty_by_symbol", symbol), f'must be >= 0, got "{qty}"')


def _class_path_problem(text: str) -> str | None:
    """Why ``text`` is not shaped like ``package.module:Class`` (nothing is imported)."""
    module, colon, attribute = text.partition(":")

    def name_ok(part: str) -> bool:
        return part.isidentifier() and not keyword.iskeyword(part)

    if colon and module and all(map(name_ok, module.split("."))) and name_ok(attribute):
        return None
    return (
        f'{text!r} is not an import path of the form "package.module:Class" (a dotted '
        "module path, ':', then the class name)"
    )


def parse_listen(s: str) -> tuple[str, int]:
    """Parse ``"127.0.0.1:8787"``, ``"[::1]:8787"`` or ``"localhost:8787"``.

    Returns ``(host, port)`` with IPv6 brackets removed. Port ``0`` (any free
    port) is allowed.

    Raises:
        ValueError: with a message saying what is wrong and what is expected.
    """
    expected = "expected HOST:PORT, e.g. '127.0.0.1:8787' or '[::1]:8787'"
    text = s.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"invalid listen address {s!r}: missing ']' ({expected})")
        if not rest.startswith(":"):
            raise ValueError(
                f"invalid listen address {s!r}: missing ':PORT' after ']' ({expected})"
            )
        port_text = rest[1:]
        if not host:
            raise ValueError(f"invalid listen address {s!r}: empty host ({expected})")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"invalid listen address {s!r}: missing ':PORT' ({expected})")
        if ":" in host:
            raise ValueError(
                f"invalid listen address {s!r}: an IPv6 address must be in brackets ({expected})"
            )
        if not host:
            raise ValueError(f"invalid listen address {s!r}: empty host ({expected})")
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"invalid listen address {s!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"invalid listen address {s!r}: port {port} is out of range 0..65535")
    return host, port


def _check_url(path: tuple[str, ...], url: str, schemes: tuple[str, ...], report: Report) -> None:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in schemes or not parsed.hostname:
        report(path, f"expected a {' or '.join(s + '://' for s in schemes)} URL, got {url!r}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------- checks needing the OS


def check_environment(
    config: Config,
    environ: Mapping[str, str] | None = None,
    *,
    lines: Mapping[tuple[str, ...], int] | None = None,
    skip: tuple[tuple[str, ...], ...] = (),
) -> list[str]:
    """Problems only the file system and environment can reveal.

    Checked: the state directory exists and is writable (or can be created)
    and is not on a pseudo file system (``/proc``, ``/sys``, ``/dev``, ...),
    the same for the database's and the control socket's directories, every
    secret reference resolves. Messages never contain secret values.

    Args:
        lines: key paths to lines (:func:`daemon.tomlschema.locate_keys`), so
            that each problem is ``FILE:LINE: key: message``.
        skip: key paths that already have a problem: not checked again.
    """
    env = os.environ if environ is None else environ
    report = tomlschema.Problems(config.source, lines)

    def wanted(*path: str) -> bool:
        return not any(path[: len(bad)] == bad for bad in skip)

    state_dir = config.daemon.state_dir
    if wanted("daemon", "state_dir"):
        problem = _dir_problem(state_dir)
        if problem:
            report(("daemon", "state_dir"), problem)
    store_dir = config.store_path().parent
    if store_dir != state_dir and wanted("store", "path"):
        problem = _dir_problem(store_dir)
        if problem:
            report(("store", "path"), problem)
    sock = config.control_socket_path(env)
    if wanted("daemon", "control_socket"):
        if len(os.fsencode(sock)) > 107:
            report(
                ("daemon", "control_socket"),
                f"{shown_path(sock)} is longer than a Unix socket path may be",
            )
        elif sock.parent != state_dir:
            problem = _dir_problem(sock.parent)
            if problem:
                report(("daemon", "control_socket"), problem)
    for key, ref in _secret_refs(config):
        path = tuple(key.split("."))
        if not wanted(*path):
            continue
        try:
            if ref.kind == "credential":
                credential_path(ref.name, env)
            resolve(ref, env)
        except SecretError as exc:
            report(path, str(exc))
        except (OSError, ValueError) as exc:  # never the value: only the reason
            report(path, f"{ref.kind} {ref.name!r}: cannot be read ({type(exc).__name__})")
    return list(report.problems)


#: File system types that hold no files of ours: kernel views and device nodes.
PSEUDO_FILESYSTEMS: Final = frozenset(
    {
        "autofs",
        "binfmt_misc",
        "bpf",
        "cgroup",
        "cgroup2",
        "configfs",
        "debugfs",
        "devpts",
        "devtmpfs",
        "efivarfs",
        "fusectl",
        "hugetlbfs",
        "mqueue",
        "nsfs",
        "proc",
        "pstore",
        "securityfs",
        "selinuxfs",
        "sysfs",
        "tracefs",
    }
)
#: Trees that are kernel interfaces or device nodes wherever they are mounted from.
PSEUDO_TREES: Final = (Path("/proc"), Path("/sys"), Path("/dev"))


def _pseudo_fs_problem(path: Path) -> str | None:
    """Why ``path`` is on a pseudo file system (``/proc``, ``/sys``, ``/dev``, ...), or None."""
    try:
        real = Path(os.path.realpath(path))
    except (OSError, ValueError):
        return None
    for tree in PSEUDO_TREES:
        if real == tree or tree in real.parents:
            return f"{path} is under {tree}, a kernel file system, not a place for state"
    fstype = _mount_type(real)
    if fstype in PSEUDO_FILESYSTEMS:
        return f"{path} is on a {fstype} file system, not a place for state"
    return None


def _mount_type(path: Path) -> str | None:
    """The type of the file system ``path`` is on, from ``/proc/self/mounts`` (Linux)."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as fh:
            mounts = fh.read()
    except OSError:
        return None
    best: tuple[int, str] | None = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        # Spaces and other characters in mount points are octal escapes.
        point = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1]))
        if (point == path or point in path.parents) and (
            best is None or len(point.parts) >= best[0]
        ):
            best = (len(point.parts), fields[2])
    return best[1] if best else None


def _dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot serve as a writable directory of state, or None."""
    pseudo = _pseudo_fs_problem(path)
    if pseudo:
        return pseudo
    try:
        return _writable_dir_problem(path)
    except OSError as exc:  # a name too long, a symlink loop, an I/O error ...
        return f"{shown_path(path)}: cannot be checked: {exc.strerror or exc}"


def shown_path(path: Path, limit: int = 120) -> str:
    """A path for a message, cut in the middle when it is very long."""
    text = str(path)
    return text if len(text) <= limit else f"{text[: limit // 2]}…{text[-limit // 2 :]}"


def _writable_dir_problem(path: Path) -> str | None:
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return f"{path}: no existing parent directory"
        probe = probe.parent
    if not probe.is_dir():
        return f"{path}: {probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        if probe == path:
            return f"{path} is not writable"
        return f"{path} cannot be created ({probe} is not writable)"
    return None


def _secret_refs(config: Config) -> Iterator[tuple[str, SecretRef]]:
    for leaf in _leaves(config):
        if isinstance(leaf.value, SecretRef):
            yield leaf.key, leaf.value


# --------------------------------------------------------------------------- walking the schema


def _is_section(tp: Any) -> bool:
    """A nested table of the schema (not a value type such as a secret reference)."""
    return attrs.has(tp) and tp is not SecretRef


def _entry_type(tp: Any) -> type[Any] | None:
    """The entry class of a named-entry table (``Mapping[str, VenueConfig]``), else None.

    Tables of plain values (``position_qty_by_symbol``, strategy ``options``)
    are one key: they are compared and replaced as a whole.
    """
    if get_origin(tp) in (dict, Mapping):
        entry = get_args(tp)[1]
        if _is_section(entry):
            return entry  # type: ignore[no-any-return]
    return None


def _schema_fields(cls: type[Any]) -> list[attrs.Attribute[Any]]:
    return [f for f in attrs.fields(cls) if not f.metadata.get(tomlschema.INTERNAL)]


@attrs.frozen
class _Leaf:
    """One key of a loaded configuration."""

    key: str
    value: Any
    reload: Reload
    #: The named entry (``("accounts", "main")``) the key belongs to, if any.
    entry: tuple[str, ...] | None


def _leaves(
    obj: Any, path: tuple[str, ...] = (), entry: tuple[str, ...] | None = None
) -> Iterator[_Leaf]:
    for field in _schema_fields(type(obj)):
        key = (*path, tomlschema.toml_key(field))
        value = getattr(obj, field.name)
        if _is_section(field.type):
            yield from _leaves(value, key, entry)
        elif _entry_type(field.type) is not None:
            for name, item in value.items():
                yield from _leaves(item, (*key, name), (*key, name))
        else:
            yield _Leaf(".".join(key), value, field.metadata.get("reload", "restart"), entry)


# --------------------------------------------------------------------------- reload


@attrs.frozen
class ConfigDiff:
    """What changed between two configurations, by reload kind."""

    live: tuple[str, ...]
    restart: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.live or self.restart)


def diff(old: Config, new: Config) -> ConfigDiff:
    """Keys whose value differs, split into live-reloadable and restart-only.

    A named entry that was added or removed (``[accounts.x]``) is named once,
    as restart-only: what it configures (a connection, an account's queue, a
    strategy) is built at start. Keys inside an entry present in both follow
    their own reload kind (``accounts.x.risk.*`` are live).
    """
    old_leaves = {leaf.key: leaf for leaf in _leaves(old)}
    new_leaves = {leaf.key: leaf for leaf in _leaves(new)}
    old_entries = {leaf.entry for leaf in old_leaves.values()}
    new_entries = {leaf.entry for leaf in new_leaves.values()}
    live: list[str] = []
    restart: list[str] = []
    for key in [*new_leaves, *(k for k in old_leaves if k not in new_leaves)]:
        before, after = old_leaves.get(key), new_leaves.get(key)
        if before is not None and after is not None and before.value == after.value:
            continue
        leaf = after if after is not None else before
        assert leaf is not None
        if leaf.entry is not None and (leaf.entry in old_entries) != (leaf.entry in new_entries):
            name = ".".join(leaf.entry)
            if name not in restart:
                restart.append(name)
        else:
            (live if leaf.reload == "live" else restart).append(key)
    return ConfigDiff(live=tuple(live), restart=tuple(restart))


def apply_live(current: Config, new: Config, keys: tuple[str, ...]) -> Config:
    """``current`` with the values of ``keys`` (from :func:`diff`'s ``live``) taken from ``new``.

    Walks TOML key paths through sections and named entries alike, so
    ``accounts.main.risk.max_open_orders`` replaces one value inside one
    account's table and leaves everything else, including keys that need a
    restart, as it is.

    Raises:
        KeyError: a key is not in the schema, or names an entry missing from
            either configuration (added and removed entries need a restart).
    """
    merged = current
    for key in keys:
        merged = _replace(merged, new, tuple(key.split(".")), key)
    return merged


def _replace(current: Any, new: Any, parts: tuple[str, ...], key: str) -> Any:
    fields = {tomlschema.toml_key(f): f for f in _schema_fields(type(current))}
    field = fields.get(parts[0])
    if field is None:
        raise KeyError(f"{key}: not a configuration key")
    value = getattr(new, field.name)
    rest = parts[1:]
    if rest and _entry_type(field.type) is not None:
        entries: Mapping[str, Any] = getattr(current, field.name)
        name = rest[0]
        if name not in entries or name not in value:
            raise KeyError(f"{key}: entry {name!r} is not in both configurations")
        item = _replace(entries[name], value[name], rest[1:], key) if rest[1:] else value[name]
        value = types.MappingProxyType({**entries, name: item})
    elif rest:
        if not _is_section(field.type):
            raise KeyError(f"{key}: not a configuration key")
        value = _replace(getattr(current, field.name), value, rest, key)
    return attrs.evolve(current, **{field.name: value})


def describe_keys(
    cls: type[Any] = Config, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, Any, str]]:
    """Every key as (dotted path, default, help): used by docs and their test.

    Named entries appear as ``NAME`` (``venues.NAME.rest_url``); a required key
    has the default None.
    """
    for field in _schema_fields(cls):
        key = (*path, tomlschema.toml_key(field))
        entry = _entry_type(field.type)
        if _is_section(field.type):
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
