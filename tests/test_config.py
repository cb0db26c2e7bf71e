"""Configuration loading: strictness, error reporting, reload diff, example file."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon import config as c
from daemon.errors import ConfigError
from daemon.secrets import SecretRef

REPO = Path(__file__).resolve().parents[1]


def problems_of(text: str, source: str = "t.toml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        c.loads(text, source=source)
    return list(info.value.problems)


def test_empty_file_gives_all_defaults() -> None:
    assert c.loads("", source="x") == attrs.evolve(c.defaults(), source="x")


def test_every_problem_reported_at_once_with_file_key_and_line() -> None:
    text = """\
[daemon]
shutdown_timeout_s = "5"
bogus = 1

[admin]
listen = "0.0.0.0:80"
token = "hunter2"
max_connections = 0

[supervison]
x = 1

[logging]
level = "loud"
"""
    problems = problems_of(text)
    assert problems == [
        "t.toml:2: daemon.shutdown_timeout_s: expected a number, got a string ('5')",
        "t.toml:3: daemon.bogus: unknown key",
        "t.toml:7: admin.token: secrets cannot be written inline; use "
        '{ credential = "NAME" }, { file = "PATH" } or { env = "VAR" }',
        "t.toml:8: admin.max_connections: must be >= 1, got 0",
        "t.toml:10: supervison: unknown key (did you mean 'supervision'?)",
        "t.toml:14: logging.level: must be one of 'debug', 'info', 'warning', 'error', got 'loud'",
        "t.toml:6: admin.listen: '0.0.0.0' is not a loopback address; the admin API only "
        "listens on 127.0.0.0/8, ::1 or localhost",
    ]


def test_inline_secret_value_is_never_echoed() -> None:
    problems = problems_of('[admin]\ntoken = "s3cr3t-value"\n')
    assert not any("s3cr3t-value" in p for p in problems)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[daemon]\nstart_timeout_s = true\n", "expected a number, got a boolean (true)"),
        ("[daemon]\nstart_timeout_s = 0\n", "must be > 0, got 0"),
        ("[daemon]\nstart_timeout_s = 1e9\n", "must be <= 3600, got 1e+09"),
        ("[daemon]\nstart_timeout_s = nan\n", "must be a finite number"),
        ("[supervision]\nmax_restarts = 1.5\n", "expected an integer, got a float (1.5)"),
        ("[testing]\nfault_injection = 1\n", "expected true or false, got an integer (1)"),
        ("[daemon]\nstate_dir = 3\n", "expected a non-empty path string, got an integer (3)"),
        ("daemon = 3\n", "expected a table, got an integer (3)"),
        ('[admin]\ntoken = { vault = "x" }\n', "unknown secret source"),
        ('[admin]\ntoken = { file = "" }\n', "expected a non-empty string"),
        ('[admin]\ntoken = { file = "a", env = "b" }\n', "expected exactly one of"),
        ('[admin]\nlisten = "localhost"\n', "missing ':PORT'"),
        ('[admin]\nlisten = "127.0.0.1:70000"\n', "port 70000 is out of range 0..65535"),
        ('[admin]\nlisten = "::1:80"\n', "an IPv6 address must be in brackets"),
        ("[health]\nlag_unhealthy_ms = 50.0\n", "must be greater than health.lag_degraded_ms"),
        ("[supervision]\nbackoff_max_s = 0.1\n", "must be >= supervision.backoff_initial_s"),
    ],
)
def test_type_and_range_errors(text: str, expected: str) -> None:
    problems = problems_of(text)
    assert len(problems) == 1
    assert expected in problems[0]


def test_toml_syntax_error_names_file_and_line() -> None:
    (problem,) = problems_of("[daemon\n", source="bad.toml")
    assert problem.startswith("bad.toml:1: TOML syntax error:")
    (problem,) = problems_of("a = 1\n\nb = [1,,]\n", source="bad.toml")
    assert problem.startswith("bad.toml:3: TOML syntax error:")


def test_ints_accepted_for_floats_and_ipv6_loopback() -> None:
    cfg = c.loads('[daemon]\nshutdown_timeout_s = 7\n[admin]\nlisten = "[::1]:0"\n')
    assert cfg.daemon.shutdown_timeout_s == 7.0
    assert isinstance(cfg.daemon.shutdown_timeout_s, float)
    assert c.parse_listen(cfg.admin.listen) == ("::1", 0)


def test_empty_listen_disables_admin() -> None:
    assert c.loads('[admin]\nlisten = ""\n').admin.listen == ""


def test_secret_reference_parsed() -> None:
    cfg = c.loads('[admin]\ntoken = { credential = "admin-token" }\n')
    assert cfg.admin.token == SecretRef("credential", "admin-token")


def test_relative_state_dir_resolves_against_config_file(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "t.toml"
    path.parent.mkdir()
    path.write_text('[daemon]\nstate_dir = "state"\n')
    assert c.load(path).daemon.state_dir == tmp_path / "etc" / "state"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        c.load(tmp_path / "nope.toml")


def test_control_socket_path_rules(tmp_path: Path) -> None:
    cfg = attrs.evolve(c.defaults(), daemon=c.DaemonConfig(state_dir=tmp_path))
    assert cfg.control_socket_path({}) == tmp_path / "control.sock"
    assert cfg.control_socket_path({"RUNTIME_DIRECTORY": "/run/a:/run/b"}) == Path(
        "/run/a/control.sock"
    )
    explicit = attrs.evolve(cfg, daemon=attrs.evolve(cfg.daemon, control_socket="/x/y.sock"))
    assert explicit.control_socket_path({"RUNTIME_DIRECTORY": "/run/a"}) == Path("/x/y.sock")


def test_check_environment_finds_unwritable_state_and_missing_secrets(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = c.loads(
        f'[daemon]\nstate_dir = "{blocker}/state"\n'
        '[admin]\ntoken = { credential = "admin-token" }\n',
        source="t.toml",
    )
    problems = c.check_environment(cfg, {})
    assert problems[0] == f"t.toml: daemon.state_dir: {blocker}/state: {blocker} is not a directory"
    assert "admin.token: credential 'admin-token': $CREDENTIALS_DIRECTORY is not set" in problems[1]
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "admin-token").write_text("tok\n")
    good = attrs.evolve(cfg, daemon=attrs.evolve(cfg.daemon, state_dir=tmp_path / "new" / "dir"))
    assert c.check_environment(good, {"CREDENTIALS_DIRECTORY": str(creds)}) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_check_environment_unwritable_dir(tmp_path: Path) -> None:  # pragma: no cover - root CI
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    cfg = attrs.evolve(c.defaults(), daemon=c.DaemonConfig(state_dir=ro / "s"))
    assert "cannot be created" in c.check_environment(cfg, {})[0]


def test_diff_splits_live_and_restart_keys() -> None:
    old = c.defaults()
    new = c.loads(
        '[logging]\nlevel = "debug"\n[daemon]\nstate_dir = "/elsewhere"\n'
        '[admin]\ntoken = { env = "T" }\n'
    )
    d = c.diff(old, new)
    assert d.live == ("logging.level", "admin.token")
    assert d.restart == ("daemon.state_dir",)
    assert not c.diff(old, old).changed


def test_venues_are_named_tables_with_required_keys() -> None:
    cfg = c.loads(
        '[venues.sim]\nrest_url = "http://127.0.0.1:1"\nws_url = "ws://127.0.0.1:2"\n'
        '[venues.testnet]\nrest_url = "https://testnet.binance.vision"\n'
        'ws_url = "wss://stream.testnet.binance.vision"\n'
        'api_key = { env = "K" }\napi_secret = { credential = "s" }\n'
    )
    assert set(cfg.venues) == {"sim", "testnet"}
    assert cfg.venues["testnet"].api_secret == SecretRef("credential", "s")
    assert cfg.venues["sim"].recv_window_ms == 5000
    problems = problems_of(
        '[venues.Bad]\nrest_url = "x"\n'
        '[venues.a]\nrest_url = "ftp://h"\nws_url = "ws://h"\napi_key = { env = "K" }\n'
        "[venues.b]\nws_url = 3\n"
    )
    assert problems == [
        "t.toml:1: venues.Bad: names are 1-32 characters of a-z, 0-9, '_' and '-', "
        "starting with a letter or digit",
        "t.toml:8: venues.b.ws_url: expected a string, got an integer (3)",
        "t.toml:7: venues.b.rest_url: required key is missing",
        "t.toml:4: venues.a.rest_url: expected a http:// or https:// URL, got 'ftp://h'",
        "t.toml:3: venues.a: api_key and api_secret go together: set both or neither",
    ]
    changed = c.loads('[venues.sim]\nrest_url = "http://h:1"\nws_url = "ws://h:3"\n')
    base = c.loads('[venues.sim]\nrest_url = "http://h:1"\nws_url = "ws://h:2"\n')
    assert c.diff(base, changed).restart == ("venues.sim.ws_url",)


def test_example_file_lists_every_key_with_its_default() -> None:
    path = REPO / "config" / "tradingd.toml"
    text = path.read_text()
    assert c.load(path) == attrs.evolve(c.defaults(), source=str(path))
    data = tomllib.loads(text)
    for key, default, help_text in c.describe_keys():
        assert help_text, f"{key} has no help text"
        section, name = key.rsplit(".", 1)
        if default is None or ".NAME" in section:
            # A commented example line, or for a table-valued key its commented header.
            header = re.escape(key).replace("NAME", "[a-z0-9_-]+")
            documented = re.search(rf"^# ({name} = |\[{header}\]$)", text, re.M)
            assert documented, f"{key} not documented"
        else:
            assert name in data[section], f"{key} missing from the example config"


@given(
    st.dictionaries(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12),
        st.integers(min_value=-5, max_value=5),
        max_size=6,
    )
)
def test_unknown_keys_always_rejected(keys: dict[str, int]) -> None:
    known = {f.name for f in attrs.fields(c.HealthConfig)}
    body = "".join(f"{k} = {v}\n" for k, v in keys.items())
    text = "[health]\n" + body
    unknown = set(keys) - known
    try:
        c.loads(text, source="h.toml")
    except ConfigError as exc:
        reported = {p.split(": ")[1] for p in exc.problems if "unknown key" in p}
        assert reported == {f"health.{k}" for k in unknown}
    else:
        assert not unknown


def test_marketdata_must_name_a_venue_and_valid_symbols() -> None:
    problems = problems_of(
        '[marketdata]\nvenue = "nope"\nsymbols = ["btcusdt", "ETHUSDT", "ETHUSDT"]\n'
    )
    assert problems == [
        "t.toml:2: marketdata.venue: no [venues.nope] table (none configured)",
        "t.toml:3: marketdata.symbols.0: 'btcusdt' is not a symbol (2-20 characters of A-Z "
        "and 0-9, e.g. BTCUSDT)",
        "t.toml:3: marketdata.symbols: lists a symbol twice",
    ]
    (problem,) = problems_of(
        '[venues.sim]\nrest_url = "http://h:1"\nws_url = "ws://h:2"\n[marketdata]\nvenue = "sim"\n'
    )
    assert problem == "t.toml:4: marketdata.symbols: capture needs at least one symbol"


def test_store_path_is_under_state_dir_unless_absolute(tmp_path: Path) -> None:
    cfg = c.loads(f'[daemon]\nstate_dir = "{tmp_path}"\n')
    assert cfg.store_path() == tmp_path / "tradingd.db"
    cfg = c.loads(f'[daemon]\nstate_dir = "{tmp_path}"\n[store]\npath = "/x/y.db"\n')
    assert cfg.store_path() == Path("/x/y.db")
