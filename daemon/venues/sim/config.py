"""Simulator configuration: frozen attrs values, loaded strictly from TOML.

The simulator is a test instrument, so a typo in its config must fail loudly:
unknown keys are errors (with a "did you mean"), wrong types are errors
(prices are decimal *strings*, ``"0.01"``, never floats), out-of-range values
are errors, and every problem is reported at once as
``FILE:LINE: dotted.key: message`` in a :class:`~daemon.errors.ConfigError`.

A file looks like this (every key optional; defaults shown in the classes)::

    rest_port = 8900
    ws_port = 8901
    maker_commission = "0.001"

    [market]
    seed = 7
    events_per_s = 200        # 0 = as fast as the CPU allows (benchmarks)

    [[symbols]]
    symbol = "BTCUSDT"
    base_asset = "BTC"
    quote_asset = "USDT"
    start_price = "30000.00"
    tick_size = "0.01"
    ...
    percent_price_by_side = { bid_multiplier_up = "1.2", ask_multiplier_down = "0.8" }

    [[accounts]]
    api_key = "..."
    secret_key = "..."
    balances = { BTC = "10", USDT = "100000" }

    [[rate_limits]]
    type = "REQUEST_WEIGHT"
    interval = "MINUTE"
    interval_num = 1
    limit = 6000

    [[faults]]
    kind = "rest_error"
    phase = "after"
    method = "POST"
    path = "/api/v3/order"
    status = 503
    count = 2

Secrets here are *simulator* keys (the default account is the public example
key of Binance's documentation), so they are written inline on purpose.
"""

from __future__ import annotations

import os
import re
import types
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final, Literal

import attrs

from daemon import tomlschema
from daemon.errors import ConfigError
from daemon.tomlschema import opt
from daemon.venues.sim.faults import FaultSpec

__all__ = [
    "DOCS_API_KEY",
    "DOCS_SECRET_KEY",
    "SYMBOL_PRESETS",
    "AccountConfig",
    "LimitsConfig",
    "MarketConfig",
    "PercentPriceBySideConfig",
    "RateLimitConfig",
    "SimConfig",
    "StreamsConfig",
    "SymbolConfig",
    "load",
    "loads",
]

#: The example API key of Binance's REST documentation (public; the default sim account).
DOCS_API_KEY: Final = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
#: Its secret, from the same page.
DOCS_SECRET_KEY: Final = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"

_SYMBOL_RE: Final = re.compile(r"^[A-Z0-9]{2,20}$")
_ASSET_RE: Final = re.compile(r"^[A-Z0-9]{1,20}$")
_API_KEY_RE: Final = re.compile(r"^[A-Za-z0-9]{1,100}$")
#: Most decimals a price, quantity or balance may carry (Binance's asset precision).
MAX_DECIMALS: Final = 8


def _decimal_places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _check_decimal(name: str, value: Decimal, *, positive: bool = True) -> None:
    if not value.is_finite():
        raise ValueError(f"{name} must be finite")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    if _decimal_places(value.normalize()) > MAX_DECIMALS:
        raise ValueError(f"{name} has more than {MAX_DECIMALS} decimals: {value}")


