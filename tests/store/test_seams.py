"""The store's seams: all SQL under ``daemon/store/``, table modules on the owner interface.

The second backend (PostgreSQL) is one owner plus one module per concern,
not a hunt through the tree. So, read from the source (AST, not grep, so a
docstring that mentions ``execute(`` does not count):

* no module under ``daemon/`` outside ``daemon/store/`` runs SQL (calls
  ``.execute(sql…)`` / ``.executemany`` / ``.executescript`` with a
  statement; a Redis pipeline's argument-less ``execute()`` is not SQL) or
  imports :mod:`sqlite3` or :mod:`psycopg`. ``daemon/bench/`` and
  ``daemon/torture/`` are the exceptions: the bench's raw baselines measure the
  databases *without* tradingd, and the torture runner's witness reads the
  daemon's store read-only *independently* of it;
* inside ``daemon/store/`` only the owners (``sqlite.py``, ``postgres.py``)
  and the read-only integrity check (``maintenance.py``) open connections;
* no store module imports an owner (:mod:`daemon.store.sqlite`,
  :mod:`daemon.store.postgres`, even under ``TYPE_CHECKING``) except the ones
  that select it: the child that opens it (``service.py``) and the package's
  re-exports (``__init__.py``); the table facades take a
  :class:`~daemon.store.base.StoreOwner` and run its dialect's functions.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

import daemon
from daemon.store.deadletters import SqliteDeadLetterStore
from daemon.store.maintenance import prune_market_data, run_retention
from daemon.store.marketdata import MarketDataStore
from daemon.store.orders import OrderStore

ROOT = Path(daemon.__file__).parent
STORE = ROOT / "store"
#: Run raw SQLite on purpose: the baseline the orders benchmark compares with, and the
#: torture runner's read-only witness of the store (it must not depend on daemon.store).
EXEMPT = (ROOT / "bench", ROOT / "torture")
SQL_METHODS = frozenset({"execute", "executemany", "executescript"})
#: Store modules allowed to import an owner: the owners, the child that opens one, the re-exports.
OWNER_SELECTORS = frozenset({"sqlite.py", "postgres.py", "service.py", "__init__.py"})
#: The owner modules.
OWNERS = ("daemon.store.sqlite", "daemon.store.postgres")
#: Store modules with no SQL and no driver: what both backends share as it is.
BACKEND_NEUTRAL = (
    "rows.py",
    "orders_rules.py",
    "marketdata_values.py",
    "marketdata_chunks.py",
    "dialect.py",
    "marketdata.py",
    "orders.py",
    "deadletters.py",
)
DRIVERS = ("sqlite3", "psycopg")
#: Modules allowed to open a connection: the owners, and the read-only integrity check.
#: Modules that open their own connections: the owners, and the tools that read or copy
#: a database file beside them (integrity check, online backup and info, migration).
CONNECTORS = frozenset(
    STORE / name
    for name in ("sqlite.py", "postgres.py", "maintenance.py", "backup.py", "migrate_pg.py")
)


def modules(under: Path) -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(under.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imported_names(tree: ast.Module) -> set[str]:
    """Every module imported (``import a.b``, ``from a.b import c`` → ``a.b`` and ``a.b.c``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def sql_calls(tree: ast.Module) -> list[int]:
    """Lines that call a method named like a DB-API statement runner, with a statement."""
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in SQL_METHODS
        and (node.args or node.keywords)
    ]


def connects(tree: ast.Module) -> list[int]:
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "connect"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id in DRIVERS
    ]


def where(path: Path, lines: list[int]) -> str:
    return ", ".join(f"{path.relative_to(ROOT.parent)}:{line}" for line in lines)


