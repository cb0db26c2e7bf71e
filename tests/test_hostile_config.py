"""Hostile or broken config files: every failure is a ConfigError with its place.

Issue 13, findings 1, 7 (unit side), 9 and 10, and the TOML part of the fuzzing
requirement: whatever a config file holds, ``daemon.config`` answers with a
valid :class:`~daemon.config.Config` or a :class:`~daemon.errors.ConfigError`
listing problems as ``FILE[:LINE]: ...``, never another exception (a reload
that raised anything else used to kill the daemon).
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon import app, cli, tomlschema
from daemon import config as c
from daemon.app import Daemon, _load_checked
from daemon.cli import client as cli_client
from daemon.cli import demo as cli_demo
from daemon.config import environment
from daemon.errors import ConfigError
from daemon.housekeeping import prepare_state_dir
from daemon.notify import Notifier
from daemon.secrets import SecretRef
from daemon.store import SqliteStore, inline_runner
from tests.helpers.fuzzing import (
    deep_json,
    fuzz_settings,
    hostile_bytes,
    hostile_text,
    huge_int_text,
)

DEEP_ARRAY = "x = " + "[" * 5000 + "]" * 5000
DEEP_INLINE = "x = " + "{a = " * 5000 + "1" + "}" * 5000
HUGE_INT = "x = " + "9" * 5000


def problems_of(text: str, source: str = "t.toml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        c.loads(text, source=source)
    return list(info.value.problems)


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[" * 5000 + "]" * 5000, "nests"),
        ("{a = " * 5000 + "1" + "}" * 5000, "nests"),
        ("[" * 40 + "]" * 40, "nests deeper than 32 levels"),
        ("9" * 5000, "an integer has more than 4300 digits"),
        ("-1_" + "0" * 4400, "an integer has more than 4300 digits"),
    ],
)
def test_unparsable_values_are_config_errors_with_their_line(value: str, message: str) -> None:
    """Deep nesting and huge integers raised RecursionError/ValueError from tomllib."""
    text = f'[daemon]\nstate_dir = "/tmp"\n\n[logging]\nlevel = "info"\nx = {value}\n'
    (problem,) = problems_of(text)
    assert problem.startswith("t.toml:6: "), problem
    assert message in problem, problem
    assert len(problem) < 300, "the offending value is not echoed"


def test_deep_nesting_over_several_lines_names_the_line_where_it_gets_too_deep() -> None:
    text = "a = 1\nb = [\n" + "[\n" * 40 + "]\n" * 41
    (problem,) = problems_of(text)
    assert problem.startswith("t.toml:33: "), problem  # line 2 opens level 2; 32 more lines


def test_deep_tables_and_dotted_keys_count_as_nesting() -> None:
    (problem,) = problems_of("ok = 1\n[" + ".".join(["t"] * 40) + "]\n")
    assert problem.startswith("t.toml:2: ") and "nests deeper" in problem, problem
    # Brackets inside strings and comments are not nesting.
    quoted = 'a = "' + "[" * 100 + '" # ' + "{" * 100 + "\nb = '''\n" + "[" * 100 + "\n'''\n"
    assert tomlschema.parse(quoted, source="t.toml")
    assert tomlschema.problem_line(quoted) is None


def test_syntax_errors_keep_their_line() -> None:
    (problem,) = problems_of("a = 1\n\nb = [1,,]\n")
    assert problem.startswith("t.toml:3: TOML syntax error:"), problem


@pytest.mark.timeout(30)
def test_the_line_scanner_is_linear_on_long_blank_runs() -> None:
    """A lazy header pattern backtracked cubically ("[" + 2000 blanks took 12 s)."""
    text = "a = [\n[" + " " * 100_000 + "1],\n]\n"
    assert problems_of(text) == ["t.toml:1: a: unknown key"]


def test_locate_keys_on_a_long_blank_header_line_is_fast() -> None:
    line = "[" + " " * 100_000 + "x"
    assert tomlschema.locate_keys(line) == {}
    assert tomlschema.problem_line(line) is None


# --------------------------------------------------------------------------- values


def test_integer_too_large_for_a_float_is_a_range_problem() -> None:
    """``float(10**400)`` raised OverflowError out of the loader."""
    (problem,) = problems_of("[daemon]\nshutdown_timeout_s = 1" + "0" * 400 + "\n")
    assert problem == "t.toml:2: daemon.shutdown_timeout_s: must be a finite number"


def test_huge_integer_out_of_range_is_reported_by_its_size() -> None:
    """``f"{10**400:g}"`` raised OverflowError while reporting the range."""
    (problem,) = problems_of("[admin]\nmax_connections = 1" + "0" * 400 + "\n")
    assert problem == "t.toml:2: admin.max_connections: must be <= 10000, got a 401-digit integer"


def test_unbounded_durations_now_have_an_upper_bound() -> None:
    """``retention_days * 86400`` overflowed to inf at run time."""
    (problem,) = problems_of("[store]\nretention_days = 1e308\n")
    assert "store.retention_days: must be <= 36500" in problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[daemon]\nstate_dir = "a\\u0000b"\n', "daemon.state_dir: a path cannot contain a NUL"),
        ('[admin]\ntoken = { file = "a\\u0000b" }\n', "admin.token.file: expected a non-empty"),
        ('[daemon]\ncontrol_socket = "a\\u0000b"\n', "daemon.control_socket: a path cannot"),
    ],
)
def test_nul_in_paths_is_refused(text: str, expected: str) -> None:
    """Every system call on such a path raises ValueError, not OSError."""
    (problem,) = problems_of(text)
    assert expected in problem, problem


def test_long_values_are_not_echoed_whole() -> None:
    (problem,) = problems_of('[logging]\nlevel = "' + "x" * 10_000 + '"\n')
    assert len(problem) < 300, problem


# --------------------------------------------------------------------------- files


def test_unreadable_files_are_config_errors_naming_the_file(tmp_path: Path) -> None:
    bad_utf8 = tmp_path / "latin1.toml"
    bad_utf8.write_bytes(b'a = 1\n[daemon]\nstate_dir = "caf\xe9"\n')
    (problem,) = _problems_of_file(bad_utf8)
    assert problem.startswith(f"{bad_utf8}:3: not valid UTF-8"), problem
    (problem,) = _problems_of_file(tmp_path)
    assert problem == f"{tmp_path}: cannot read: not a regular file"
    (problem,) = _problems_of_file(tmp_path / "missing.toml")
    assert problem == f"{tmp_path / 'missing.toml'}: file not found"
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (tomlschema.MAX_FILE_BYTES + 1))
    (problem,) = _problems_of_file(big)
    assert "longer than" in problem


def test_a_fifo_or_a_device_is_refused_without_blocking(tmp_path: Path) -> None:
    """A reload of a FIFO used to block forever (no writer); /dev/zero never ends."""
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    (problem,) = _problems_of_file(fifo)
    assert problem == f"{fifo}: cannot read: not a regular file"
    link = tmp_path / "zero.toml"
    link.symlink_to("/dev/zero")
    (problem,) = _problems_of_file(link)
    assert problem == f"{link}: cannot read: not a regular file"


def _problems_of_file(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        c.load(path)
    config, problems = c.check_file(path)
    assert config is None and problems == list(info.value.problems)
    return problems


@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_INLINE, HUGE_INT])
def test_reload_loader_rejects_hostile_files_with_config_error(tmp_path: Path, body: str) -> None:
    """What the daemon calls on SIGHUP / `tradingd reload` (in a worker thread)."""
    path = tmp_path / "t.toml"
    path.write_text(f'[daemon]\nstate_dir = "{tmp_path}"\n' + body + "\n")
    with pytest.raises(ConfigError) as info:
        _load_checked(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:3: "), problem


@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_INLINE, HUGE_INT])
def test_check_config_exits_2_with_file_and_line(
    tmp_path: Path, body: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.toml"
    path.write_text(f'[daemon]\nstate_dir = "{tmp_path}"\n' + body + "\n")
    assert cli.main(["check-config", str(path)]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"  {path}:3: TOML" in err and "Traceback" not in err, err


@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_INLINE, HUGE_INT, "\udcff"])
def test_reload_client_finds_the_socket_of_a_hostile_file(
    tmp_path: Path, body: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tradingd reload` must reach the daemon (to be rejected) whatever the file holds."""
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    path = tmp_path / "t.toml"
    path.write_bytes(
        f'[daemon]\nstate_dir = "{tmp_path}"\n{body}\n'.encode("utf-8", "surrogateescape")
    )
    args = cli.build_parser().parse_args(["reload", "--config", str(path)])
    # The state_dir line parses on its own; a file that is not UTF-8 gives the defaults.
    expected = tmp_path if body != "\udcff" else c.defaults().daemon.state_dir
    assert cli_client._socket_of(args) == expected / "control.sock"


