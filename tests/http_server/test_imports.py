"""The HTTP server's place in the layers: below both of its users, knowing neither.

:mod:`daemon.http` serves the admin API and the simulator's REST API. It
imports nothing of tradingd but the shared decoder, and neither user reaches
into the other: the simulator does not import :mod:`daemon.admin` (it did,
when the server lived at ``daemon/admin/http.py``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import daemon

PACKAGE = Path(daemon.__file__).parent
#: What :mod:`daemon.http` may import of tradingd besides itself.
HTTP_MAY_IMPORT = ("daemon.decode",)


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports (``import x``, ``from x import y``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_http_package_imports_only_itself_and_the_decoder() -> None:
    files = sorted((PACKAGE / "http").glob("*.py"))
    assert files
    for path in files:
        ours = {n for n in imported_modules(path) if within(n, "daemon")}
        stray = {
            n
            for n in ours
            if not within(n, "daemon.http") and not any(within(n, m) for m in HTTP_MAY_IMPORT)
        }
        assert not stray, f"{path.name} imports {sorted(stray)}"


def test_the_simulator_does_not_import_the_admin_package() -> None:
    files = sorted((PACKAGE / "venues").rglob("*.py"))
    assert files
    for path in files:
        sideways = sorted(n for n in imported_modules(path) if within(n, "daemon.admin"))
        assert not sideways, f"{path.relative_to(PACKAGE)} imports {sideways}"


def test_importing_the_server_loads_neither_user() -> None:
    script = (
        "import sys, daemon.http; "
        "print('\\n'.join(m for m in sys.modules if m.startswith('daemon.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert "daemon.http.server" in out
    assert not [m for m in out if within(m, "daemon.admin") or within(m, "daemon.venues")], out