def test_the_walk_sees_the_store_and_its_sql() -> None:
    # The guards below are only as good as the walk: it must find the SQL that exists.
    found = {path.name: sql_calls(tree) for path, tree in modules(STORE)}
    assert found["orders_transitions.py"] and found["marketdata_trades.py"] and found["sqlite.py"]
    assert found["pg_orders_transitions.py"] and found["pg_marketdata_trades.py"]
    assert sql_calls(ast.parse("pipe.execute()")) == []
    assert "sqlite3" in imported_names(ast.parse("import sqlite3"))
    assert connects(ast.parse("psycopg.connect(dsn)")) == [1]
    assert "daemon.store.sqlite.SqliteStore" in imported_names(
        ast.parse("if TYPE_CHECKING:\n    from daemon.store.sqlite import SqliteStore\n")
    )


def test_no_sql_outside_the_store() -> None:
    offenders = []
    for path, tree in modules(ROOT):
        if path.is_relative_to(STORE) or any(path.is_relative_to(e) for e in EXEMPT):
            continue
        if lines := sql_calls(tree):
            offenders.append(f"runs SQL at {where(path, lines)}")
        for driver in DRIVERS:
            if any(n == driver or n.startswith(f"{driver}.") for n in imported_names(tree)):
                offenders.append(f"{path.relative_to(ROOT.parent)} imports {driver}")
    assert offenders == [], "SQL belongs in daemon/store/ (one module per concern)"


def test_the_modules_both_backends_share_hold_no_sql() -> None:
    # The rules, values, the chunk loop and the facades are backend-neutral;
    # SQL lives in the table modules of one concern each, per backend.
    for name in BACKEND_NEUTRAL:
        tree = ast.parse((STORE / name).read_text(encoding="utf-8"), filename=name)
        assert sql_calls(tree) == [], name
        for driver in DRIVERS:
            assert driver not in imported_names(tree), name


def test_every_sqlite_table_module_has_a_postgres_counterpart() -> None:
    # One module per concern beside the SQLite ones (their names say which).
    pairs = {
        "orders_rows.py": "pg_orders_rows.py",
        "orders_outbox.py": "pg_orders_outbox.py",
        "orders_transitions.py": "pg_orders_transitions.py",
        "orders_fills.py": "pg_orders_fills.py",
        "orders_queries.py": "pg_orders_queries.py",
        "trading_states.py": "pg_trading_states.py",
        "marketdata_trades.py": "pg_marketdata_trades.py",
        "marketdata_books.py": "pg_marketdata_books.py",
        "marketdata_gaps.py": "pg_marketdata_gaps.py",
        "deadletters_sqlite.py": "pg_deadletters.py",
        "migrations.py": "pg_migrations.py",
    }
    for sqlite_module, pg_module in pairs.items():
        assert (STORE / sqlite_module).is_file() and (STORE / pg_module).is_file()


def test_no_shim_left_at_the_old_order_store() -> None:
    assert importlib.util.find_spec("daemon.orders.store") is None


def test_only_the_owner_and_the_integrity_check_open_connections() -> None:
    offenders = [
        where(path, lines)
        for path, tree in modules(ROOT)
        if path not in CONNECTORS
        and not any(path.is_relative_to(e) for e in EXEMPT)
        and (lines := connects(tree))
    ]
    assert offenders == []


def test_store_modules_do_not_import_an_owner() -> None:
    offenders = [
        str(path.relative_to(ROOT.parent))
        for path, tree in modules(STORE)
        if path.name not in OWNER_SELECTORS
        and any(
            name == owner or name.startswith(f"{owner}.")
            for name in imported_names(tree)
            for owner in OWNERS
        )
    ]
    assert offenders == [], "table modules depend on daemon.store.base.StoreOwner"


@pytest.mark.parametrize(
    "function",
    [
        MarketDataStore.__init__,
        SqliteDeadLetterStore.__init__,
        OrderStore.__init__,
        prune_market_data,
        run_retention,
    ],
    ids=lambda f: f.__qualname__,
)
def test_table_modules_take_the_owner_interface(function: object) -> None:
    annotation = inspect.signature(function).parameters["store"].annotation  # type: ignore[arg-type]
    # Any owner: the facade runs the owner's dialect (``store.sql``), whatever its connection.
    assert annotation == "StoreOwner[Any]"
