"""Loading strategy classes by import path, at daemon start.

``class = "package.module:Class"`` is resolved when the daemon starts, before
the supervision tree runs, so a typo fails the start with a message that says
exactly what is wrong, instead of a strategy crash-looping at run time:

==========================  =============================================================
:attr:`LoadProblemKind`     meaning
==========================  =============================================================
``BAD_PATH``                not of the form ``package.module:Class``
``MODULE_NOT_FOUND``        the module (or one of its packages) does not exist
``IMPORT_FAILED``           the module exists but raised while importing (a missing
                            dependency, a syntax error, an exception at import time)
``ATTRIBUTE_MISSING``       the module has no such attribute (close names suggested)
``NOT_A_CLASS``             the attribute exists but is not a class
``NO_ASYNC_RUN``            the class has no ``async def run(self)``
``BAD_CONSTRUCTOR``         its constructor cannot be called with the context alone
``BAD_OPTIONS``             its ``validate_options`` found problems in the options table
==========================  =============================================================

Every problem of every strategy is collected into one :class:`StrategyLoadError`
(a :class:`~daemon.errors.ConfigError`), so an operator fixes them in one pass.
"""

from __future__ import annotations

import difflib
import enum
import importlib
import inspect
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

import attrs

from daemon.errors import ConfigError
from daemon.strategies.spec import StrategySpec

__all__ = [
    "CLASS_PATH_PATTERN",
    "LoadProblem",
    "LoadProblemKind",
    "StrategyLoadError",
    "load_strategies",
    "load_strategy_class",
]

_IDENT: Final = r"[A-Za-z_][A-Za-z0-9_]*"
#: ``package.module:Class`` (the attribute may be dotted: ``module:Outer.Inner``).
CLASS_PATH_PATTERN: Final = re.compile(rf"\A{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*\Z")


class LoadProblemKind(enum.StrEnum):
    """What is wrong with a strategy's class (see the module docstring)."""

    BAD_PATH = "bad_path"
    MODULE_NOT_FOUND = "module_not_found"
    IMPORT_FAILED = "import_failed"
    ATTRIBUTE_MISSING = "attribute_missing"
    NOT_A_CLASS = "not_a_class"
    NO_ASYNC_RUN = "no_async_run"
    BAD_CONSTRUCTOR = "bad_constructor"
    BAD_OPTIONS = "bad_options"


@attrs.frozen
class LoadProblem:
    """One reason a strategy cannot be loaded.

    Attributes:
        strategy: The strategy's name (``None`` when loading a bare path).
        class_path: The configured ``class``.
        kind: What is wrong.
        detail: Human explanation naming the offending value.
    """

    strategy: str | None
    class_path: str
    kind: LoadProblemKind
    detail: str

    def __str__(self) -> str:
        where = f"strategies.{self.strategy}" if self.strategy else "strategy"
        if self.kind is LoadProblemKind.BAD_OPTIONS:
            return f"{where}.options: {self.detail}"
        return f'{where}: class "{self.class_path}": {self.detail}'


class StrategyLoadError(ConfigError):
    """One or more strategies cannot be loaded; ``failures`` holds each :class:`LoadProblem`.

    ``problems`` (from :class:`~daemon.errors.ConfigError`) holds their messages.
    """

    def __init__(self, failures: Sequence[LoadProblem]) -> None:
        self.failures: tuple[LoadProblem, ...] = tuple(failures)
        super().__init__([str(failure) for failure in self.failures])

    @property
    def kinds(self) -> tuple[LoadProblemKind, ...]:
        """The kinds of the failures, in order."""
        return tuple(failure.kind for failure in self.failures)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _missing_module(module: str, exc: ModuleNotFoundError) -> str | None:
    """The part of ``module`` that does not exist, if that is what ``exc`` says."""
    missing = exc.name
    if missing and (module == missing or module.startswith(missing + ".")):
        return missing
    return None


