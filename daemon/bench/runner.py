"""Running one bench from the command line: its state directory, log file and clean-up.

Both ``tradingd bench orders`` and ``tradingd bench ingest`` run their
measurement the same way (:func:`run_measurement`): a fresh state directory
(under ``--dir`` when given), the root logger into a file there for the
duration, the measurement in ``trio.run``, and afterwards the directory and
the PostgreSQL schemas removed — unless ``--keep`` or the run failed or was
interrupted, in which case both are kept and named on stderr.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from daemon.bench.common import BenchError
from daemon.bench.pg import PgServer, drop_schemas, kept_schemas
from daemon.errors import ConfigError

__all__ = ["run_measurement"]


def run_measurement(
    name: str,
    measure: Callable[[Path], Awaitable[dict[str, Any]]],
    *,
    directory: str | None,
    keep: bool,
    log_name: str,
    log_level: int,
    server: PgServer | None,
) -> tuple[int, dict[str, Any] | None]:
    """Run ``measure(workdir)``; ``(0, report)``, or ``(1 | 130, None)`` after saying why.

    Args:
        name: The bench (``"orders"``, ``"ingest"``): the directory's prefix and
            the messages' subject.
        directory: Where the temporary state directory goes (``--dir``).
        keep: Keep the directory and the schemas even after a success (``--keep``).
        log_name: The log file's name in the directory.
        log_level: The root logger's level meanwhile.
        server: The PostgreSQL server whose per-run schemas are dropped, if any.
    """
    prefix = "tradingd-bench-" if name == "orders" else f"tradingd-{name}-"
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=directory))
    root = logging.getLogger()
    handler = logging.FileHandler(workdir / log_name, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(log_level)
    try:
        report = trio.run(measure, workdir)
    except (BenchError, ConfigError, OSError) as exc:
        keep = True
        print(f"tradingd bench {name}: {exc}", file=sys.stderr)
        print(f"(state, logs kept in {workdir}{kept_schemas(server)})", file=sys.stderr)
        return 1, None
    except KeyboardInterrupt:
        keep = True
        print(f"interrupted (state kept in {workdir}{kept_schemas(server)})", file=sys.stderr)
        return 130, None
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
            drop_schemas(server)
    return 0, report
