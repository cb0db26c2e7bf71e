"""Progress of a bench run on a terminal: one line on stderr, nothing when stderr is piped.

``tradingd bench orders`` and ``tradingd bench ingest`` take minutes; an
operator at a terminal sees which phase runs and how far it is
(:meth:`Progress.phase`, :meth:`Progress.update`), while a run piped into a
file or a CI log stays quiet (the report on stdout is all it prints).
"""

from __future__ import annotations

import sys
from typing import Final, TextIO

__all__ = ["PROGRESS", "Progress"]

#: The bar's width in characters.
BAR: Final = 24


class Progress:
    """One progress line on ``stream`` (stderr), redrawn in place; off unless it is a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._label = ""

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    @property
    def on(self) -> bool:
        """Whether anything is drawn (the stream is a terminal)."""
        try:
            return self.stream.isatty()
        except (AttributeError, ValueError):  # closed or not a file
            return False

    def phase(self, label: str) -> None:
        """A new phase starts: its name, until :meth:`update` draws a bar for it."""
        self._label = label
        self._draw(f"{label} …")

    def update(self, done: int, total: int) -> None:
        """``done`` of ``total`` steps of the current phase."""
        if total <= 0:
            return
        share = min(max(done / total, 0.0), 1.0)
        filled = int(share * BAR)
        self._draw(f"{self._label} [{'#' * filled}{'.' * (BAR - filled)}] {done}/{total}")

    def finish(self) -> None:
        """The run is over: leave the line."""
        if self.on and self._label:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
        self._label = ""

    def _draw(self, text: str) -> None:
        if self.on:
            self.stream.write(f"\r\x1b[2K{text}")
            self.stream.flush()


#: The bench's progress line (stderr).
PROGRESS: Final = Progress()
