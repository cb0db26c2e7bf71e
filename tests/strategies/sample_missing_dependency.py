"""Import target for the loader tests: a module whose own import of a dependency fails."""

from __future__ import annotations

import tradingd_no_such_dependency  # type: ignore[import-not-found]  # noqa: F401


class WouldBeStrategy:
    """Never reached: the import above fails."""
