"""Tests of daemon.strategies.loader and daemon.strategies.spec: a typo fails the start, clearly."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.config import StrategyConfig
from daemon.errors import ConfigError
from daemon.strategies import QuoteStrategy
from daemon.strategies.loader import (
    LoadProblemKind,
    StrategyLoadError,
    load_strategies,
    load_strategy_class,
)
from daemon.strategies.spec import StrategySpec
from tests.helpers.strategies import strategy_spec

from . import sample_strategies

# The package these tests live in, however pytest named it ("strategies" or
# "tests.strategies"): modules that must not be imported before the test are
# addressed through it.
PKG = __package__
SAMPLES = sample_strategies.__name__


def _load_error(path: str, strategy: str | None = "demo") -> StrategyLoadError:
    with pytest.raises(StrategyLoadError) as info:
        load_strategy_class(path, strategy=strategy)
    assert len(info.value.failures) == 1
    return info.value


# --------------------------------------------------------------------------- load_strategy_class


def test_loads_a_strategy_class() -> None:
    assert load_strategy_class(f"{SAMPLES}:SteadyStrategy") is sample_strategies.SteadyStrategy
    assert load_strategy_class(f"{SAMPLES}:Outer.Inner") is sample_strategies.SteadyStrategy
    assert load_strategy_class("daemon.strategies.example:QuoteStrategy") is QuoteStrategy


@pytest.mark.parametrize(
    "path",
    ["", "no_colon_here", "pkg.mod:", ":Class", "pkg..mod:Class", "pkg.mod:A:B", "pkg mod:Class"],
)
def test_malformed_path(path: str) -> None:
    error = _load_error(path)
    assert error.kinds == (LoadProblemKind.BAD_PATH,)
    assert "package.module:Class" in str(error)
    assert str(error).startswith("strategies.demo: ")


def test_module_not_found_names_the_module() -> None:
    error = _load_error(f"{PKG}.no_such_module:Anything")
    assert error.kinds == (LoadProblemKind.MODULE_NOT_FOUND,)
    assert f"module '{PKG}.no_such_module' not found" in str(error)
    assert isinstance(error, ConfigError)
    assert error.problems == (str(error.failures[0]),)


def test_missing_parent_package_is_named() -> None:
    error = _load_error("tradingd_no_such_pkg.sub:Strategy")
    assert error.kinds == (LoadProblemKind.MODULE_NOT_FOUND,)
    assert "there is no package 'tradingd_no_such_pkg'" in str(error)


def test_module_raising_at_import_is_not_reported_as_missing() -> None:
    error = _load_error(f"{PKG}.sample_broken_import:Anything")
    assert error.kinds == (LoadProblemKind.IMPORT_FAILED,)
    assert "RuntimeError: boom while importing" in str(error)


def test_missing_dependency_of_the_module_is_import_failed() -> None:
    # The module exists; what is missing is *its* dependency.
    error = _load_error(f"{PKG}.sample_missing_dependency:WouldBeStrategy")
    assert error.kinds == (LoadProblemKind.IMPORT_FAILED,)
    assert "tradingd_no_such_dependency" in str(error)
    assert "sample_missing_dependency" in str(error)


def test_attribute_missing_suggests_close_names() -> None:
    error = _load_error(f"{SAMPLES}:SteadyStrategi")
    assert error.kinds == (LoadProblemKind.ATTRIBUTE_MISSING,)
    message = str(error)
    assert "has no attribute 'SteadyStrategi'" in message
    assert "did you mean 'SteadyStrategy'" in message


def test_nested_attribute_missing() -> None:
    error = _load_error(f"{SAMPLES}:Outer.Missing")
    assert error.kinds == (LoadProblemKind.ATTRIBUTE_MISSING,)
    assert f"'{SAMPLES}:Outer' has no attribute 'Missing'" in str(error)


@pytest.mark.parametrize(
    ("attribute", "kind_name"), [("NOT_A_CLASS", "int"), ("not_a_class_either", "function")]
)
def test_not_a_class(attribute: str, kind_name: str) -> None:
    error = _load_error(f"{SAMPLES}:{attribute}")
    assert error.kinds == (LoadProblemKind.NOT_A_CLASS,)
    assert f"'{attribute}' is a {kind_name}, not a class" in str(error)


@pytest.mark.parametrize(
    ("attribute", "text"),
    [("NoRunStrategy", "has no run method"), ("SyncRunStrategy", "is not an async method")],
)
def test_run_must_be_async(attribute: str, text: str) -> None:
    error = _load_error(f"{SAMPLES}:{attribute}")
    assert error.kinds == (LoadProblemKind.NO_ASYNC_RUN,)
    assert text in str(error)


def test_constructor_must_take_the_context() -> None:
    error = _load_error(f"{SAMPLES}:NoContextStrategy")
    assert error.kinds == (LoadProblemKind.BAD_CONSTRUCTOR,)
    assert "NoContextStrategy()" in str(error)


def test_error_without_strategy_name() -> None:
    error = _load_error("nope", strategy=None)
    assert str(error).startswith('strategy: class "nope": ')


# --------------------------------------------------------------------------- load_strategies


def _spec(name: str, class_path: str, **fields: Any) -> StrategySpec:
    return strategy_spec(name, class_path, **fields)


def test_load_strategies_collects_every_problem_and_skips_disabled() -> None:
    specs = [
        _spec("good", f"{SAMPLES}:SteadyStrategy"),
        _spec("typo", f"{SAMPLES}:SteadyStrategi"),
        _spec("off", "does.not:Exist", enabled=False),
        _spec("opts", f"{SAMPLES}:OptionsCheckedStrategy", options={"size": 0}),
        _spec("quote", "daemon.strategies.example:QuoteStrategy", options={"symbol": "x"}),
    ]
    with pytest.raises(StrategyLoadError) as info:
        load_strategies(specs)
    failures = info.value.failures
    assert [f.strategy for f in failures] == ["typo", "opts", "opts"] + ["quote"] * 3
    assert failures[0].kind is LoadProblemKind.ATTRIBUTE_MISSING
    assert {f.kind for f in failures[1:]} == {LoadProblemKind.BAD_OPTIONS}
    problems = info.value.problems
    assert "strategies.opts.options: size: must be a positive integer, got 0" in problems
    assert "strategies.opts.options: account: required" in problems
    assert any(p.startswith("strategies.quote.options: symbol:") for p in problems)
    assert any(p.startswith("strategies.quote.options: quantity: required") for p in problems)
    assert not any("strategies.off" in p for p in problems)


def test_load_strategies_returns_enabled_classes() -> None:
    specs = [
        _spec("a", f"{SAMPLES}:SteadyStrategy"),
        _spec("b", f"{SAMPLES}:OptionsCheckedStrategy", account="main", options={"size": 3}),
        _spec("off", "does.not:Exist", enabled=False),
    ]
    assert load_strategies(specs) == {
        "a": sample_strategies.SteadyStrategy,
        "b": sample_strategies.OptionsCheckedStrategy,
    }


# --------------------------------------------------------------------------- StrategySpec


def test_spec_from_config_takes_every_key_of_the_section() -> None:
    cfg = StrategyConfig(
        class_path="pkg.mod:Cls",
        enabled=False,
        account="",
        heartbeat_interval_s=2.5,
        max_restarts=3,
        restart_period_s=30.0,
        options={"symbol": "BTCUSDT"},
    )
    spec = StrategySpec.from_config("quote", cfg)
    assert spec.class_path == "pkg.mod:Cls"
    assert spec.enabled is False
    assert spec.account is None
    assert (spec.heartbeat_interval_s, spec.max_restarts, spec.restart_period_s) == (2.5, 3, 30.0)
    assert dict(spec.options) == {"symbol": "BTCUSDT"}
    with pytest.raises(TypeError):
        spec.options["symbol"] = "ETHUSDT"  # type: ignore[index]


def test_spec_from_config_has_the_sections_defaults() -> None:
    spec = StrategySpec.from_config("s1", StrategyConfig(class_path="a.b:C", account="main"))
    assert spec.class_path == "a.b:C"
    assert spec.account == "main"
    assert spec.enabled is True
    assert (spec.heartbeat_interval_s, spec.max_restarts, spec.restart_period_s) == (10.0, 5, 60.0)
    assert dict(spec.options) == {}


def test_spec_lists_every_invalid_value() -> None:
    cfg = StrategyConfig(
        class_path="",
        enabled="yes",  # type: ignore[arg-type]
        heartbeat_interval_s=0,
        max_restarts=-1,
        restart_period_s=float("nan"),
    )
    with pytest.raises(ConfigError) as info:
        StrategySpec.from_config("bad", cfg)
    assert info.value.problems == (
        'strategies.bad.class: required, like "package.module:Class"',
        "strategies.bad.enabled: must be true or false, got 'yes'",
        "strategies.bad.heartbeat_interval_s: must be a number > 0, got 0",
        "strategies.bad.max_restarts: must be an integer >= 0, got -1",
        "strategies.bad.restart_period_s: must be a number > 0, got nan",
    )


def test_spec_rejects_a_bad_name() -> None:
    with pytest.raises(ConfigError, match="the name must be"):
        strategy_spec("has space", "a:B")
