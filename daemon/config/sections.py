"""The process's sections of the config schema: one frozen attrs class per table.

``[daemon]``, ``[logging]``, ``[supervision]``, ``[health]``, ``[admin]``,
``[store]``, ``[marketdata]``, ``[testing]``, one ``[venues.NAME]`` entry and
``[intake]`` (order intents from a Redis stream).
The trading sections (``[orders]``, ``[risk]``, accounts, strategies) are in
:mod:`daemon.config.trading`; the root :class:`~daemon.config.Config` that
holds them all is in :mod:`daemon.config.schema`. Each key is declared once,
with its default, range, help and reload kind (:mod:`daemon.config.declare`).
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import Literal

import attrs

from daemon.config.declare import opt, required, tuning
from daemon.secrets import SecretRef
from daemon.supervise import DEFAULT_MAX_RESTARTS, DEFAULT_PERIOD_S


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
    """The store: embedded SQLite (the default) or a shared PostgreSQL server.

    Either way one owner thread holds one connection. The loader reports
    :meth:`problems` (the DSN's rules).
    """

    backend: Literal["sqlite", "postgres"] = opt(
        "sqlite",
        help='"sqlite": the embedded file (path); "postgres": a PostgreSQL server (dsn), '
        "shared by several daemons.",
    )
    path: Path = opt(
        Path("tradingd.db"),
        help="Database file. Relative paths are under daemon.state_dir.",
    )
    dsn: str = opt(
        "",
        help='PostgreSQL DSN ("host=H port=P dbname=D user=U" or "postgresql://U@H:P/D"); '
        "a password never (see password). Its schema is the first of search_path (add "
        '"options=-csearch_path=NAME" to use another).',
    )
    password: SecretRef | None = opt(
        None, help="PostgreSQL password (a secret reference); unset: none (trust, peer, .pgpass)."
    )
    synchronous_market: Literal["NORMAL", "FULL"] = opt(
        "NORMAL",
        help='Durability of market-data commits: "NORMAL" (SQLite synchronous=NORMAL; '
        'PostgreSQL synchronous_commit=off) or "FULL"; order tables always commit fully.',
    )
    busy_timeout_s: float = opt(
        5.0, gt=0, le=600, help="Wait for a locked database (PostgreSQL: lock_timeout)."
    )
    pg_statement_timeout_s: float = opt(
        0.0, ge=0, le=3600, help="PostgreSQL statement_timeout (0: none)."
    )
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

    def problems(self) -> list[tuple[str, str]]:
        """``(key, message)`` for every rule the ranges cannot say (the loader reports them)."""
        if self.backend != "postgres":
            return []
        if not self.dsn.strip():
            return [("dsn", 'backend = "postgres" needs a DSN')]
        if self._dsn_has_password(self.dsn):
            return [("dsn", "must not contain a password: use store.password (a secret reference)")]
        return []

    @staticmethod
    def _dsn_has_password(dsn: str) -> bool:
        """Whether a libpq DSN (URL or ``key=value``) spells a password (the store checks again)."""
        if "://" in dsn:
            try:
                parts = urllib.parse.urlsplit(dsn)
            except ValueError:
                return True  # unparsable: it may hide one
            query = urllib.parse.parse_qs(parts.query)
            return parts.password is not None or "password" in query
        return re.search(r"(^|\s)password\s*=", dsn) is not None


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
    ws_api_url: str = opt(
        "",
        help="WebSocket API endpoint (orders and the user data stream), path included. "
        '"": derived from ws_url (Binance and its testnet: their documented '
        'ws-api URLs; otherwise ws_url + "/ws-api/v3", as the simulator serves it).',
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
    user_stream: bool = opt(
        True,
        help="Subscribe to the account's user data stream over the WebSocket API (needs "
        "api_key/api_secret): fills and order changes are pushed, polling is the fallback "
        "while it is down, and it is a second witness for orders of unknown outcome.",
    )
    order_transport: Literal["rest", "ws-api"] = opt(
        "rest",
        help='How orders, cancels and order queries go out: "rest" or "ws-api" (one kept-up '
        "WebSocket API connection). The same rules hold: the intent is durable before the "
        "request leaves; no answer means UNKNOWN, resolved by a query, never a blind resend.",
    )


@attrs.frozen
class TestingConfig:
    """Test-only switches. Never enable them in production."""

    fault_injection: bool = opt(
        False,
        help="Allow `tradingd debug-fault` to block the loop or hang a heartbeat "
        "(for watchdog tests).",
    )


for _cls in (
    DaemonConfig,
    LoggingConfig,
    SupervisionConfig,
    HealthConfig,
    AdminConfig,
    StoreConfig,
    MarketDataConfig,
    VenueConfig,
    TestingConfig,
):
    attrs.resolve_types(_cls)


#: A Redis key or name as the config may write it: printable ASCII, no blanks.
_REDIS_NAME = re.compile(r"[\x21-\x7e]{1,200}")


@attrs.frozen
class IntakeConfig:
    """Order intents from other processes through a Redis stream (``[intake]``).

    The keys are checked by the loader through :meth:`problems` (URL, names,
    cross-key rules); ranges are declared here. The fields after them are
    internal tunables (:func:`tuning`).
    """

    enabled: bool = opt(
        False,
        help="Read order intents from the Redis stream (needs at least one [accounts.NAME]).",
    )
    redis_url: str = opt(
        "redis://127.0.0.1:6379/0",
        help='"redis://HOST:PORT/DB", "rediss://..." (TLS) or "unix:///PATH"; a user name '
        "may be in the URL, a password never (see password).",
    )
    password: SecretRef | None = opt(
        None, help="Redis password (a secret reference); unset: no AUTH."
    )
    stream: str = opt("tradingd:intents", help="The stream order intents are added to.")
    group: str = opt(
        "tradingd",
        help="Consumer group: one per deployment; every daemon of it reads the stream "
        "through this group, so each entry is processed by one of them.",
    )
    consumer: str = opt(
        "",
        help='This daemon\'s consumer name in the group. "": "<hostname>-<pid>". A stable '
        "name lets a restarted daemon take back its own pending entries at once; else the "
        "claim sweep of a live consumer takes them after claim_idle_ms.",
    )
    batch: int = opt(100, ge=1, le=10_000, help="Entries per XREADGROUP (COUNT).")
    block_ms: int = opt(
        1000,
        ge=1,
        le=1000,
        help="Longest wait of one blocking read (BLOCK); bounds how long a stop waits "
        "for the read in flight.",
    )
    dead_letter_stream: str = opt(
        "tradingd:intents:dead",
        help="Where entries that can never be processed go (the original entry id and "
        "fields, the error, the delivery count).",
    )
    max_deliveries: int = opt(
        5,
        ge=1,
        le=1000,
        help="An entry delivered more often than this without being processed is dead-lettered.",
    )
    claim_idle_ms: int = opt(
        30_000,
        ge=100,
        le=86_400_000,
        help="Entries pending this long with another consumer (one that died) are "
        "taken over by the claim sweep (XAUTOCLAIM).",
    )
    claim_interval_s: float = opt(
        5.0, gt=0, le=3600, help="Period of the claim sweep and of the pending count."
    )

    # Internal tunables (not config keys; see :func:`tuning`).
    socket_timeout_s: float = tuning(
        5.0, help="Bound of one Redis command beyond its BLOCK (connect included)."
    )
    retry_initial_s: float = tuning(0.1, help="First delay after a failed Redis call.")
    retry_max_s: float = tuning(5.0, help="Cap of those delays (equal jitter).")
    heartbeat_interval_s: float = tuning(
        5.0, help="Heartbeat promise of the intake's loop (one read is at most block_ms)."
    )

    def problems(self, *, has_accounts: bool) -> list[tuple[str, str]]:
        """``(key, message)`` for every rule the ranges cannot say (the loader reports them)."""
        out: list[tuple[str, str]] = []
        url_problem = _redis_url_problem(self.redis_url)
        if url_problem:
            out.append(("redis_url", url_problem))
        names = {
            "stream": self.stream,
            "group": self.group,
            "dead_letter_stream": self.dead_letter_stream,
        }
        if self.consumer:
            names["consumer"] = self.consumer
        for key, value in names.items():
            if not _REDIS_NAME.fullmatch(value):
                out.append((key, "must be 1-200 printable ASCII characters without blanks"))
        if self.dead_letter_stream == self.stream:
            out.append(("dead_letter_stream", "must differ from intake.stream"))
        if self.claim_idle_ms <= self.block_ms:
            out.append(("claim_idle_ms", f"must be greater than intake.block_ms ({self.block_ms})"))
        if self.enabled and not has_accounts:
            out.append(("enabled", "the intake needs at least one [accounts.NAME] to trade on"))
        return out


def _redis_url_problem(url: str) -> str | None:
    """Why ``url`` is not a Redis URL the intake accepts, or ``None``."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme not in ("redis", "rediss", "unix"):
        return 'must start with "redis://", "rediss://" or "unix://"'
    if parts.password is not None:
        return "must not contain a password: use intake.password (a secret reference)"
    if parts.query or parts.fragment:
        return "must not have a query or fragment (the intake sets its own options)"
    if parts.scheme == "unix":
        return None if parts.path else 'needs a socket path ("unix:///run/redis.sock")'
    if not parts.hostname:
        return "needs a host"
    if port == 0:
        return "port must be 1-65535"
    db = parts.path.removeprefix("/")
    if db and not (db.isascii() and db.isdigit() and len(db) <= 5):
        return f"the path must be a database number, got {parts.path!r}"
    return None


attrs.resolve_types(IntakeConfig)
