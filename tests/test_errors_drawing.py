"""The exception tree drawn in :mod:`daemon.errors`' docstring matches the classes.

Every module under ``daemon/`` is imported (``__main__``, which runs the
command line when imported, is parsed instead and must define no class), then
every subclass of :class:`~daemon.errors.TradingdError` is found by walking
``__subclasses__``. The drawing must name each public one exactly once, as a
node of the tree, under its first base class, with any further base in
brackets, and must name nothing that does not exist. New error classes
therefore fail this test until they are drawn; the message says where.

The tree is drawn once: no other module's docstring draws a node of it.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pkgutil
import re
from collections import Counter
from pathlib import Path
from types import ModuleType

import attrs
import pytest

import daemon
from daemon import errors
from daemon.errors import TradingdError

#: A node of a drawn tree: "├── Name" or "└── Name", after the branches of its ancestors.
NODE_RE = re.compile(r"^(?P<indent>(?:[│ ]   )*)[├└]── (?P<name>[A-Za-z_]\w*)(?P<rest>.*)$")
#: The policy class(es) named after a node: "[TransientError]".
BRACKET_RE = re.compile(r"^\s+\[(?P<names>[\w, ]+)\]")


@attrs.frozen
class Node:
    name: str
    parent: str
    brackets: tuple[str, ...]


def import_all() -> list[ModuleType]:
    """Import every module of the ``daemon`` package; ``__main__`` files are parsed instead."""
    modules: list[ModuleType] = [daemon]
    for info in pkgutil.walk_packages(daemon.__path__, prefix="daemon."):
        if info.name.rpartition(".")[2] == "__main__":
            spec = importlib.util.find_spec(info.name)
            assert spec is not None and spec.origin is not None, info.name
            tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
            classes = [n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
            assert classes == [], f"{info.name} defines classes, so it must be imported"
            continue
        modules.append(importlib.import_module(info.name))
    return modules


def subclasses(cls: type) -> set[type]:
    found: set[type] = set()
    for sub in cls.__subclasses__():
        found.add(sub)
        found |= subclasses(sub)
    return found


def drawn_nodes(doc: str) -> list[Node]:
    """The nodes of the tree drawn in ``doc``, each with its parent's name.

    The root is the name on the line before a tree's first node; a blank line
    ends a tree.
    """
    lines = inspect.cleandoc(doc).splitlines()
    nodes: list[Node] = []
    stack: list[str] = []  # the open ancestors: stack[d] is the node at depth d
    for i, line in enumerate(lines):
        if not line.strip():
            stack = []
            continue
        match = NODE_RE.match(line[4:] if line.startswith("    ") else line)
        if match is None:
            continue
        depth = len(match["indent"]) // 4 + 1
        if depth == 1 and not stack:
            above = lines[i - 1].split()
            stack = [above[0] if above else "?"]
        assert stack, f"node without a root: {line!r}"
        del stack[depth:]
        assert len(stack) == depth, f"node deeper than its parent's depth + 1: {line!r}"
        bracket = BRACKET_RE.match(match["rest"])
        brackets = () if bracket is None else tuple(n.strip() for n in bracket["names"].split(","))
        nodes.append(Node(match["name"], stack[-1], brackets))
        stack.append(match["name"])
    return nodes


@pytest.fixture(scope="module")
def modules() -> list[ModuleType]:
    return import_all()


@pytest.fixture(scope="module")
def public_errors(modules: list[ModuleType]) -> dict[str, type]:
    by_name: dict[str, list[type]] = {}
    for cls in subclasses(TradingdError):
        if not cls.__name__.startswith("_"):
            by_name.setdefault(cls.__name__, []).append(cls)
    same_name = {name: classes for name, classes in by_name.items() if len(classes) > 1}
    assert not same_name, f"one name, several classes (the drawing cannot tell): {same_name}"
    return {name: classes[0] for name, classes in by_name.items()}


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def test_the_parser_reads_nodes_parents_and_brackets() -> None:
    doc = """Title.

    ::

        Root
        ├── A                 text
        │   ├── B             [Other] text
        │   │                 continued
        │   └── C             [X, Y] text
        └── D
            └── E   text
    """
    assert drawn_nodes(doc) == [
        Node("A", "Root", ()),
        Node("B", "A", ("Other",)),
        Node("C", "A", ("X", "Y")),
        Node("D", "Root", ()),
        Node("E", "D", ()),
    ]


def test_every_error_class_is_drawn_exactly_once(public_errors: dict[str, type]) -> None:
    assert errors.__doc__ is not None
    nodes = drawn_nodes(errors.__doc__)
    drawn = Counter(node.name for node in nodes)
    twice = sorted(name for name, count in drawn.items() if count > 1)
    assert twice == [], f"drawn more than once in daemon/errors.py: {twice}"
    missing = sorted(
        f"{name} ({_where(cls)}, under {cls.__bases__[0].__name__})"
        for name, cls in public_errors.items()
        if name not in drawn
    )
    assert missing == [], "not drawn in daemon/errors.py's tree: " + "; ".join(missing)
    unknown = sorted(name for name in drawn if name not in public_errors)
    assert unknown == [], f"drawn but no such TradingdError subclass: {unknown}"
    assert {node.parent for node in nodes if node.parent not in drawn} == {"TradingdError"}


def test_every_error_class_is_drawn_under_its_bases(public_errors: dict[str, type]) -> None:
    assert errors.__doc__ is not None
    wrong = []
    for node in drawn_nodes(errors.__doc__):
        cls = public_errors.get(node.name)
        if cls is None:
            continue  # reported by the test above
        bases = tuple(base.__name__ for base in cls.__bases__)
        if (node.parent, *node.brackets) != bases:
            drawn = node.parent + "".join(f" [{b}]" for b in node.brackets)
            wrong.append(f"{node.name}: drawn under {drawn}, but its bases are {bases}")
    assert wrong == []


def test_no_other_module_draws_the_tree_again(
    modules: list[ModuleType], public_errors: dict[str, type]
) -> None:
    redrawn = []
    for module in modules:
        if module is errors or not module.__doc__:
            continue
        names = sorted({n.name for n in drawn_nodes(module.__doc__)} & set(public_errors))
        if names:
            redrawn.append(f"{module.__name__}: {', '.join(names)}")
    assert redrawn == [], "drawn again outside daemon/errors.py (point there instead): " + (
        "; ".join(redrawn)
    )
