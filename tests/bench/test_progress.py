"""The benches' progress line: drawn on a terminal, silent when piped."""

from __future__ import annotations

import io

from daemon.bench.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_phase_and_a_bar() -> None:
    out = _Terminal()
    progress = Progress(out)
    progress.phase("latency")
    progress.update(25, 100)
    progress.update(100, 100)
    progress.finish()
    text = out.getvalue()
    assert "latency …" in text
    assert "latency [######..................] 25/100" in text
    assert "latency [########################] 100/100" in text
    assert text.endswith("\r\x1b[2K")


def test_a_pipe_gets_nothing() -> None:
    out = io.StringIO()
    progress = Progress(out)
    progress.phase("latency")
    progress.update(1, 2)
    progress.finish()
    assert out.getvalue() == ""
    progress.update(1, 0)  # no total: nothing to draw, no error
