"""``tradingd check-venue``: can this configuration trade on its venues? Asked before ``run``.

For each ``[venues.NAME]`` (or the one ``--venue`` names) the real clients
(:class:`~daemon.venues.binance.BinanceVenue`, its market stream, a WebSocket
API session of :mod:`daemon.venues.binance.wssession`) run these checks, one
``PASS``/``FAIL``/``SKIP`` line each, then a summary line:

* ``rest`` — ``GET /api/v3/ping`` and ``GET /api/v3/time`` answer;
* ``clock`` — the offset of the local clock from the venue's, measured with
  the server time (the sample with the shortest round trip of three): it
  fails when ``|offset| + round trip`` exceeds :data:`CLOCK_FRACTION` of
  ``recv_window_ms``. tradingd signs with the measured offset, but a host
  clock that far off is not synchronised (NTP) and drifts between re-syncs;
* ``symbol S`` — every symbol the configuration uses (``[marketdata]``
  symbols of this venue, the ``symbol``/``symbols`` option of an enabled
  strategy and the per-symbol risk limits of the accounts on this venue,
  ``--symbol``) is listed by ``exchangeInfo`` with status ``TRADING``; its
  tick size, step size and minimum notional are shown;
* ``market stream`` — a WebSocket to one configured symbol's trade and
  depth streams delivers a message;
* ``ws-api`` — the WebSocket API endpoint accepts a connection and answers
  ``ping`` and ``time``;
* ``permissions`` — the signed ``GET /api/v3/account`` is answered with
  ``canTrade`` (skipped without credentials, unless an account trades on the
  venue: then it fails);
* ``rate limits`` — the used weight the venue reports
  (``X-MBX-USED-WEIGHT-*`` headers of its answers) against the limits of
  ``exchangeInfo``: it fails above :data:`RATE_LIMIT_HEADROOM` of a limit.

Every check is bounded by ``--timeout`` (plus a last connection attempt that
says why a stream could not connect); a failure is a line, never a
traceback. REST queries are made once (no retries: a diagnosis reports what
happened). Output never contains a secret: every text from outside passes
through the redaction of :mod:`daemon.secrets` and the key and secret are
masked explicitly. Exit status: 0 all passed (skips allowed), 1 any check
failed, 2 the configuration cannot be loaded or ``--venue`` names no venue.
"""

from __future__ import annotations

import argparse
import datetime
import enum
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from functools import partial
from typing import Final

import attrs
import httpx2
import trio
import trio_websocket

from daemon import config as configmod
from daemon.cli.common import DEFAULT_CONFIG, EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from daemon.cli.run import print_problems
from daemon.config import Config, VenueConfig
from daemon.config.declare import SYMBOL
from daemon.errors import (
    ApiKeyRejectedError,
    ConfigError,
    ForbiddenError,
    RetryExhaustedError,
    SecretError,
    SignatureError,
    TimestampOutOfWindowError,
    VenueRateLimitedError,
    VenueRejectedError,
)
from daemon.model.instruments import ExchangeInfo, RateLimitRule, RateLimitType, SymbolInfo
from daemon.model.marketdata import DepthUpdate, Trade
from daemon.secrets import REDACTOR, redact_urls_in_text
from daemon.venues.base import StreamKind, Subscription
from daemon.venues.binance import BinanceConfig, BinanceVenue, StreamEvent, codec
from daemon.venues.binance.codec import wsapi
from daemon.venues.binance.config import derive_ws_api_url
from daemon.venues.binance.stream import MalformedFrame, StreamConnected, StreamDisconnected
from daemon.venues.binance.wssession import CONNECTION_ERRORS, WsApiStats, open_session, scrub
from daemon.venues.link import binance_config