@attrs.frozen
class PercentPriceBySideConfig:
    """``PERCENT_PRICE_BY_SIDE``: how far from the market a BUY's or a SELL's limit price may be.

    A BUY's price must lie within ``[ref * bid_multiplier_down, ref *
    bid_multiplier_up]``, a SELL's within the ``ask_…`` band (bounds
    inclusive), where ``ref`` is the simulator's reference price (last trade,
    else mid of the book, else the start price: it keeps no trade-time
    average, so ``avg_price_mins`` is reported only). As on Binance, a 0
    multiplier disables that bound. The defaults are Binance's BTCUSDT values
    and leave room for anything but a fat finger.
    """

    bid_multiplier_up: Decimal = opt(Decimal("5"), help="BUY price <= ref x this (0 = no bound)")
    bid_multiplier_down: Decimal = opt(
        Decimal("0.2"), help="BUY price >= ref x this (0 = no bound)"
    )
    ask_multiplier_up: Decimal = opt(Decimal("5"), help="SELL price <= ref x this (0 = no bound)")
    ask_multiplier_down: Decimal = opt(
        Decimal("0.2"), help="SELL price >= ref x this (0 = no bound)"
    )
    avg_price_mins: int = opt(5, help="avgPriceMins (reported only)", ge=0)

    def __attrs_post_init__(self) -> None:
        for side in ("bid", "ask"):
            up_name, down_name = f"{side}_multiplier_up", f"{side}_multiplier_down"
            up, down = getattr(self, up_name), getattr(self, down_name)
            _check_decimal(up_name, up, positive=False)
            _check_decimal(down_name, down, positive=False)
            if up != 0 and down > up:
                raise ValueError(f"{down_name} {down} is above {up_name} {up}: no price could pass")

    def band(self, side: Literal["BUY", "SELL"]) -> tuple[Decimal | None, Decimal | None]:
        """``(down, up)`` multipliers for an order on ``side`` (``None``: no bound)."""
        if side == "BUY":
            down, up = self.bid_multiplier_down, self.bid_multiplier_up
        else:
            down, up = self.ask_multiplier_down, self.ask_multiplier_up
        return (down or None), (up or None)


@attrs.frozen
class SymbolConfig:
    """One tradable symbol: its assets, exchange filters and starting price.

    Filters follow ``exchangeInfo``: ``PRICE_FILTER`` (``min_price``,
    ``max_price``, ``tick_size``), ``LOT_SIZE`` (``min_qty``, ``max_qty``,
    ``step_size``), ``NOTIONAL`` (``min_notional``, ``max_notional``, whether
    they apply to MARKET orders), ``PERCENT_PRICE_BY_SIDE``
    (``percent_price_by_side``, a table: price bands around the market).
    """

    symbol: str = opt("BTCUSDT", help="symbol name, upper case (e.g. BTCUSDT)")
    base_asset: str = opt("BTC", help="asset that is the quantity")
    quote_asset: str = opt("USDT", help="asset that is the price")
    start_price: Decimal = opt(Decimal("30000.00"), help="first fair price of the market")
    tick_size: Decimal = opt(Decimal("0.01"), help="PRICE_FILTER tickSize")
    min_price: Decimal = opt(Decimal("0.01"), help="PRICE_FILTER minPrice")
    max_price: Decimal = opt(Decimal("1000000.00"), help="PRICE_FILTER maxPrice")
    step_size: Decimal = opt(Decimal("0.00001"), help="LOT_SIZE stepSize")
    min_qty: Decimal = opt(Decimal("0.00001"), help="LOT_SIZE minQty")
    max_qty: Decimal = opt(Decimal("9000"), help="LOT_SIZE maxQty")
    min_notional: Decimal = opt(Decimal("5"), help="NOTIONAL minNotional")
    max_notional: Decimal = opt(Decimal("9000000"), help="NOTIONAL maxNotional")
    apply_min_to_market: bool = opt(True, help="NOTIONAL applyMinToMarket")
    apply_max_to_market: bool = opt(False, help="NOTIONAL applyMaxToMarket")
    avg_price_mins: int = opt(5, help="NOTIONAL avgPriceMins (reported only)", ge=0)
    lot_multiple: int = opt(
        100, help="synthetic orders are 1..max_lots lots of lot_multiple * min_qty", ge=1
    )
    percent_price_by_side: PercentPriceBySideConfig = attrs.field(
        factory=PercentPriceBySideConfig,
        metadata={"help": "[symbols.percent_price_by_side] price bands by side"},
    )

    def __attrs_post_init__(self) -> None:
        if not _SYMBOL_RE.fullmatch(self.symbol):
            raise ValueError(f"symbol must match {_SYMBOL_RE.pattern}, got {self.symbol!r}")
        for name in ("base_asset", "quote_asset"):
            if not _ASSET_RE.fullmatch(getattr(self, name)):
                raise ValueError(f"{name} must match {_ASSET_RE.pattern}")
        if self.base_asset == self.quote_asset:
            raise ValueError("base_asset and quote_asset must differ")
        for name in (
            "start_price",
            "tick_size",
            "min_price",
            "max_price",
            "step_size",
            "min_qty",
            "max_qty",
            "max_notional",
        ):
            _check_decimal(name, getattr(self, name))
        _check_decimal("min_notional", self.min_notional, positive=False)
        if not self.min_price <= self.start_price <= self.max_price:
            raise ValueError("start_price must be within [min_price, max_price]")
        if (self.start_price - self.min_price) % self.tick_size != 0:
            raise ValueError("start_price must be min_price plus a whole number of tick_size")
        if self.min_qty > self.max_qty:
            raise ValueError("min_qty must be <= max_qty")
        if self.min_notional > self.max_notional:
            raise ValueError("min_notional must be <= max_notional")