# --------------------------------------------------------------------------- check-config, one pass


def test_check_config_lists_schema_and_secret_problems_in_one_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing secret was only reported after the schema errors were fixed, without a line."""
    path = tmp_path / "t.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{tmp_path}"\nshutdown_timeout_s = -1\n\n'
        '[admin]\ntoken = { file = "/nonexistent/admin-token" }\n\n'
        '[venues.x]\nrest_url = "http://127.0.0.1:1"\nws_url = "ws://127.0.0.1:1"\n'
        'api_key = { env = "TRADINGD_TEST_UNSET_KEY" }\n'
        'api_secret = { env = "TRADINGD_TEST_UNSET_SECRET" }\n'
        "bogus = 1\n"
    )
    assert cli.main(["check-config", str(path)]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "invalid configuration (5 problem(s))" in err, err
    assert f"{path}:3: daemon.shutdown_timeout_s: must be > 0" in err
    assert f"{path}:13: venues.x.bogus: unknown key" in err
    assert f"{path}:6: admin.token: file '/nonexistent/admin-token'" in err, err
    assert f"{path}:11: venues.x.api_key: env 'TRADINGD_TEST_UNSET_KEY'" in err, err
    assert f"{path}:12: venues.x.api_secret: env 'TRADINGD_TEST_UNSET_SECRET'" in err, err


def test_a_key_with_a_problem_is_not_checked_again_against_the_system(tmp_path: Path) -> None:
    """A bad state_dir falls back to the default for the checks, but is not reported twice."""
    path = tmp_path / "t.toml"
    path.write_text("[daemon]\nstate_dir = 5\n")
    _config, problems = c.check_file(path)
    assert problems == [
        f"{path}:2: daemon.state_dir: expected a non-empty path string, got an integer (5)"
    ]


@pytest.mark.parametrize(
    "where", ["/proc/self/tradingd", "/sys/kernel", "/dev/shm/tradingd", "/proc"]
)
def test_state_dir_on_a_pseudo_filesystem_is_refused(tmp_path: Path, where: str) -> None:
    path = tmp_path / "t.toml"
    path.write_text(f'\n[daemon]\nstate_dir = "{where}"\n')
    _config, problems = c.check_file(path)
    (problem,) = problems
    assert problem.startswith(f"{path}:3: daemon.state_dir: {where} is under /"), problem
    assert "kernel file system, not a place for state" in problem


def test_store_and_socket_directories_are_checked_too(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{tmp_path}"\ncontrol_socket = "/proc/c.sock"\n'
        '[store]\npath = "/sys/t.db"\n'
    )
    _config, problems = c.check_file(path)
    assert [p.split(": ")[:2] for p in problems] == [
        [f"{path}:5", "store.path"],
        [f"{path}:3", "daemon.control_socket"],
    ], problems


def test_mount_type_of_a_path_is_found() -> None:
    if not Path("/proc/self/mounts").exists():  # pragma: no cover - not Linux
        pytest.skip("no /proc/self/mounts")
    assert environment._mount_type(Path("/proc/self")) == "proc"


# --------------------------------------------------------------------------- fuzzing


@fuzz_settings()
@given(text=st.one_of(hostile_text, st.text(max_size=300)))
def test_fuzz_loads_any_text(text: str) -> None:
    _config_or_config_error(text)


def _config_or_config_error(text: str) -> None:
    try:
        config = c.loads(text, source="f.toml")
    except ConfigError as exc:
        assert exc.problems and all(p.startswith("f.toml") for p in exc.problems), exc.problems
    else:
        assert isinstance(config, c.Config)


def _schema_keys(cls: type[Any], path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key path of the schema (named entries as ``x``), tables included."""
    hints = typing.get_type_hints(cls)
    for field in attrs.fields(cls):
        if field.metadata.get(tomlschema.INTERNAL):
            continue
        key = (*path, tomlschema.toml_key(field))
        tp = hints[field.name]
        yield key
        if attrs.has(tp) and tp is not SecretRef:
            yield from _schema_keys(tp, key)
        elif typing.get_origin(tp) is typing.get_origin(typing.Mapping[str, int]):
            entry = typing.get_args(tp)[1]
            if attrs.has(entry) and entry is not SecretRef:
                yield from _schema_keys(entry, (*key, "x"))