__all__ = [
    "CLOCK_FRACTION",
    "DEFAULT_TIMEOUT_S",
    "RATE_LIMIT_HEADROOM",
    "CheckResult",
    "Status",
    "Summary",
    "add_arguments",
    "check_venues",
    "cmd_check_venue",
    "market_stream_check",
    "rate_limit_verdict",
    "venue_symbols",
    "ws_api_check",
]

#: Bound of each check (``--timeout``), in seconds.
DEFAULT_TIMEOUT_S: Final = 10.0
#: ``|clock offset| + round trip`` may use at most this share of ``recv_window_ms``.
CLOCK_FRACTION: Final = 0.5
#: A rate-limit window used beyond this share of its limit fails the check.
RATE_LIMIT_HEADROOM: Final = 0.8
#: Server-time samples of the clock check (the one with the shortest round trip counts).
CLOCK_SAMPLES: Final = 3
#: Grace beyond ``--timeout`` for a check that bounds its own waits (it reports why).
_GRACE_S: Final = 2.0
#: Binance's "no such symbol" code.
_INVALID_SYMBOL: Final = -1121


class Status(enum.Enum):
    """The verdict of one check."""

    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"


@attrs.frozen
class CheckResult:
    """One check of one venue, as printed: ``PASS  sim rest: ping 1 ms, ...``."""

    venue: str
    check: str
    status: Status
    detail: str

    def line(self) -> str:
        return f"{self.status.value:<4}  {self.venue} {self.check}: {self.detail}"


@attrs.define
class Summary:
    """Every result of a run; :attr:`ok` when none failed."""

    results: list[CheckResult] = attrs.field(factory=list)

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status is status)

    @property
    def ok(self) -> bool:
        return self.count(Status.FAIL) == 0

    def line(self) -> str:
        verdict = "all checks passed" if self.ok else "FAILED"
        return (
            f"summary: {self.count(Status.PASS)} passed, {self.count(Status.FAIL)} failed, "
            f"{self.count(Status.SKIP)} skipped: {verdict}"
        )


# --------------------------------------------------------------------------- the command


def positive_seconds(text: str) -> float:
    """``--timeout``: a positive number of seconds (else a usage error, exit 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError(f"must be > 0 and <= 600 seconds, got {text}")
    return value


def symbol_arg(text: str) -> str:
    """``--symbol``: a venue symbol such as BTCUSDT (upper-cased)."""
    symbol = text.upper()
    if not SYMBOL.fullmatch(symbol):
        raise argparse.ArgumentTypeError(f"{text!r} is not a symbol (e.g. BTCUSDT)")
    return symbol


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``tradingd check-venue``."""
    p.add_argument(
        "--config", "-c", metavar="PATH", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}"
    )
    p.add_argument(
        "--venue", metavar="NAME", help="check only this [venues.NAME] (default: every venue)"
    )
    p.add_argument(
        "--symbol",
        action="append",
        dest="symbols",
        metavar="SYMBOL",
        type=symbol_arg,
        default=[],
        help="also check this symbol's exchangeInfo (repeatable)",
    )
    p.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds each check may take (default {DEFAULT_TIMEOUT_S:g})",
    )