#: Starting balances of an account that does not list its own.
DEFAULT_BALANCES: Final[Mapping[str, Decimal]] = types.MappingProxyType(
    {
        "BTC": Decimal("10"),
        "ETH": Decimal("100"),
        "LTC": Decimal("1000"),
        "USDT": Decimal("1000000"),
    }
)


def _frozen_balances(balances: Mapping[str, Decimal]) -> Mapping[str, Decimal]:
    return types.MappingProxyType(dict(balances))


@attrs.frozen
class AccountConfig:
    """One API key, its HMAC secret and its starting balances."""

    api_key: str = opt(DOCS_API_KEY, help="value of the X-MBX-APIKEY header")
    secret_key: str = opt(DOCS_SECRET_KEY, help="HMAC-SHA256 secret for signatures")
    balances: Mapping[str, Decimal] = attrs.field(
        factory=lambda: _frozen_balances(DEFAULT_BALANCES),
        converter=_frozen_balances,
        metadata={"help": 'free balance per asset at start, e.g. { BTC = "1.5" }'},
    )

    def __attrs_post_init__(self) -> None:
        if not _API_KEY_RE.fullmatch(self.api_key):
            raise ValueError(f"api_key must match {_API_KEY_RE.pattern}")
        if not self.secret_key:
            raise ValueError("secret_key must not be empty")
        for asset, amount in self.balances.items():
            if not _ASSET_RE.fullmatch(asset):
                raise ValueError(f"balances: bad asset name {asset!r}")
            _check_decimal(f"balances.{asset}", amount, positive=False)


RateLimitType = Literal["REQUEST_WEIGHT", "ORDERS", "RAW_REQUESTS"]
Interval = Literal["SECOND", "MINUTE", "HOUR", "DAY"]


@attrs.frozen
class RateLimitConfig:
    """One ``exchangeInfo.rateLimits`` entry, enforced as a fixed window on the wall clock."""

    type: RateLimitType = opt("REQUEST_WEIGHT", help="REQUEST_WEIGHT, ORDERS or RAW_REQUESTS")
    interval: Interval = opt("MINUTE", help="SECOND, MINUTE, HOUR or DAY")
    interval_num: int = opt(1, help="number of intervals in the window", ge=1)
    limit: int = opt(6000, help="weight, orders or requests allowed per window", ge=1)


DEFAULT_RATE_LIMITS: Final = (
    RateLimitConfig("REQUEST_WEIGHT", "MINUTE", 1, 6000),
    RateLimitConfig("ORDERS", "SECOND", 10, 50),
    RateLimitConfig("ORDERS", "DAY", 1, 160000),
    RateLimitConfig("RAW_REQUESTS", "MINUTE", 5, 61000),
)


@attrs.frozen
class LimitsConfig:
    """How a client that ignores 429s is banned (418)."""

    ban_after_violations: int = opt(
        3, help="requests sent while rate limited before the IP is banned (418)", ge=1
    )
    ban_s: float = opt(120.0, help="first ban length; doubles for repeat offenders", gt=0)
    ban_max_s: float = opt(259200.0, help="longest ban (Binance: 3 days)", gt=0)