SCHEMA_KEYS = sorted(set(_schema_keys(c.Config)))


def _toml_string(text: str) -> str:
    # A JSON string is a TOML basic string, except for lone surrogates (a syntax error: fine).
    return json.dumps(text)


def _deep_toml(depth_and_kind: tuple[int, str]) -> str:
    depth, kind = depth_and_kind
    if kind == "array":
        return "[" * depth + "1" + "]" * depth
    return "{a = " * depth + "1" + "}" * depth


_scalar_values = st.one_of(
    st.integers().map(str),
    huge_int_text(4200, 4400),
    st.sampled_from(
        [
            "1" + "0" * 400,
            "-1" + "0" * 400,
            "inf",
            "-inf",
            "nan",
            "1e308",
            "-0.0",
            "0x7fffffffffffffffff",
            "true",
            "false",
            "1979-05-27T07:32:00Z",
            "07:32:00",
            "1979-05-27",
            '""',
            "[]",
            "{}",
            '"127.0.0.1:0"',
            '"http://u:p@127.0.0.1:1"',
            '"ws://127.0.0.1:1"',
            '"/proc"',
            '"/dev/null"',
            '"0.5"',
            '"1e999"',
            '"NaN"',
            '"BTCUSDT"',
            '"daemon.strategies.example:QuoteStrategy"',
            '{ env = "NOPE_UNSET_VAR" }',
            '{ credential = "../x" }',
            '{ file = "" }',
            '{ bad = "x" }',
        ]
    ),
    st.floats(allow_nan=True, allow_infinity=False)
    .map(repr)
    .filter(lambda t: "e" not in t or "." in t),
    hostile_text.map(_toml_string),
)
_hostile_values = st.one_of(
    _scalar_values,
    st.tuples(st.integers(1, 2000), st.sampled_from(["array", "inline"])).map(_deep_toml),
    st.deferred(lambda: _extreme_numbers),
    st.lists(_scalar_values, max_size=4).map(lambda items: "[" + ", ".join(items) + "]"),
    st.dictionaries(
        st.sampled_from(["a", "venue", "file", "env", "url", "rest_url"]),
        _scalar_values,
        max_size=3,
    ).map(lambda d: "{" + ", ".join(f"{k} = {v}" for k, v in d.items()) + "}"),
)