def cmd_check_venue(args: argparse.Namespace) -> int:
    """``tradingd check-venue``: exit 0 when every check passed, 1 when one failed, 2 on usage."""
    try:
        config = configmod.load(args.config)
    except ConfigError as exc:
        print_problems(exc.problems)
        return EXIT_CONFIG
    if not config.venues:
        print(
            f"tradingd: {args.config} has no [venues.NAME] table: nothing to check", file=sys.stderr
        )
        return EXIT_CONFIG
    if args.venue is not None and args.venue not in config.venues:
        known = ", ".join(sorted(config.venues))
        print(
            f"tradingd: {args.config} has no [venues.{args.venue}] table (configured: {known})",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    names = [args.venue] if args.venue is not None else sorted(config.venues)
    summary = trio.run(
        partial(check_venues, config, names, symbols=args.symbols, timeout_s=args.timeout)
    )
    return EXIT_OK if summary.ok else EXIT_FAILURE


async def check_venues(
    config: Config,
    names: Sequence[str],
    *,
    symbols: Sequence[str] = (),
    timeout_s: float = DEFAULT_TIMEOUT_S,
    environ: Mapping[str, str] | None = None,
    out: Callable[[str], None] | None = None,
) -> Summary:
    """Check the venues ``names`` of ``config`` one after the other; print as results come.

    ``symbols`` are checked on every venue besides the configuration's own;
    ``environ`` resolves ``{ env = ... }`` and ``{ credential = ... }``
    references (default: the process's).
    """
    emit = out if out is not None else _print
    summary = Summary()

    def record(result: CheckResult) -> None:
        summary.results.append(result)
        emit(result.line())

    with _quiet_venue_logs():
        for name in names:
            wanted = [*venue_symbols(config, name), *symbols]
            checks = _VenueChecks(
                name,
                config.venues[name],
                config,
                symbols=list(dict.fromkeys(wanted)),
                timeout_s=timeout_s,
                environ=environ,
                record=record,
            )
            emit(checks.heading())
            await checks.run()
    emit(summary.line())
    return summary


def _print(line: str) -> None:
    print(line, flush=True)


def venue_symbols(config: Config, venue: str) -> list[str]:
    """The symbols ``config`` uses on ``venue``, in a stable order without repeats.

    ``[marketdata]`` symbols when capture is on this venue; the ``symbol`` or
    ``symbols`` option of every enabled strategy whose account trades here;
    the per-symbol position limits that apply to those accounts.
    """
    found: list[str] = []
    if config.marketdata.venue == venue:
        found += config.marketdata.symbols
    accounts = {name for name, account in config.accounts.items() if account.venue == venue}
    for strategy in config.strategies.values():
        options = strategy.options
        account = options.get("account") or strategy.account
        if not strategy.enabled or account not in accounts:
            continue
        symbol = options.get("symbol")
        if isinstance(symbol, str):
            found.append(symbol.upper())
        listed = options.get("symbols")
        if isinstance(listed, list | tuple):
            found += [s.upper() for s in listed if isinstance(s, str)]
    if accounts:
        found += config.risk.position_qty_by_symbol
        for name in sorted(accounts):
            found += config.accounts[name].risk.position_qty_by_symbol or {}
    return [s for s in dict.fromkeys(found) if SYMBOL.fullmatch(s)]


# --------------------------------------------------------------------------- one venue


class _UsageRecorder(httpx2.AsyncBaseTransport):
    """An HTTP transport that keeps the venue's latest ``X-MBX-*`` usage report per window."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self._inner = inner
        self.used: dict[str, int] = {}

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower()[:6] == "x-mbx-"]
        for report in codec.parse_usage_headers(headers):
            self.used[report.window_name] = report.used
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@contextmanager
def _quiet_venue_logs() -> Iterator[None]:
    """The clients' own log lines (reconnect warnings, ...) are not printed between the checks.

    Each check says in its own line what went wrong.
    """
    logger = logging.getLogger("tradingd")
    sink = logging.NullHandler()
    propagate = logger.propagate
    logger.addHandler(sink)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(sink)
        logger.propagate = propagate


Outcome = tuple[Status, str]


class _VenueChecks:
    """The checks of one ``[venues.NAME]``, in order; each result goes to ``record``."""

    def __init__(
        self,
        name: str,
        venue: VenueConfig,
        config: Config,
        *,
        symbols: list[str],
        timeout_s: float,
        environ: Mapping[str, str] | None,
        record: Callable[[CheckResult], None],
    ) -> None:
        self.name = name
        self.venue = venue
        self.accounts = sorted(a for a, acc in config.accounts.items() if acc.venue == name)
        self.symbols = symbols
        self.timeout_s = timeout_s
        self.environ = environ
        self._record = record
        self.secret_problem: str | None = None
        self.client_config: BinanceConfig | None = None
        self.info: ExchangeInfo | None = None
        self.rest_ok = False

    def heading(self) -> str:
        ws_api = self.venue.ws_api_url or derive_ws_api_url(self.venue.ws_url.rstrip("/"))
        return (
            f"venue {self.name}: REST {self._safe(self.venue.rest_url)}, streams "
            f"{self._safe(self.venue.ws_url)}, WebSocket API {self._safe(ws_api)}"
        )

    async def run(self) -> None:
        try:
            self.client_config = await trio.to_thread.run_sync(self._client_config)
        except (ValueError, TypeError) as exc:
            self._add("configuration", Status.FAIL, f"the venue cannot be used: {exc}")
            return
        transport = _UsageRecorder(httpx2.AsyncHTTPTransport())
        client = BinanceVenue(self.client_config, transport=transport)
        try:
            await self._check("rest", self._rest, client)
            await self._rest_dependent("clock", self._clock, client)
            await self._rest_dependent("symbols", self._symbols, client)
            await self._check("market stream", self._market_stream, client)
            await self._check("ws-api", ws_api_check, client)
            await self._rest_dependent("permissions", self._permissions, client)
            await self._rest_dependent(
                "rate limits", lambda c: self._rate_limits(c, transport), client
            )
        finally:
            with trio.move_on_after(_GRACE_S, shield=True):
                await client.aclose()

    # ------------------------------------------------------------------ plumbing

    def _client_config(self) -> BinanceConfig:
        """The client settings of the venue, its secrets resolved; tuned for a diagnosis."""
        try:
            config = binance_config(self.name, self.venue, self.environ)
        except SecretError as exc:
            self.secret_problem = str(exc)
            public = attrs.evolve(self.venue, api_key=None, api_secret=None)
            config = binance_config(self.name, public, self.environ)
        return attrs.evolve(
            config,
            request_timeout_s=min(config.request_timeout_s, self.timeout_s),
            connect_timeout_s=min(config.connect_timeout_s, self.timeout_s),
            limiter_max_wait_s=min(config.limiter_max_wait_s, self.timeout_s),
            retry_max_attempts=1,
        )

    def _add(self, check: str, status: Status, detail: str) -> None:
        self._record(CheckResult(self.name, check, status, self._safe(detail)))

    def _safe(self, text: str) -> str:
        """``text`` with the key, the secret, signatures and URL credentials masked."""
        config = self.client_config
        if config is not None:
            text = scrub(text, config.api_key, config.api_secret)
        return REDACTOR.redact(redact_urls_in_text(text))

    async def _check(
        self,
        check: str,
        fn: Callable[[BinanceVenue], Awaitable[Outcome | list[tuple[str, Status, str]]]],
        client: BinanceVenue,
    ) -> None:
        """Run one check within the timeout and record its line(s); a failure is a line too."""
        outcome: Outcome | list[tuple[str, Status, str]]
        try:
            # The checks bound their own waits by the timeout, to say what they waited
            # for; this bound is the backstop (a last connection attempt may follow).
            bound = self.timeout_s + client.config.connect_timeout_s + _GRACE_S
            with trio.move_on_after(bound) as scope:
                outcome = await fn(client)
            if scope.cancelled_caught:
                outcome = (Status.FAIL, f"no result within {bound:g}s")
        except Exception as exc:  # every failure is a line, never a traceback
            outcome = (Status.FAIL, _explain(exc))
        rows = outcome if isinstance(outcome, list) else [(check, *outcome)]
        for name, status, detail in rows:
            self._add(name, status, detail)

    async def _rest_dependent(
        self,
        check: str,
        fn: Callable[[BinanceVenue], Awaitable[Outcome | list[tuple[str, Status, str]]]],
        client: BinanceVenue,
    ) -> None:
        if self.rest_ok:
            await self._check(check, fn, client)
        elif check == "permissions" and (verdict := self._credentials_verdict(client)):
            self._add(check, *verdict)
        else:
            self._add(check, Status.SKIP, "not checked: the REST API did not answer")

    # ------------------------------------------------------------------ the checks

    async def _rest(self, client: BinanceVenue) -> Outcome:
        started = trio.current_time()
        await client.ping()
        ping_ms = (trio.current_time() - started) * 1000
        server_ms = await client.server_time()
        self.rest_ok = True
        return Status.PASS, f"ping answered in {ping_ms:.0f} ms; server time {_utc(server_ms)}"

    async def _clock(self, client: BinanceVenue) -> Outcome:
        samples = []
        for _ in range(CLOCK_SAMPLES):
            started = trio.current_time()
            await client.server_time()
            round_trip_ms = (trio.current_time() - started) * 1000
            assert client.time_offset_ms is not None
            samples.append((round_trip_ms, client.time_offset_ms))
        round_trip_ms, offset_ms = min(samples)
        worst = abs(offset_ms) + round_trip_ms
        window = client.config.recv_window_ms
        allowed = window * CLOCK_FRACTION
        numbers = (
            f"offset {offset_ms:+d} ms, round trip {round_trip_ms:.0f} ms: {worst:.0f} ms "
            f"against the {allowed:.0f} ms allowed ({CLOCK_FRACTION:.0%} of recvWindow "
            f"{window} ms)"
        )
        if worst <= allowed:
            return Status.PASS, numbers
        return Status.FAIL, (
            f"{numbers}; the host clock is not in step with the venue's: synchronise it "
            "(NTP, e.g. systemd-timesyncd or chrony) or signed requests risk -1021"
        )

    async def _symbols(self, client: BinanceVenue) -> Outcome | list[tuple[str, Status, str]]:
        if not self.symbols:
            return Status.SKIP, (
                "no symbol configured for this venue ([marketdata] symbols, an enabled "
                "strategy's symbol, a per-symbol risk limit, or --symbol)"
            )
        listed: dict[str, SymbolInfo] = {}
        unknown: dict[str, str] = {}
        try:
            self.info = await client.exchange_info(self.symbols)
            listed.update(self.info.symbols)
        except VenueRejectedError as exc:
            if exc.code != _INVALID_SYMBOL:
                raise
            # One bad name refuses the whole request: ask symbol by symbol.
            for symbol in self.symbols:
                try:
                    self.info = await client.exchange_info([symbol])
                    listed.update(self.info.symbols)
                except VenueRejectedError as one:
                    if one.code != _INVALID_SYMBOL:
                        raise
                    unknown[symbol] = f"code {one.code}: {one.venue_message or one}"
        rows: list[tuple[str, Status, str]] = []
        for symbol in self.symbols:
            info = listed.get(symbol)
            if info is None:
                why = unknown.get(symbol, "missing from the answer")
                rows.append((f"symbol {symbol}", Status.FAIL, f"not listed by the venue ({why})"))
            else:
                status = Status.PASS if info.is_trading else Status.FAIL
                state = "TRADING" if info.is_trading else f"{info.status}, not TRADING"
                rows.append((f"symbol {symbol}", status, f"{state}; {_filters(info)}"))
        return rows

    async def _market_stream(self, client: BinanceVenue) -> Outcome:
        symbol = self._stream_symbol()
        if symbol is None:
            return Status.SKIP, "no symbol configured for this venue to subscribe to"
        return await market_stream_check(client, symbol, self.timeout_s)

    def _stream_symbol(self) -> str | None:
        """The first configured symbol the venue lists as trading (else the first configured)."""
        if self.info is not None:
            for symbol in self.symbols:
                info = self.info.symbols.get(symbol)
                if info is not None and info.is_trading:
                    return symbol
        return self.symbols[0] if self.symbols else None

    def _credentials_verdict(self, client: BinanceVenue) -> Outcome | None:
        """The permissions check's verdict when no signed request can be made, else None."""
        if self.secret_problem is not None:
            return Status.FAIL, f"the credentials cannot be read: {self.secret_problem}"
        if client.config.has_credentials:
            return None
        if self.accounts:
            return Status.FAIL, (
                f"no api_key/api_secret, but account(s) {', '.join(self.accounts)} "
                "trade on this venue"
            )
        return Status.SKIP, "no credentials configured (public checks only)"

    async def _permissions(self, client: BinanceVenue) -> Outcome:
        verdict = self._credentials_verdict(client)
        if verdict is not None:
            return verdict
        account = await client.account(omit_zero_balances=True)
        permissions = ", ".join(account.permissions) or "none listed"
        detail = (
            f"canTrade {'yes' if account.can_trade else 'no'}, accountType "
            f"{account.account_type}, permissions {permissions}; "
            f"{len(account.balances)} non-zero balance(s)"
        )
        if not account.can_trade:
            return Status.FAIL, f"{detail}: this key cannot place orders"
        return Status.PASS, detail

    async def _rate_limits(self, client: BinanceVenue, recorder: _UsageRecorder) -> Outcome:
        return rate_limit_verdict(client.rate_limits, recorder.used, self.info is not None)


# --------------------------------------------------------------------------- checks


async def market_stream_check(client: BinanceVenue, symbol: str, timeout_s: float) -> Outcome:
    """A WebSocket to ``symbol``'s trade and depth streams delivers a message within the timeout."""
    subscriptions = [
        Subscription(StreamKind.TRADES, symbol),
        Subscription(StreamKind.DEPTH, symbol),
    ]
    stream = client.market_stream(subscriptions)
    send, receive = trio.open_memory_channel[StreamEvent](64)
    connected_at: float | None = None
    got: str | None = None
    problems: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.run, send)
        with trio.move_on_after(timeout_s):
            async with receive:
                async for event in receive:
                    if isinstance(event, StreamConnected):
                        connected_at = trio.current_time()
                    elif isinstance(event, Trade | DepthUpdate):
                        got = "trade" if isinstance(event, Trade) else "depth update"
                        break
                    elif isinstance(event, MalformedFrame):
                        problems.append(f"malformed frame: {event.error}")
                    elif isinstance(event, StreamDisconnected):
                        problems.append(f"disconnected: {event.detail}")
        nursery.cancel_scope.cancel()
    url = stream.url
    if got is not None and connected_at is not None:
        after = trio.current_time() - connected_at
        return Status.PASS, f"{symbol} {got} received {after:.1f}s after connecting ({url})"
    if connected_at is not None:
        extra = f"; {problems[-1]}" if problems else ""
        return Status.FAIL, (
            f"connected to {url}, but no trade or depth update of {symbol} within "
            f"{timeout_s:g}s{extra}"
        )
    attempts = stream.stats.connect_failures
    reason = await _probe(url, client.config.connect_timeout_s)
    return Status.FAIL, (
        f"no connection to {url} within {timeout_s:g}s ({attempts} failed attempt(s)); "
        f"one more attempt: {reason}"
    )


async def _probe(url: str, timeout_s: float) -> str:
    """Why a WebSocket connection to ``url`` fails (the stream retries without saying)."""
    try:
        with trio.move_on_after(timeout_s):
            async with trio_websocket.open_websocket_url(url, connect_timeout=timeout_s):
                return "it connected (the venue accepts connections only some of the time?)"
        return f"no handshake within {timeout_s:g}s"
    except Exception as exc:  # the reason is the answer
        return _describe(exc)


async def ws_api_check(client: BinanceVenue) -> Outcome:
    """The WebSocket API accepts a connection and answers ``ping`` and ``time``."""
    url = client.config.ws_api_url
    started = trio.current_time()
    try:
        async with open_session(client, stats=WsApiStats()) as session:
            connect_ms = (trio.current_time() - started) * 1000
            await session.call(wsapi.ping_request(), lambda result: None)
            server_ms = await session.call(wsapi.time_request(), wsapi.server_time_result)
    except CONNECTION_ERRORS as exc:
        return Status.FAIL, f"could not connect to {url}: {_describe(exc)}"
    return Status.PASS, (
        f"connected in {connect_ms:.0f} ms; ping and time answered, server time "
        f"{_utc(server_ms)} ({url})"
    )


def rate_limit_verdict(
    rules: Sequence[RateLimitRule], used: Mapping[str, int], from_exchange_info: bool
) -> Outcome:
    """The venue's reported usage (``X-MBX-*`` headers, by window) against its limits."""
    source = "exchangeInfo" if from_exchange_info else "Binance's documented defaults"
    reported: list[str] = []
    unreported: list[str] = []
    over: list[str] = []
    for rule in rules:
        count = used.get(rule.window_name)
        if count is None:
            unreported.append(f"{rule.type.value} {rule.limit} per {rule.suffix}")
            continue
        share = count / rule.limit
        reported.append(
            f"{rule.type.value} used {count} of {rule.limit} per {rule.suffix} ({share:.0%})"
        )
        if share > RATE_LIMIT_HEADROOM:
            over.append(f"{rule.type.value} per {rule.suffix} at {share:.0%}")
    parts = list(reported)
    if unreported:
        parts.append(f"not reported by the venue: {', '.join(unreported)}")
    detail = f"{'; '.join(parts) or 'no limits declared'} (limits from {source})"
    if over:
        return Status.FAIL, (
            f"{detail}; above {RATE_LIMIT_HEADROOM:.0%} of a limit: {', '.join(over)} (another "
            "process on this IP, or a recent burst? wait for the window to pass)"
        )
    if not any(r.type is RateLimitType.REQUEST_WEIGHT and r.window_name in used for r in rules):
        return Status.SKIP, f"{detail}; the venue sent no X-MBX-USED-WEIGHT header"
    return Status.PASS, detail


