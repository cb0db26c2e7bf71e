"""The size rule of the code base: no module over ~800 lines, no class over ~300.

A module or class that grows past these is a sign that it holds more than one
concern (docs/ARCHITECTURE.md §2): split it by concern, as ``config/``,
``supervise/``, ``store/orders*.py`` and the others were split. Classes that
are still larger are listed in :data:`LARGE_CLASSES` with the size they may
not exceed, so they can only shrink.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "daemon"
MAX_MODULE_LINES = 800
MAX_CLASS_LINES = 300
#: Classes not yet at the class limit, with the ceiling they may not pass.
LARGE_CLASSES: dict[str, int] = {}


def _modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def _name(path: Path) -> str:
    return path.relative_to(ROOT.parent).as_posix()


def test_no_module_is_over_the_limit() -> None:
    big = {
        _name(path): lines
        for path in _modules()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert big == {}, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {big}"


def _class_sizes() -> dict[str, int]:
    sizes: dict[str, int] = {}
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                sizes[f"{_name(path)}:{node.name}"] = node.end_lineno - node.lineno + 1
    return sizes


def test_no_class_is_over_the_limit_or_its_ceiling() -> None:
    over = {
        name: size
        for name, size in _class_sizes().items()
        if size > LARGE_CLASSES.get(name, MAX_CLASS_LINES)
    }
    assert over == {}, (
        f"classes over {MAX_CLASS_LINES} lines, or grown past their ceiling in "
        f"LARGE_CLASSES (extract a cohesive collaborator): {over}"
    )


def test_the_list_of_large_classes_is_current() -> None:
    """A class that shrank under the limit, or was renamed, leaves the list."""
    sizes = _class_sizes()
    stale = {
        name: sizes.get(name) for name in LARGE_CLASSES if sizes.get(name, 0) <= MAX_CLASS_LINES
    }
    assert stale == {}, f"remove from LARGE_CLASSES (now within the limit or gone): {stale}"


def test_the_measure_sees_a_large_module_and_class(tmp_path: Path) -> None:
    """The walk really measures: a synthetic big class is found."""
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_CLASS_LINES + 5))
    tree = ast.parse(f"class Big:\n{body}\n")
    (node,) = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    assert node.end_lineno is not None
    assert node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES
