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
``tradingd reload``) or needs a restart; :func:`diff` names both kinds.

The schema *is* the attrs classes below; ``config/tradingd.toml`` documents every
key with its default, and a test keeps the two in step.
"""

from __future__ import annotations

import ipaddress
import os
import re
import types
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Literal, get_args, get_origin

import attrs

from daemon import tomlschema
from daemon.errors import ConfigError, SecretError
from daemon.secrets import SECRET_KINDS, SecretRef, credential_path, resolve

Reload = Literal["live", "restart"]


def opt(
    default: Any,
    *,
    help: str,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    reload: Reload = "restart",
) -> Any:
    """Declare a config key: its default, one line of help, its range and reload kind."""
    return attrs.field(
        default=default,
        metadata={"help": help, "ge": ge, "gt": gt, "le": le, "reload": reload},
    )


def required(*, help: str, reload: Reload = "restart") -> Any:
    """Declare a key that has no default and must be present."""
    return attrs.field(metadata={"help": help, "reload": reload})


def section(cls: type[Any], *, help: str) -> Any:
    """Declare a nested table with all-default contents."""
    return attrs.field(factory=cls, metadata={"help": help, "reload": "live"})


_SYMBOL: Final = re.compile(r"[A-Z0-9]{2,20}")
#: Names of entries in named tables such as ``[venues.NAME]``.
_ENTRY_NAMES: Final = tomlschema.EntryNames(
    re.compile(r"[a-z0-9][a-z0-9_-]{0,31}"),
    "names are 1-32 characters of a-z, 0-9, '_' and '-', starting with a letter or digit",
)
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
        5, ge=0, le=10_000, help="More restarts than this within period_s escalates."
    )
    period_s: float = opt(30.0, gt=0, le=86_400, help="Window of the restart intensity.")
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
        100.0, gt=0, reload="live", help="p99 loop lag above this marks health degraded."
    )
    lag_unhealthy_ms: float = opt(
        2000.0,
        gt=0,
        reload="live",
        help="A lag sample above this marks health unhealthy (watchdog pings stop).",
    )
    slow_step_ms: float = opt(
        20.0, gt=0, reload="live", help="Task steps longer than this are recorded by task name."
    )
    blocked_loop_report_s: float = opt(
        1.0, gt=0, reload="restart", help="A thread logs the blocking task when the loop is "
        "stuck in one step longer than this."
    )
    status_interval_s: float = opt(
        5.0, gt=0, le=3600, reload="live", help="Period of systemd STATUS= updates."
    )
    min_free_disk_mb: int = opt(
        256,
        ge=0,
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
        0.0, ge=0, help="Prune market data older than this many days (0: keep everything)."
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
    """Market-data capture: trades and book snapshots into the store."""

    venue: str = opt(
        "", help="The [venues.NAME] to capture from; empty disables capture."
    )
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
    venues: Mapping[str, VenueConfig] = attrs.field(
        factory=lambda: types.MappingProxyType({}),
        metadata={
            "help": "Exchange connections, one [venues.NAME] table each.",
            tomlschema.ENTRY_NAMES: _ENTRY_NAMES,
        },
    )
    #: Where the configuration came from (not a TOML key).
    source: str = attrs.field(default="<defaults>", metadata={tomlschema.INTERNAL: True})

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
    Config,
)
for _cls in _SCHEMA_CLASSES:
    attrs.resolve_types(_cls, globals(), locals())


# --------------------------------------------------------------------------- loading


def load(path: str | os.PathLike[str]) -> Config:
    """Load and validate a config file.

    Raises:
        ConfigError: with every problem found, each naming file, key and line.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{p}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not valid UTF-8"
        raise ConfigError([f"{p}: cannot read: {reason}"]) from None
    return loads(text, source=str(p), base_dir=p.resolve().parent)


def loads(text: str, *, source: str = "<string>", base_dir: Path | None = None) -> Config:
    """Load and validate config text (see :func:`load`)."""
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
    report.raise_if_any()
    return config


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
            "secrets cannot be written inline; use { credential = \"NAME\" }, "
            '{ file = "PATH" } or { env = "VAR" }',
        )
        return False, None
    if not isinstance(raw, dict) or len(raw) != 1:
        report(path, 'expected exactly one of { credential = ... }, { file = ... }, { env = ... }')
        return False, None
    ((kind, name),) = raw.items()
    if kind not in SECRET_KINDS:
        report((*path, kind), f"unknown secret source; use one of {', '.join(SECRET_KINDS)}")
        return False, None
    if not isinstance(name, str) or not name:
        report((*path, kind), "expected a non-empty string")
        return False, None
    return True, SecretRef(kind=kind, name=name)