def _resolve(path: str, strategy: str | None) -> tuple[type | None, list[LoadProblem]]:
    def problem(kind: LoadProblemKind, detail: str) -> tuple[None, list[LoadProblem]]:
        return None, [LoadProblem(strategy, path, kind, detail)]

    if not isinstance(path, str) or CLASS_PATH_PATTERN.match(path) is None:
        return problem(
            LoadProblemKind.BAD_PATH,
            'must be "package.module:Class" (a dotted module path, a colon, a class name)',
        )
    module_name, _, attribute_path = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = _missing_module(module_name, exc)
        if missing is not None:
            where = "" if missing == module_name else f" (there is no package {missing!r})"
            return problem(
                LoadProblemKind.MODULE_NOT_FOUND, f"module {module_name!r} not found{where}"
            )
        return problem(
            LoadProblemKind.IMPORT_FAILED,
            f"importing module {module_name!r} failed: {_describe(exc)}",
        )
    except Exception as exc:
        return problem(
            LoadProblemKind.IMPORT_FAILED,
            f"importing module {module_name!r} failed: {_describe(exc)}",
        )

    obj: Any = module
    walked = module_name
    for part in attribute_path.split("."):
        if not hasattr(obj, part):
            candidates = [name for name in dir(obj) if not name.startswith("_")]
            close = difflib.get_close_matches(part, candidates, n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            owner = f"module {walked!r}" if walked == module_name else repr(walked)
            return problem(
                LoadProblemKind.ATTRIBUTE_MISSING, f"{owner} has no attribute {part!r}{hint}"
            )
        obj = getattr(obj, part)
        walked = f"{walked}.{part}" if walked != module_name else f"{module_name}:{part}"

    if not isinstance(obj, type):
        return problem(
            LoadProblemKind.NOT_A_CLASS,
            f"{attribute_path!r} is a {type(obj).__name__}, not a class",
        )
    run = getattr(obj, "run", None)
    if run is None:
        return problem(
            LoadProblemKind.NO_ASYNC_RUN,
            f"class {obj.__qualname__} has no run method (it needs 'async def run(self)')",
        )
    if not inspect.iscoroutinefunction(run):
        return problem(
            LoadProblemKind.NO_ASYNC_RUN,
            f"{obj.__qualname__}.run is not an async method (define it as 'async def run(self)')",
        )
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        signature = None  # a builtin or C-level constructor: nothing to check
    if signature is not None:
        try:
            signature.bind(object())
        except TypeError:
            return problem(
                LoadProblemKind.BAD_CONSTRUCTOR,
                f"{obj.__qualname__}{signature} cannot be called with the strategy context "
                f"as its only argument",
            )
    return obj, []


def load_strategy_class(path: str, *, strategy: str | None = None) -> type:
    """Import ``"package.module:Class"`` and check it looks like a strategy.

    Args:
        path: The configured ``class``.
        strategy: The strategy's name, for the error message.

    Raises:
        StrategyLoadError: with one :class:`LoadProblem` saying what is wrong.
    """
    cls, problems = _resolve(path, strategy)
    if problems:
        raise StrategyLoadError(problems)
    assert cls is not None
    return cls


def _option_problems(cls: type, spec: StrategySpec) -> list[LoadProblem]:
    validate = getattr(cls, "validate_options", None)
    if validate is None or not callable(validate):
        return []
    try:
        found = list(validate(spec.options, account=spec.account))
    except Exception as exc:
        found = [f"validate_options raised {_describe(exc)}"]
    return [
        LoadProblem(spec.name, spec.class_path, LoadProblemKind.BAD_OPTIONS, str(text))
        for text in found
    ]


def load_strategies(specs: Iterable[StrategySpec]) -> dict[str, type]:
    """Load the class of every *enabled* strategy and check its options.

    A class with a ``validate_options(options, *, account)`` classmethod has
    its options checked here too.

    Returns:
        Strategy name → class.

    Raises:
        StrategyLoadError: listing every problem of every strategy.
    """
    classes: dict[str, type] = {}
    failures: list[LoadProblem] = []
    for spec in specs:
        if not spec.enabled:
            continue
        cls, problems = _resolve(spec.class_path, spec.name)
        if cls is not None:
            problems = _option_problems(cls, spec)
            if not problems:
                classes[spec.name] = cls
        failures += problems
    if failures:
        raise StrategyLoadError(failures)
    return classes