@attrs.frozen
class MarketConfig:
    """The seeded synthetic market that trades against the book."""

    seed: int = opt(1, help="random seed: the same seed gives the same market")
    events_per_s: float = opt(
        20.0, help="market events per second over all symbols; 0 = as fast as possible", ge=0
    )
    trade_probability: float = opt(
        0.3, help="share of events that are synthetic market orders (trades)", ge=0, le=1
    )
    depth_levels: int = opt(20, help="synthetic price levels kept on each side", ge=1)
    max_lots: int = opt(10, help="largest synthetic order, in lots", ge=1)
    paused: bool = opt(False, help="start paused (drive it with POST /sim/market)")
    trade_retention: int = opt(
        10000, help="trades kept per symbol for /api/v3/historicalTrades", ge=1
    )
    first_trade_id: int = opt(1, help="id of the first trade of every symbol", ge=0)
    first_update_id: int = opt(1, help="first order book update id of every symbol", ge=0)
    batch: int = opt(256, help="events between checkpoints when events_per_s = 0", ge=1)


@attrs.frozen
class StreamsConfig:
    """WebSocket market streams."""

    ping_interval_s: float = opt(20.0, help="server ping every N seconds (Binance: 20)", gt=0)
    pong_timeout_s: float = opt(60.0, help="drop a connection whose pong is this late", gt=0)
    max_connection_s: float = opt(86400.0, help="connection lifetime (Binance: 24 h)", gt=0)
    send_queue: int = opt(
        10000, help="messages queued per connection; a slower client is disconnected", ge=1
    )
    max_streams: int = opt(1024, help="streams per connection", ge=1)


@attrs.frozen
class SimConfig:
    """Everything ``tradingd sim`` and ``serve_sim`` need."""

    host: str = opt("127.0.0.1", help="address to bind (loopback)")
    rest_port: int = opt(8900, help="REST port; 0 = any free port", ge=0, le=65535)
    ws_port: int = opt(8901, help="WebSocket port; 0 = any free port", ge=0, le=65535)
    maker_commission: Decimal = opt(Decimal("0.001"), help="maker fee rate (0.001 = 0.1%)")
    taker_commission: Decimal = opt(Decimal("0.001"), help="taker fee rate")
    order_visibility_delay_s: float = opt(
        0.0, help="new orders invisible to queries for this long (0 = at once)", ge=0
    )
    rest_request_timeout_s: float = opt(
        60.0, help="bound on one REST request (stalls longer than this become 503)", gt=0
    )
    rest_max_connections: int = opt(256, help="REST connections served at once", ge=1)
    audit_retention: int = opt(100000, help="accepted orders kept for GET /sim/audit", ge=1)
    audit_trade_retention: int = opt(
        1000000, help="published trades kept per symbol for GET /sim/trades", ge=1
    )
    state_file: str = opt(
        "", help="keep the venue's state in this file across restarts (empty: in memory only)"
    )
    state_fsync: bool = opt(
        False, help="fsync the state file after every write (survives a host crash; slower)"
    )
    clock_offset_ms: int = opt(
        0,
        help="added to the simulator's wall clock (exchange times, recvWindow, serverTime)",
        ge=-86_400_000,
        le=86_400_000,
    )
    market: MarketConfig = attrs.field(factory=MarketConfig, metadata={"help": "[market]"})
    streams: StreamsConfig = attrs.field(factory=StreamsConfig, metadata={"help": "[streams]"})
    limits: LimitsConfig = attrs.field(factory=LimitsConfig, metadata={"help": "[limits]"})
    symbols: tuple[SymbolConfig, ...] = attrs.field(
        factory=lambda: (SYMBOL_PRESETS["BTCUSDT"], SYMBOL_PRESETS["ETHUSDT"]),
        converter=tuple,
        metadata={"help": "[[symbols]]"},
    )
    accounts: tuple[AccountConfig, ...] = attrs.field(
        factory=lambda: (AccountConfig(),), converter=tuple, metadata={"help": "[[accounts]]"}
    )
    rate_limits: tuple[RateLimitConfig, ...] = attrs.field(
        default=DEFAULT_RATE_LIMITS, converter=tuple, metadata={"help": "[[rate_limits]]"}
    )
    faults: tuple[FaultSpec, ...] = attrs.field(
        default=(), converter=tuple, metadata={"help": "[[faults]] armed at start"}
    )

    def __attrs_post_init__(self) -> None:
        for name in ("maker_commission", "taker_commission"):
            value = getattr(self, name)
            _check_decimal(name, value, positive=False)
            if value >= 1:
                raise ValueError(f"{name} must be < 1, got {value}")
        if not self.symbols:
            raise ValueError("at least one symbol is needed")
        names = [s.symbol for s in self.symbols]
        if len(set(names)) != len(names):
            raise ValueError(f"symbols repeat: {names}")
        keys = [a.api_key for a in self.accounts]
        if len(set(keys)) != len(keys):
            raise ValueError("accounts repeat an api_key")
        if self.audit_trade_retention < self.market.trade_retention:
            raise ValueError("audit_trade_retention must be >= market.trade_retention")

    def symbol(self, name: str) -> SymbolConfig | None:
        """The symbol called ``name`` (exact, upper case), if configured."""
        for s in self.symbols:
            if s.symbol == name:
                return s
        return None