# --------------------------------------------------------------------------- texts


def _utc(ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _num(value: Decimal | None) -> str:
    return "none" if value is None else f"{value.normalize():f}"


def _filters(info: SymbolInfo) -> str:
    f = info.filters
    return (
        f"tick size {_num(f.tick_size)}, step size {_num(f.step_size)}, "
        f"min notional {_num(f.min_notional)}"
    )


def _explain(exc: BaseException) -> str:
    """A one-line reason for a failed check, with a hint where the cause is known."""
    if isinstance(exc, RetryExhaustedError) and exc.last_error is not None:
        return _explain(exc.last_error)
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _explain(exc.exceptions[0])
    text = _describe(exc)
    if isinstance(exc, SignatureError):
        return f"{text} (the venue refused the signature: is api_secret the secret of api_key?)"
    if isinstance(exc, ApiKeyRejectedError | ForbiddenError):
        return (
            f"{text} (the venue refused the API key: unknown key, IP not allowed, or a "
            "missing permission; testnet keys come from testnet.binance.vision)"
        )
    if isinstance(exc, TimestampOutOfWindowError):
        return f"{text} (the request's timestamp was outside recvWindow: check the clock)"
    if isinstance(exc, VenueRateLimitedError):
        after = f"; retry after {exc.retry_after_s:g}s" if exc.retry_after_s is not None else ""
        return f"{text} (rate limited{', IP banned' if exc.banned else ''}{after})"
    return text


def _describe(exc: BaseException) -> str:
    """``Type: message``; for an exception without a message, its cause's too."""
    if isinstance(exc, trio_websocket.ConnectionRejected):
        body = (exc.body or b"")[:200].decode("utf-8", "replace").strip()
        return f"the server refused the WebSocket handshake: HTTP {exc.status_code} {body}".strip()
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if not str(exc) and cause is not None:
        return f"{text}: {_describe(cause)}"
    return text
