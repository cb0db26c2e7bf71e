"""Configuration of orders, risk, accounts and strategies (issue 6).

The schema lives in :mod:`daemon.config`; these tests cover the new sections:
types and ranges, decimal strings, cross-key checks, free-form strategy
options, the risk limit table, and reload kinds.
"""

from __future__ import annotations

import datetime as dt
import json
import types
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon import config as c
from daemon.errors import ConfigError
from daemon.orders.ids import derive_client_order_id
from daemon.risk.limits import LimitTable, RiskLimits

VENUE = '[venues.sim]\nrest_url = "http://127.0.0.1:1"\nws_url = "ws://127.0.0.1:2"\n'

FULL = """\
[daemon]
start_timeout_s = 90.0

[orders]
dispatch = "dynamic"
shards = 8
max_account_queues = 16
account_queue_capacity = 50
idle_queue_s = 30
entry_queue_capacity = 1024
group_commit_max = 64
send_timeout_s = 3.0
section_deadline_s = 8.0
drain_timeout_s = 7.5
clock_skew_s = 0.5
query_lag_s = 1.5
unknown_retry_s = 0.25
reconcile_interval_s = 15.0
reconcile_concurrency = 8
startup_reconcile_timeout_s = 80.0
poll_interval_s = 1.0
id_prefix = "abc_"

[risk]
max_orders_per_window = 20
order_window_s = 5
max_order_notional = "10000.50"
max_open_orders = 30
max_position_qty = "2"

[risk.position_qty_by_symbol]
BTCUSDT = "0.5"
DOGEUSDT = "100000"

[venues.sim]
rest_url = "http://127.0.0.1:1"
ws_url = "ws://127.0.0.1:2"

[accounts.main]
venue = "sim"

[accounts.big]
venue = "sim"

[accounts.big.risk]
max_order_notional = ""
max_open_orders = 0
order_window_s = 1.0

[accounts.big.risk.position_qty_by_symbol]
BTCUSDT = "3"
ETHUSDT = "0"

[strategies.example]
class = "daemon.strategies.example:QuoteStrategy"
account = "main"
heartbeat_interval_s = 2.5
max_restarts = 0
restart_period_s = 30

[strategies.example.options]
symbol = "BTCUSDT"
quantity = "0.001"
offset_bps = 25
interval_s = 5.0
enabled_sides = ["BUY", "SELL"]
since = 2024-01-02T03:04:05Z
nested = { depth = 2, inner = { flag = true } }

[[strategies.example.options.ladder]]
level = 1
size = "0.1"

[[strategies.example.options.ladder]]
level = 2

[strategies.idle]
class = "my_pkg.strats:Idle"
enabled = false
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        c.loads(text, source="t.toml")
    return list(info.value.problems)


def one_problem(text: str) -> str:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


# --------------------------------------------------------------------------- valid configs


def test_full_config_with_every_section_loads() -> None:
    cfg = c.loads(FULL, source="t.toml")
    orders = cfg.orders
    assert orders == c.OrdersConfig(
        dispatch="dynamic",
        shards=8,
        max_account_queues=16,
        account_queue_capacity=50,
        idle_queue_s=30.0,
        entry_queue_capacity=1024,
        group_commit_max=64,
        send_timeout_s=3.0,
        section_deadline_s=8.0,
        drain_timeout_s=7.5,
        clock_skew_s=0.5,
        query_lag_s=1.5,
        unknown_retry_s=0.25,
        reconcile_interval_s=15.0,
        reconcile_concurrency=8,
        startup_reconcile_timeout_s=80.0,
        poll_interval_s=1.0,
        id_prefix="abc_",
    )
    assert isinstance(orders.idle_queue_s, float)
    risk = cfg.risk
    assert risk.max_order_notional == Decimal("10000.50")
    assert str(risk.max_order_notional) == "10000.50"  # exactly as written
    assert risk.max_position_qty == Decimal("2")
    assert risk.position_qty_by_symbol == {"BTCUSDT": Decimal("0.5"), "DOGEUSDT": Decimal(100000)}
    assert set(cfg.accounts) == {"main", "big"}
    assert cfg.accounts["main"] == c.AccountConfig(venue="sim")
    big = cfg.accounts["big"].risk
    assert big.max_order_notional == ""
    assert big.max_open_orders == 0
    assert big.max_orders_per_window is None  # inherited
    assert big.overridden() == (
        "order_window_s",
        "max_order_notional",
        "max_open_orders",
        "position_qty_by_symbol",
    )
    example = cfg.strategies["example"]
    assert example.class_path == "daemon.strategies.example:QuoteStrategy"
    assert example.import_target() == ("daemon.strategies.example", "QuoteStrategy")
    assert (example.enabled, example.account) == (True, "main")
    assert (example.heartbeat_interval_s, example.max_restarts, example.restart_period_s) == (
        2.5,
        0,
        30.0,
    )
    idle = cfg.strategies["idle"]
    assert (idle.enabled, idle.account, idle.options) == (False, "", {})
    assert idle.heartbeat_interval_s == 10.0


def test_strategy_options_are_preserved_and_read_only() -> None:
    options = c.loads(FULL).strategies["example"].options
    assert options["symbol"] == "BTCUSDT"
    assert options["quantity"] == "0.001"  # strings stay strings: the strategy decides
    assert options["offset_bps"] == 25
    assert options["interval_s"] == 5.0
    assert options["enabled_sides"] == ("BUY", "SELL")
    assert options["since"] == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert options["nested"]["inner"]["flag"] is True
    assert options["ladder"] == ({"level": 1, "size": "0.1"}, {"level": 2})
    # A restarted strategy must get the same options its crashed predecessor got.
    assert isinstance(options, types.MappingProxyType)
    assert isinstance(options["nested"]["inner"], types.MappingProxyType)
    with pytest.raises(TypeError):
        options["nested"]["depth"] = 3


def test_defaults_build_the_risk_modules_defaults() -> None:
    cfg = c.defaults()
    assert cfg.limit_table() == LimitTable(default=RiskLimits())
    assert cfg.orders.id_prefix == "td1-"
    assert cfg.orders.startup_reconcile_timeout_s < cfg.daemon.start_timeout_s
    assert (cfg.accounts, cfg.strategies) == ({}, {})


def test_visibility_grace_adds_deadline_recv_window_skew_and_lag() -> None:
    orders = c.OrdersConfig(section_deadline_s=10.0, clock_skew_s=1.0, query_lag_s=2.0)
    assert orders.visibility_grace_s(5000) == pytest.approx(18.0)
    assert orders.visibility_grace_s(60_000) == pytest.approx(73.0)


def test_int_zero_and_empty_decimal_mean_no_limit() -> None:
    cfg = c.loads(
        '[risk]\nmax_orders_per_window = 0\nmax_open_orders = 0\nmax_order_notional = ""\n'
        'max_position_qty = "0"\n'
    )
    limits = cfg.limit_table().default
    assert limits.max_orders_per_window is None
    assert limits.max_open_orders is None
    assert limits.max_order_notional is None
    # "0" is a limit (only reducing orders), not "no limit".
    assert limits.max_position_qty == Decimal(0)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[orders]\ndispatch = "random"\n',
            "t.toml:2: orders.dispatch: must be one of 'sharded', 'dynamic', got 'random'",
        ),
        ("[orders]\nshards = 0\n", "t.toml:2: orders.shards: must be >= 1, got 0"),
        ("[orders]\nshards = 257\n", "t.toml:2: orders.shards: must be <= 256, got 257"),
        ("[orders]\nshards = 2.0\n", "orders.shards: expected an integer, got a float (2.0)"),
        ("[orders]\nmax_account_queues = 0\n", "orders.max_account_queues: must be >= 1"),
        ("[orders]\naccount_queue_capacity = 0\n", "orders.account_queue_capacity: must be >= 1"),
        ("[orders]\nidle_queue_s = 0\n", "orders.idle_queue_s: must be > 0, got 0"),
        ("[orders]\nentry_queue_capacity = 0\n", "orders.entry_queue_capacity: must be >= 1"),
        ("[orders]\ngroup_commit_max = 0\n", "orders.group_commit_max: must be >= 1"),
        ("[orders]\nsend_timeout_s = 0\n", "orders.send_timeout_s: must be > 0"),
        ("[orders]\ndrain_timeout_s = -1\n", "orders.drain_timeout_s: must be > 0"),
        ("[orders]\nclock_skew_s = -0.1\n", "orders.clock_skew_s: must be >= 0, got -0.1"),
        ("[orders]\nquery_lag_s = -1\n", "orders.query_lag_s: must be >= 0"),
        ("[orders]\nunknown_retry_s = 0\n", "orders.unknown_retry_s: must be > 0"),
        ("[orders]\nreconcile_interval_s = 0\n", "orders.reconcile_interval_s: must be > 0"),
        ("[orders]\nreconcile_concurrency = 0\n", "orders.reconcile_concurrency: must be >= 1"),
        ("[orders]\nreconcile_concurrency = 65\n", "orders.reconcile_concurrency: must be <= 64"),
        (
            "[orders]\nstartup_reconcile_timeout_s = 0\n",
            "orders.startup_reconcile_timeout_s: must be > 0",
        ),
        ("[orders]\npoll_interval_s = 0\n", "orders.poll_interval_s: must be > 0"),
        (
            "[orders]\nsend_timeout_s = 5\nsection_deadline_s = 5\n",
            "t.toml:3: orders.section_deadline_s: must be greater than orders.send_timeout_s (5)",
        ),
        (
            "[orders]\nsection_deadline_s = 4.5\n",
            "t.toml:2: orders.section_deadline_s: must be greater than orders.send_timeout_s (5)",
        ),
        (
            '[orders]\nid_prefix = "td 1"\n',
            "t.toml:2: orders.id_prefix: prefix must be characters of [A-Za-z0-9_-], got 'td 1'",
        ),
        (
            '[orders]\nid_prefix = "abcdefghijk"\n',
            "t.toml:2: orders.id_prefix: prefix 'abcdefghijk' is too long: at most 10 "
            "characters keep 130 bits of digest",
        ),
        ('[orders]\nid_prefix = ""\n', "t.toml:2: orders.id_prefix: must not be empty"),
        (
            "[risk]\nmax_order_notional = 0.5\n",
            "t.toml:2: risk.max_order_notional: decimals are written as strings, not floats "
            '(a float has already lost digits); use a string, e.g. "0.5"',
        ),
        (
            "[risk]\nmax_position_qty = 1e-8\n",
            "risk.max_position_qty: decimals are written as strings, not floats (a float has "
            'already lost digits); use a string, e.g. "0.00000001"',
        ),
        (
            "[risk]\nmax_order_notional = 100\n",
            "t.toml:2: risk.max_order_notional: decimals are written as strings; use a string, "
            'e.g. "100"',
        ),
        (
            "[risk]\nmax_order_notional = true\n",
            'risk.max_order_notional: expected a decimal string such as "0.5", got a boolean',
        ),
        (
            '[risk]\nmax_order_notional = "1e3"\n',
            'risk.max_order_notional: \'1e3\' is not a decimal number; write e.g. "0.5" or "" '
            "for no limit",
        ),
        ('[risk]\nmax_position_qty = "NaN"\n', "'NaN' is not a decimal number"),
        ('[risk]\nmax_position_qty = " 1"\n', "' 1' is not a decimal number"),
        (
            '[risk]\nmax_order_notional = "0"\n',
            't.toml:2: risk.max_order_notional: must be > 0, got "0" (write "" for no limit)',
        ),
        ('[risk]\nmax_position_qty = "-1"\n', 'risk.max_position_qty: must be >= 0, got "-1"'),
        ("[risk]\nmax_orders_per_window = -1\n", "risk.max_orders_per_window: must be >= 0"),
        ("[risk]\norder_window_s = 0\n", "risk.order_window_s: must be > 0, got 0"),
        ("[risk]\nmax_open_orders = -1\n", "risk.max_open_orders: must be >= 0"),
        (
            "[risk]\nposition_qty_by_symbol = 3\n",
            "expected a table of named entries, got an integer (3)",
        ),
        (
            '[risk.position_qty_by_symbol]\nbtcusdt = "1"\n',
            "t.toml:2: risk.position_qty_by_symbol.btcusdt: symbols are 2-20 characters of "
            "A-Z and 0-9, e.g. BTCUSDT",
        ),
        (
            "[risk.position_qty_by_symbol]\nBTCUSDT = 0.1\n",
            "t.toml:2: risk.position_qty_by_symbol.BTCUSDT: decimals are written as strings, "
            'not floats (a float has already lost digits); use a string, e.g. "0.1"',
        ),
        (
            '[risk.position_qty_by_symbol]\nBTCUSDT = ""\n',
            "risk.position_qty_by_symbol.BTCUSDT: '' is not a decimal number; write e.g. \"0.5\"",
        ),
        (
            '[risk.position_qty_by_symbol]\nBTCUSDT = "-0.1"\n',
            't.toml:2: risk.position_qty_by_symbol.BTCUSDT: must be >= 0, got "-0.1"',
        ),
    ],
)
def test_orders_and_risk_type_and_range_errors(text: str, expected: str) -> None:
    assert expected in one_problem(text)


def test_account_errors() -> None:
    problems = problems_of(
        VENUE + '[accounts.main]\nvenue = "nope"\n'
        "[accounts.Main]\n"
        "[accounts.other]\nvenu = 1\n"
        '[accounts.ok]\nvenue = "sim"\n[accounts.ok.risk]\nmax_open_order = 3\n'
        "max_order_notional = 2.5\n"
    )
    assert problems == [
        "t.toml:6: accounts.Main: names are 1-32 characters of a-z, 0-9, '_' and '-', "
        "starting with a letter or digit",
        "t.toml:8: accounts.other.venu: unknown key (did you mean 'venue'?)",
        "t.toml:7: accounts.other.venue: required key is missing",
        "t.toml:12: accounts.ok.risk.max_open_order: unknown key (did you mean 'max_open_orders'?)",
        "t.toml:13: accounts.ok.risk.max_order_notional: decimals are written as strings, not "
        'floats (a float has already lost digits); use a string, e.g. "2.5"',
        "t.toml:5: accounts.main.venue: no [venues.nope] table (sim)",
    ]


def test_account_risk_override_signs_are_checked() -> None:
    problems = problems_of(
        VENUE + '[accounts.a]\nvenue = "sim"\n[accounts.a.risk]\nmax_order_notional = "-5"\n'
        '[accounts.a.risk.position_qty_by_symbol]\nETHUSDT = "-2"\n'
    )
    assert problems == [
        't.toml:7: accounts.a.risk.max_order_notional: must be > 0, got "-5" (write "" for '
        "no limit)",
        't.toml:9: accounts.a.risk.position_qty_by_symbol.ETHUSDT: must be >= 0, got "-2"',
    ]


@pytest.mark.parametrize(
    "path",
    [
        "pkg.module",
        "pkg.module:",
        ":Class",
        "pkg..module:Class",
        "pkg.module:Outer.Inner",
        "pkg.class:Thing",
        "pkg-x.module:Thing",
        "pkg.module:Thing()",
        "pkg/module.py:Thing",
        "pkg.module::Thing",
        "",
    ],
)
def test_bad_strategy_class_paths(path: str) -> None:
    problem = one_problem(f'[strategies.s]\nclass = "{path}"\n')
    assert problem == (
        f"t.toml:2: strategies.s.class: {path!r} is not an import path of the form "
        "\"package.module:Class\" (a dotted module path, ':', then the class name)"
    )


@pytest.mark.parametrize("path", ["a:B", "pkg.sub_mod.x2:Thing_1", "_p.m:_C"])
def test_good_strategy_class_paths_are_not_imported(path: str) -> None:
    # None of these modules exists: the shape is all that is checked at load.
    cfg = c.loads(f'[strategies.s]\nclass = "{path}"\n')
    assert cfg.strategies["s"].class_path == path


def test_strategy_errors() -> None:
    problems = problems_of(
        "[strategies.a]\nenabled = true\n"
        '[strategies.b]\nclass = "x:Y"\naccount = "ghost"\nheartbeat_interval_s = 0\n'
        "max_restarts = -1\nrestart_period_s = 0\nclas = 1\n"
        '[strategies.c]\nclass = "x:Y"\noptions = "no"\n'
    )
    assert problems == [
        "t.toml:1: strategies.a.class: required key is missing",
        "t.toml:6: strategies.b.heartbeat_interval_s: must be > 0, got 0",
        "t.toml:7: strategies.b.max_restarts: must be >= 0, got -1",
        "t.toml:8: strategies.b.restart_period_s: must be > 0, got 0",
        "t.toml:9: strategies.b.clas: unknown key (did you mean 'class'?)",
        "t.toml:12: strategies.c.options: expected a table, got a string ('no')",
        "t.toml:5: strategies.b.account: no [accounts.ghost] table (none configured)",
    ]


def test_strategy_account_must_exist() -> None:
    ok = c.loads(
        VENUE + '[accounts.main]\nvenue = "sim"\n[strategies.s]\nclass = "x:Y"\naccount = "main"\n'
    )
    assert ok.strategies["s"].account == "main"
    assert (
        one_problem(
            VENUE + '[accounts.main]\nvenue = "sim"\n'
            '[strategies.s]\nclass = "x:Y"\naccount = "mian"\n'
        )
        == "t.toml:8: strategies.s.account: no [accounts.mian] table (main)"
    )


def test_startup_reconcile_must_fit_in_start_timeout_when_accounts_exist() -> None:
    account = VENUE + '[accounts.main]\nvenue = "sim"\n'
    problem = one_problem(account + "[daemon]\nstart_timeout_s = 45\n")
    # The key is not in the file: no line, but both values are named.
    assert problem == (
        "t.toml: orders.startup_reconcile_timeout_s: must be less than "
        "daemon.start_timeout_s (45), got 45: start-up reconciliation is part of the start"
    )
    problem = one_problem(account + "[orders]\nstartup_reconcile_timeout_s = 60\n")
    assert problem.startswith("t.toml:7: orders.startup_reconcile_timeout_s: must be less than")
    # No account, no reconciliation: a capture-only daemon may start fast.
    assert c.loads("[daemon]\nstart_timeout_s = 20\n").daemon.start_timeout_s == 20.0
    cfg = c.loads(
        account + "[daemon]\nstart_timeout_s = 45\n[orders]\nstartup_reconcile_timeout_s = 44.9\n"
    )
    assert cfg.orders.startup_reconcile_timeout_s == 44.9


def test_every_problem_in_the_new_sections_reported_at_once() -> None:
    text = """\