#: A bad value is reported and replaced by its default, so cross-key checks still run.
_SCHEMA: Final = tomlschema.Schema(hooks={SecretRef: _secret_ref}, fallback_to_default=True)


def _cross_checks(config: Config, report: Report) -> None:
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


def _check_url(
    path: tuple[str, ...], url: str, schemes: tuple[str, ...], report: Report
) -> None:
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


def check_environment(config: Config, environ: Mapping[str, str] | None = None) -> list[str]:
    """Problems only the file system and environment can reveal.

    Checked: the state directory exists and is writable (or can be created),
    the control socket's directory is usable, every secret reference resolves.
    Messages never contain secret values.
    """
    env = os.environ if environ is None else environ
    problems: list[str] = []
    where = config.source
    state_dir = config.daemon.state_dir
    problem = _dir_problem(state_dir)
    if problem:
        problems.append(f"{where}: daemon.state_dir: {problem}")
    sock = config.control_socket_path(env)
    if len(os.fsencode(sock)) > 107:
        problems.append(
            f"{where}: daemon.control_socket: {sock} is longer than a Unix socket path may be"
        )
    elif sock.parent != state_dir:
        problem = _dir_problem(sock.parent)
        if problem:
            problems.append(f"{where}: daemon.control_socket: {problem}")
    for key, ref in _secret_refs(config):
        try:
            if ref.kind == "credential":
                credential_path(ref.name, env)
            resolve(ref, env)
        except SecretError as exc:
            problems.append(f"{where}: {key}: {exc}")
    return problems


def _dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot serve as a writable directory, or None."""
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
    for key, value in _leaves(config, ()):
        if isinstance(value, SecretRef):
            yield key, value


def _leaves(obj: Any, path: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    for field in attrs.fields(type(obj)):
        if field.metadata.get("internal"):
            continue
        value = getattr(obj, field.name)
        if attrs.has(type(value)) and not isinstance(value, SecretRef):
            yield from _leaves(value, (*path, field.name))
        elif isinstance(value, Mapping):
            for name, entry in value.items():
                yield from _leaves(entry, (*path, field.name, name))
        else:
            yield ".".join((*path, field.name)), value


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
    """Keys whose value differs, split into live-reloadable and restart-only."""
    kinds = dict(_reload_kinds(Config, ()))
    old_leaves = dict(_leaves(old, ()))
    live: list[str] = []
    restart: list[str] = []
    for key, value in _leaves(new, ()):
        if old_leaves.get(key) != value:
            (live if kinds.get(key) == "live" else restart).append(key)
    return ConfigDiff(live=tuple(live), restart=tuple(restart))


def _reload_kinds(cls: type[Any], path: tuple[str, ...]) -> Iterator[tuple[str, Reload]]:
    for field in attrs.fields(cls):
        if field.metadata.get("internal"):
            continue
        if attrs.has(field.type) and field.type is not SecretRef:
            yield from _reload_kinds(field.type, (*path, field.name))
        elif get_origin(field.type) in (dict, Mapping):
            # Named tables: every key below them needs a restart (connections are
            # built at start); diff() treats unknown keys as restart-only.
            continue
        else:
            yield ".".join((*path, field.name)), field.metadata.get("reload", "restart")


def describe_keys(
    cls: type[Any] = Config, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, Any, str]]:
    """Every key as (dotted path, default, help): used by docs and their test."""
    for field in attrs.fields(cls):
        if field.metadata.get("internal"):
            continue
        if attrs.has(field.type) and field.type is not SecretRef:
            yield from describe_keys(field.type, (*path, field.name))
        elif get_origin(field.type) in (dict, Mapping):
            yield from describe_keys(get_args(field.type)[1], (*path, field.name, "NAME"))
        else:
            default = None if field.default is attrs.NOTHING else field.default
            yield ".".join((*path, field.name)), default, field.metadata.get("help", "")


def summary(config: Config) -> str:
    """A short human summary for ``check-config`` (never contains secrets)."""
    admin = config.admin.listen or "disabled"
    token = f", token from {config.admin.token.describe()}" if config.admin.token else ""
    lines = [
        f"config {config.source}: OK",
        f"  state_dir        {config.daemon.state_dir}",
        f"  control socket   {config.control_socket_path()}",
        f"  admin API        {admin}{token}",
        f"  shutdown timeout {config.daemon.shutdown_timeout_s:g}s",
        f"  restart policy   max {config.supervision.max_restarts} in "
        f"{config.supervision.period_s:g}s",
        f"  log              {config.logging.level} ({config.logging.format})",
    ]
    if config.testing.fault_injection:
        lines.append("  WARNING          testing.fault_injection is on: never in production")
    return "\n".join(lines)
