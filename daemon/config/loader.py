"""Loading a config file: strict parsing, per-key checks, cross-key rules.

Why strict: a typo in a trading daemon's config (``max_restart = 50``) that is
silently ignored is a production incident waiting for its day. So:

* unknown keys are errors (with a "did you mean" hint);
* wrong types are errors (``"5"`` is not an integer; ``5`` is accepted for a float);
* out-of-range values are errors;
* every problem is reported at once, each naming the file, the dotted key path
  and the line, e.g. ``/etc/tradingd/tradingd.toml:12: admin.listen: …``.

Here: :func:`load` / :func:`loads` (raise :class:`~daemon.errors.ConfigError`),
:func:`check_file` (every problem of a file, including those of
:func:`~daemon.config.environment.check_environment`), the hooks for the
daemon's own value types (secret references, decimal strings), the cross-key
rules (:func:`_cross_checks`) and :func:`parse_listen`. The keys, types and
ranges themselves are the attrs classes of :mod:`daemon.config.schema`,
walked by :mod:`daemon.tomlschema`.
"""

from __future__ import annotations

import ipaddress
import keyword
import math
import os
import re
import urllib.parse
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import attrs

from daemon import tomlschema
from daemon.config.declare import SYMBOL, DecimalLimit
from daemon.config.environment import check_environment
from daemon.config.schema import Config
from daemon.config.trading import AccountRiskConfig, RiskConfig
from daemon.errors import ConfigError
from daemon.orders.ids import digest_bits
from daemon.secrets import SECRET_KINDS, SecretRef

Report = tomlschema.Report
#: Plain decimal notation only: no exponent, no "_", no "NaN"/"Infinity".
_DECIMAL_TEXT: Final = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


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
    """A decimal amount, which the file must write as a string (:mod:`daemon.config.trading`)."""
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
        _check_entry(("marketdata", "venue"), "venues", md.venue, config.venues, report)
        if not md.symbols:
            report(("marketdata", "symbols"), "capture needs at least one symbol")
    for index, symbol in enumerate(md.symbols):
        if not SYMBOL.fullmatch(symbol):
            report(
                ("marketdata", "symbols", str(index)),
                f"{symbol!r} is not a symbol (2-20 characters of A-Z and 0-9, e.g. BTCUSDT)",
            )
    if len(set(md.symbols)) != len(md.symbols):
        report(("marketdata", "symbols"), "lists a symbol twice")
    for name, venue in config.venues.items():
        _check_url(("venues", name, "rest_url"), venue.rest_url, ("http", "https"), report)
        _check_url(("venues", name, "ws_url"), venue.ws_url, ("ws", "wss"), report)
        if venue.ws_api_url:
            _check_url(("venues", name, "ws_api_url"), venue.ws_api_url, ("ws", "wss"), report)
        if (venue.api_key is None) != (venue.api_secret is None):
            report(("venues", name), "api_key and api_secret go together: set both or neither")
    _check_orders(config, report)
    for key, message in config.intake.problems(has_accounts=bool(config.accounts)):
        report(("intake", key), message)
    for key, message in config.store.problems():
        report(("store", key), message)
    for key, message in config.orders.lease_problems():
        report(("orders", key), message)
    _check_risk(("risk",), config.risk, report)
    for name, account in config.accounts.items():
        _check_entry(("accounts", name, "venue"), "venues", account.venue, config.venues, report)
        _check_risk(("accounts", name, "risk"), account.risk, report)
    for name, strategy in config.strategies.items():
        problem = _class_path_problem(strategy.class_path)
        if problem:
            report(("strategies", name, "class"), problem)
        if strategy.account:
            _check_entry(
                ("strategies", name, "account"),
                "accounts",
                strategy.account,
                config.accounts,
                report,
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


def _check_entry(
    path: tuple[str, ...], table: str, name: str, entries: Mapping[str, object], report: Report
) -> None:
    """A key that names a ``[TABLE.NAME]`` entry must name one that is configured."""
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none configured"
        report(path, f"no [{table}.{name}] table ({known})")


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