def _numeric_keys(cls: type[Any], path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    hints = typing.get_type_hints(cls)
    for field in attrs.fields(cls):
        tp = hints[field.name]
        key = (*path, tomlschema.toml_key(field))
        if tp in (int, float, int | None, float | None):
            yield key
        elif attrs.has(tp) and tp is not SecretRef:
            yield from _numeric_keys(tp, key)


NUMERIC_KEYS = sorted(set(_numeric_keys(c.Config)))

_extreme_numbers = st.one_of(
    st.integers(0, 4300).map(lambda digits: "1" + "0" * digits),
    st.integers(0, 4300).map(lambda digits: "-1" + "0" * digits),
    st.integers().map(str),
    st.floats().map(lambda f: repr(f) if f == f and abs(f) != math.inf else "nan"),
    st.sampled_from(["inf", "-inf", "nan", "+nan", "1e308", "-1e308", "5e-324", "-0.0", "0"]),
)


@fuzz_settings()
@given(assignments=st.dictionaries(st.sampled_from(NUMERIC_KEYS), _extreme_numbers, max_size=4))
def test_fuzz_numeric_keys_with_extreme_numbers(assignments: dict[tuple[str, ...], str]) -> None:
    """Integers too large for a float and their range messages raised OverflowError."""
    _config_or_config_error(_document(assignments))


def _document(assignments: dict[tuple[str, ...], str]) -> str:
    return "".join(f"{'.'.join(key)} = {value}\n" for key, value in assignments.items())


@fuzz_settings(ci_examples=100)
@given(assignments=st.dictionaries(st.sampled_from(SCHEMA_KEYS), _hostile_values, max_size=6))
def test_fuzz_schema_keys_with_hostile_values(assignments: dict[tuple[str, ...], str]) -> None:
    """Real keys with extreme values reach the schema's converters and the cross-checks."""
    _config_or_config_error(_document(assignments))


@fuzz_settings()
@given(
    assignments=st.dictionaries(st.sampled_from(SCHEMA_KEYS), _hostile_values, max_size=4),
    junk=st.one_of(hostile_bytes, deep_json(50, 3000).map(str.encode), st.just(b"")),
)
def test_fuzz_files_through_check_file(
    tmp_path_factory: pytest.TempPathFactory, assignments: dict[tuple[str, ...], str], junk: bytes
) -> None:
    """check-config's and reload's path: bytes from disk, then the environment checks."""
    path = tmp_path_factory.mktemp("fuzz") / "t.toml"
    path.write_bytes(_document(assignments).encode("utf-8", "surrogatepass") + junk)
    config, problems = c.check_file(path, {})
    assert config is not None or problems
    assert all(p.startswith(str(path)) for p in problems), problems
    assert all(re.match(rf"{re.escape(str(path))}(:\d+)?: ", p) for p in problems), problems


# --------------------------------------------------------------------------- private files


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """Umask 000: whatever is private below is so by its own mode, not by the umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("permissive_umask")
def test_state_dir_is_created_private_with_its_parents(tmp_path: Path) -> None:
    """The state directory was created 0750 & ~umask (0777 & ~umask for its parents)."""
    state = tmp_path / "a" / "b" / "state"
    prepare_state_dir(state)
    assert [mode_of(p) for p in (tmp_path / "a", tmp_path / "a" / "b", state)] == [0o700] * 3
    assert list(state.iterdir()) == [], "the write probe is gone"


@pytest.mark.usefixtures("permissive_umask")
def test_existing_shared_state_dir_is_kept_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    prepare_state_dir(state)
    assert mode_of(state) == 0o755, "an operator's directory is not changed behind their back"
    assert "accessible to other users (mode 0755)" in caplog.text
    caplog.clear()
    os.chmod(state, 0o700)
    prepare_state_dir(state)
    assert "accessible" not in caplog.text


@pytest.mark.usefixtures("permissive_umask")
async def test_database_and_its_wal_and_shm_are_private(tmp_path: Path) -> None:
    """SQLite created the database 0644 & ~umask; its -wal/-shm copy the database's mode."""
    db = tmp_path / "store.db"
    async with await SqliteStore.open(db, runner=inline_runner):
        files = [db, tmp_path / "store.db-wal", tmp_path / "store.db-shm"]
        assert all(f.exists() for f in files), files
        assert [mode_of(f) for f in files] == [0o600] * 3


@pytest.mark.usefixtures("permissive_umask")
async def test_existing_shared_database_is_kept_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "store.db"
    db.touch()
    os.chmod(db, 0o644)
    async with await SqliteStore.open(db, runner=inline_runner):
        pass
    assert mode_of(db) == 0o644
    assert "accessible to other users (mode 0644)" in caplog.text


@pytest.mark.usefixtures("permissive_umask")
def test_demo_token_and_its_directory_are_private(tmp_path: Path) -> None:
    token = cli_demo.demo_token_path(tmp_path / "var")
    cli_demo._write_demo_token(token)
    assert (mode_of(token.parent), mode_of(token)) == (0o700, 0o600)
    os.chmod(token, 0o644)  # an old token file, rewritten: private again
    cli_demo._write_demo_token(token)
    assert mode_of(token) == 0o600


# --------------------------------------------------------------------------- the reload path


async def test_reload_survives_an_unexpected_loader_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever escapes the loader, a reload is a rejection, never the daemon's end."""
    path = tmp_path / "t.toml"
    path.write_text(f'[daemon]\nstate_dir = "{tmp_path}"\n')
    daemon = Daemon(c.load(path), notifier=Notifier(None), config_path=path)

    def broken(_path: Path) -> None:
        raise RuntimeError("a bug the loader did not foresee")

    monkeypatch.setattr(app, "_load_checked", broken)
    outcome = await daemon.reload("test")
    assert not outcome.ok
    assert outcome.errors == (f"{path}: could not be loaded (RuntimeError)",)
    assert daemon.last_reload is outcome


@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_INLINE, HUGE_INT])
async def test_reload_of_a_hostile_file_is_rejected_in_process(tmp_path: Path, body: str) -> None:
    path = tmp_path / "t.toml"
    path.write_text(f'[daemon]\nstate_dir = "{tmp_path}"\n')
    daemon = Daemon(c.load(path), notifier=Notifier(None), config_path=path)
    path.write_text(f'[daemon]\nstate_dir = "{tmp_path}"\n{body}\n')
    outcome = await daemon.reload("SIGHUP")
    assert not outcome.ok
    (problem,) = outcome.errors
    assert problem.startswith(f"{path}:3: TOML"), problem


def test_a_state_dir_name_too_long_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    """Found by the fuzzer: Path.exists() raised ENAMETOOLONG out of check-config."""
    path = tmp_path / "t.toml"
    path.write_text(f'[daemon]\nstate_dir = "{tmp_path}/{"a" * 5000}"\n')
    _config, problems = c.check_file(path)
    state_dir, socket = problems
    assert state_dir.startswith(f"{path}:2: daemon.state_dir: ") and "name too long" in state_dir
    assert socket.startswith(f"{path}:1: daemon.control_socket: ") and "longer than" in socket
    assert all(len(problem) < 400 for problem in problems), problems