[orders]
dispatch = "fast"
section_deadline_s = 1.0
id_prefix = "x!"
shard = 2

[risk]
max_order_notional = 1.5
max_position_qty = "-3"

[accounts.a]
venue = "missing"

[strategies.s]
class = "nope"
account = "missing"

[strategies.s.options]
anything = { goes = [1, 2] }
"""
    assert problems_of(text) == [
        "t.toml:2: orders.dispatch: must be one of 'sharded', 'dynamic', got 'fast'",
        "t.toml:5: orders.shard: unknown key (did you mean 'shards'?)",
        "t.toml:8: risk.max_order_notional: decimals are written as strings, not floats (a "
        'float has already lost digits); use a string, e.g. "1.5"',
        "t.toml:3: orders.section_deadline_s: must be greater than orders.send_timeout_s (5): "
        "the section sends and then persists the answer",
        "t.toml:4: orders.id_prefix: prefix must be characters of [A-Za-z0-9_-], got 'x!'",
        't.toml:9: risk.max_position_qty: must be >= 0, got "-3"',
        "t.toml:12: accounts.a.venue: no [venues.missing] table (none configured)",
        "t.toml:15: strategies.s.class: 'nope' is not an import path of the form "
        "\"package.module:Class\" (a dotted module path, ':', then the class name)",
        "t.toml:16: strategies.s.account: no [accounts.missing] table (a)",
    ]


# --------------------------------------------------------------------------- unknown keys


_KEY = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)


@pytest.mark.parametrize(
    ("header", "cls", "prefix"),
    [
        ("[orders]\n", c.OrdersConfig, "orders"),
        ("[risk]\n", c.RiskConfig, "risk"),
        (VENUE + '[accounts.a]\nvenue = "sim"\n', c.AccountConfig, "accounts.a"),
        (
            VENUE + '[accounts.a]\nvenue = "sim"\n[accounts.a.risk]\n',
            c.AccountRiskConfig,
            "accounts.a.risk",
        ),
        ('[strategies.s]\nclass = "m:C"\n', c.StrategyConfig, "strategies.s"),
    ],
)
@settings(max_examples=25, deadline=None)
@given(keys=st.dictionaries(_KEY, st.integers(min_value=1, max_value=5), max_size=4))
def test_unknown_keys_rejected_everywhere_but_options(
    header: str, cls: type[Any], prefix: str, keys: dict[str, int]
) -> None:
    known = {
        attrs.fields_dict(cls)[name].metadata.get("toml_key", name)
        for name in attrs.fields_dict(cls)
    }
    unknown = {k for k in keys if k not in known}
    body = "".join(f"{k} = {v}\n" for k, v in keys.items() if k in unknown)
    try:
        c.loads(header + body, source="u.toml")
    except ConfigError as exc:
        reported = {p.split(": ")[1] for p in exc.problems}
        assert reported == {f"{prefix}.{k}" for k in unknown}
        assert all("unknown key" in p for p in exc.problems)
    else:
        assert not unknown


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # Without control characters and surrogates, a JSON string is a TOML basic string.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value


_SCALARS = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=8)
)
_OPTION_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEY, inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=60, deadline=None)
@given(options=st.dictionaries(_KEY, _OPTION_VALUES, max_size=5))
def test_any_options_are_passed_through_unchanged(options: dict[str, Any]) -> None:
    body = "".join(f"{key} = {_toml_value(value)}\n" for key, value in options.items())
    cfg = c.loads('[strategies.s]\nclass = "m:C"\n[strategies.s.options]\n' + body)
    assert _thaw(cfg.strategies["s"].options) == options


# --------------------------------------------------------------------------- limit table


def test_limit_table_merges_account_overrides_over_the_defaults() -> None:
    table = c.loads(FULL).limit_table()
    default = RiskLimits(
        max_orders_per_window=20,
        order_window_s=5.0,
        max_order_notional=Decimal("10000.50"),
        max_open_orders=30,
        max_position_qty=Decimal(2),
        position_qty_by_symbol={"BTCUSDT": Decimal("0.5"), "DOGEUSDT": Decimal(100000)},
    )
    assert table.default == default
    # Listed without overrides: the defaults, explicitly.
    assert table.for_account("main") == default
    assert table.for_account("big") == RiskLimits(
        max_orders_per_window=20,  # inherited
        order_window_s=1.0,
        max_order_notional=None,  # "" switches the default limit off
        max_open_orders=None,  # 0: no limit
        max_position_qty=Decimal(2),  # inherited
        position_qty_by_symbol={
            "BTCUSDT": Decimal(3),  # the account's entry wins
            "DOGEUSDT": Decimal(100000),  # inherited entry
            "ETHUSDT": Decimal(0),  # the account's own entry
        },
    )
    assert table.for_account("unlisted") == default
    assert set(table.accounts) == {"main", "big"}


def test_account_risk_override_field_names_match_risk() -> None:
    assert [f.name for f in attrs.fields(c.AccountRiskConfig)] == [
        f.name for f in attrs.fields(c.RiskConfig)
    ]
    assert all(f.default is None for f in attrs.fields(c.AccountRiskConfig))


# --------------------------------------------------------------------------- reload


def test_diff_reports_risk_live_and_orders_restart() -> None:
    base = c.loads(FULL)
    changed = c.loads(
        FULL.replace("max_open_orders = 30", "max_open_orders = 31")
        .replace('BTCUSDT = "0.5"', 'BTCUSDT = "0.6"')
        .replace("shards = 8", "shards = 9")
        .replace("reconcile_interval_s = 15.0", "reconcile_interval_s = 16.0")
        .replace("order_window_s = 1.0", "order_window_s = 2.0")
        .replace('[accounts.main]\nvenue = "sim"', '[accounts.main]\nvenue = "sim2"')
        .replace(
            "[venues.sim]",
            '[venues.sim2]\nrest_url = "http://h:1"\nws_url = "ws://h:2"\n[venues.sim]',
        )
        .replace("offset_bps = 25", "offset_bps = 30")
        .replace("max_restarts = 0", "max_restarts = 1")
    )
    d = c.diff(base, changed)
    assert d.live == (
        "orders.reconcile_interval_s",
        "risk.max_open_orders",
        "risk.position_qty_by_symbol",
        "accounts.big.risk.order_window_s",
    )
    assert d.restart == (
        "orders.shards",
        "venues.sim2",
        "accounts.main.venue",
        "strategies.example.max_restarts",
        "strategies.example.options",
    )
    assert not c.diff(base, c.loads(FULL)).changed


def test_added_and_removed_entries_are_named_once_as_restart() -> None:
    base = c.loads(FULL)
    without = c.loads(
        FULL.replace('[accounts.main]\nvenue = "sim"\n', "")
        .replace('account = "main"\n', "")
        .replace('[strategies.idle]\nclass = "my_pkg.strats:Idle"\nenabled = false\n', "")
    )
    d = c.diff(base, without)
    assert d.live == ()
    assert d.restart == ("strategies.example.account", "accounts.main", "strategies.idle")
    assert c.diff(without, base).restart == (
        "accounts.main",
        "strategies.example.account",
        "strategies.idle",
    )


def test_apply_live_changes_only_the_live_keys() -> None:
    base = c.loads(FULL)
    new = c.loads(
        FULL.replace("max_open_orders = 0", "max_open_orders = 7")
        .replace("max_orders_per_window = 20", "max_orders_per_window = 21")
        .replace("shards = 8", "shards = 9")
    )
    d = c.diff(base, new)
    assert d.live == ("risk.max_orders_per_window", "accounts.big.risk.max_open_orders")
    merged = c.apply_live(base, new, d.live)
    assert merged.risk.max_orders_per_window == 21
    assert merged.accounts["big"].risk.max_open_orders == 7
    assert merged.orders.shards == 8  # restart-only: untouched
    assert merged.accounts["main"] is base.accounts["main"]
    assert merged.limit_table().for_account("big").max_open_orders == 7
    assert c.diff(merged, new).restart == ("orders.shards",)
    assert c.diff(merged, new).live == ()


def test_apply_live_refuses_keys_it_cannot_place() -> None:
    base = c.loads(FULL)
    with pytest.raises(KeyError, match="entry 'ghost' is not in both"):
        c.apply_live(base, base, ("accounts.ghost.risk.max_open_orders",))
    with pytest.raises(KeyError, match="not a configuration key"):
        c.apply_live(base, base, ("orders.nope",))
    with pytest.raises(KeyError, match="not a configuration key"):
        c.apply_live(base, base, ("orders.shards.deeper",))


# --------------------------------------------------------------------------- docs and summary


def test_describe_keys_lists_the_new_sections() -> None:
    keys = {key: default for key, default, _ in c.describe_keys()}
    assert keys["orders.dispatch"] == "sharded"
    assert keys["orders.id_prefix"] == "td1-"
    assert keys["risk.max_order_notional"] == ""
    assert keys["risk.position_qty_by_symbol"] == {}
    assert keys["accounts.NAME.venue"] is None  # required
    assert keys["accounts.NAME.risk.max_open_orders"] is None  # inherited
    assert keys["strategies.NAME.class"] is None  # required; a keyword, so a TOML alias
    assert keys["strategies.NAME.options"] == {}
    assert "strategies.NAME.class_path" not in keys


def test_summary_shows_orders_risk_accounts_and_strategies() -> None:
    text = c.summary(c.loads(FULL, source="t.toml"))
    assert "  venues           sim" in text
    assert (
        "  orders           dynamic, at most 16 account queues; ids 'abc_'; send timeout 3s "
        "within a 8s section"
    ) in text
    assert (
        "  risk (default)   20 orders per 5s, open orders 30, notional per order 10000.50, "
        "position 2 (BTCUSDT 0.5, DOGEUSDT 100000)"
    ) in text
    assert "  account main     on venue sim\n" in text
    assert (
        "  account big      on venue sim; risk: 20 orders per 1s, open orders no limit, "
        "notional per order no limit, position 2 (BTCUSDT 3, DOGEUSDT 100000, ETHUSDT 0) "
        "(overrides order_window_s, max_order_notional, max_open_orders, "
        "position_qty_by_symbol)"
    ) in text
    assert (
        "  strategy example daemon.strategies.example:QuoteStrategy on account main (enabled)"
    ) in text
    assert "  strategy idle    my_pkg.strats:Idle (disabled)" in text
    defaults = c.summary(c.defaults())
    assert "  accounts         none (no order can be placed)" in defaults
    assert "  orders           sharded over 4 workers; ids 'td1-'" in defaults


def test_configured_prefix_derives_ids() -> None:
    prefix = c.loads('[orders]\nid_prefix = "abcdefghij"\n').orders.id_prefix
    cid = derive_client_order_id("m-1", "main", "BTCUSDT", prefix=prefix)
    assert cid.startswith("abcdefghij")
    assert len(cid) == 36