SYMBOL_PRESETS: Final[dict[str, SymbolConfig]] = {
    "BTCUSDT": SymbolConfig(),
    "ETHUSDT": SymbolConfig(
        symbol="ETHUSDT",
        base_asset="ETH",
        quote_asset="USDT",
        start_price=Decimal("2000.00"),
        tick_size=Decimal("0.01"),
        min_price=Decimal("0.01"),
        max_price=Decimal("1000000.00"),
        step_size=Decimal("0.0001"),
        min_qty=Decimal("0.0001"),
        max_qty=Decimal("9000"),
        min_notional=Decimal("5"),
        max_notional=Decimal("9000000"),
    ),
    "LTCBTC": SymbolConfig(
        symbol="LTCBTC",
        base_asset="LTC",
        quote_asset="BTC",
        start_price=Decimal("0.002500"),
        tick_size=Decimal("0.000001"),
        min_price=Decimal("0.000001"),
        max_price=Decimal("1000"),
        step_size=Decimal("0.001"),
        min_qty=Decimal("0.001"),
        max_qty=Decimal("90000"),
        min_notional=Decimal("0.0001"),
        max_notional=Decimal("9000"),
        lot_multiple=100,
        # Binance's REST docs' example order is a BUY at 0.1 (40x this start
        # price); with no upper bid bound the preset accepts it byte for byte.
        percent_price_by_side=PercentPriceBySideConfig(bid_multiplier_up=Decimal("0")),
    ),
}


# ----------------------------------------------------------------------------- loading

#: Any bad key makes its table invalid, and the classes' own validation
#: (``__attrs_post_init__``) is reported on the table's path. Faults type and
#: check their own fields (:meth:`FaultSpec.from_mapping`).
_SCHEMA: Final = tomlschema.Schema(
    hooks={FaultSpec: tomlschema.from_mapping_hook(FaultSpec, FaultSpec.from_mapping)},
    constructor_errors=(ValueError, TypeError),
)

#: Map dotted key paths (array tables indexed: ``symbols.0.tick_size``) to line numbers.
locate_keys = tomlschema.locate_keys


def load(path: str | os.PathLike[str]) -> SimConfig:
    """Load and validate a simulator config file.

    Raises:
        ConfigError: every problem found, each naming file, line and key.
    """
    source = os.fspath(path)
    return loads(tomlschema.read_text(source), source=source)


def loads(text: str, *, source: str = "<string>") -> SimConfig:
    """Load and validate simulator config text (see :func:`load`)."""
    data = tomlschema.parse(text, source=source)
    return from_mapping(data, source=source, lines=locate_keys(text))


def from_mapping(
    data: Mapping[str, Any],
    *,
    source: str = "<mapping>",
    lines: Mapping[tuple[str, ...], int] | None = None,
) -> SimConfig:
    """Build a :class:`SimConfig` from already-parsed TOML data, strictly.

    Raises:
        ConfigError: every problem found.
    """
    report = tomlschema.Problems(source, lines)
    config = _SCHEMA.build(SimConfig, dict(data), report)
    report.raise_if_any()
    if isinstance(config, tomlschema.Invalid):  # pragma: no cover - always reported
        raise ConfigError([f"{source}: invalid configuration"])
    return config
