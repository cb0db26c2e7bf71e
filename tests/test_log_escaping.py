"""Log injection (issue 13, finding 8): outside text cannot forge a log entry.

A halt reason, an account name, a venue's error message reach the log as
values. Through the handler :func:`daemon.logs.setup_logging` installs, in
each of the three formats, a value with a newline or an escape sequence
stays on its record's one line, escaped; tracebacks keep their lines (the
exception message inside them is escaped too), and secrets are still masked.
The process test halts a real ``tradingd run`` with a forged reason and
reads its stderr.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest
import trio
from hypothesis import given

from daemon import logs
from daemon.config import LoggingConfig
from daemon.risk.state import TradingState, TradingStates
from daemon.secrets import SecretRef, resolve
from tests.helpers.fuzzing import fuzz_settings, hostile_text
from tests.helpers.orders_process import orders_config
from tests.helpers.process import open_harness
from tests.helpers.sim import sim_process

FORGED = "maintenance\n<0>fake entry\r\n2026-01-01 00:00:00 ERROR tradingd.app: forged\x1b[2J"
ESCAPED = "maintenance\\n<0>fake entry\\r\\n2026-01-01 00:00:00 ERROR tradingd.app: forged\\x1b[2J"
#: Raw characters that must never reach a log line from a value.
RAW_CONTROLS = ("\x1b", "\r", "\x85", "\u2028", "\u2029", "\u202e", "\x00")


@pytest.fixture
def restore_logger() -> Iterator[None]:
    """``setup_logging`` reconfigures the ``tradingd`` logger: put it back afterwards."""
    logger = logging.getLogger(logs.ROOT_LOGGER)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def install(fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TextIO:
    """The real handler set-up; ``journal`` is ``auto`` with stderr being the journal stream."""
    if fmt == "journal":
        stream: TextIO = open(tmp_path / "journal.log", "w+", encoding="utf-8")  # noqa: SIM115
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        logs.setup_logging(LoggingConfig(level="info", format="auto"), stream)
        assert isinstance(
            logging.getLogger(logs.ROOT_LOGGER).handlers[0].formatter, logs.JournalFormatter
        )
    else:
        stream = io.StringIO()
        logs.setup_logging(LoggingConfig(level="info", format=fmt), stream)  # type: ignore[arg-type]
    return stream


def output(stream: TextIO) -> str:
    stream.flush()
    stream.seek(0)
    return stream.read()


FORMATS = ["text", "json", "journal"]


@pytest.mark.usefixtures("restore_logger")
@pytest.mark.parametrize("fmt", FORMATS)
def test_halt_reason_stays_on_one_line(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = install(fmt, tmp_path, monkeypatch)
    # The real call site: a trading switch logs the operator's reason.
    TradingStates().set_state(TradingState.HALTED, None, reason=FORGED)
    out = output(stream)
    lines = out.splitlines()
    assert len(lines) == 1, out
    for raw in RAW_CONTROLS:
        assert raw not in out
    if fmt == "json":
        record = json.loads(lines[0])
        assert record["msg"] == f"trading state of all accounts: ACTIVE -> HALTED ({ESCAPED})"
        assert record["level"] == "warning"
    else:
        assert lines[0].endswith(f"trading state of all accounts: ACTIVE -> HALTED ({ESCAPED})")
        if fmt == "journal":
            assert lines[0].startswith("<4>tradingd.risk.state: ")


@pytest.mark.usefixtures("restore_logger")
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_control_character_is_escaped(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = install(fmt, tmp_path, monkeypatch)
    log = logging.getLogger("tradingd.test")
    value = "".join(chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)])
    value += "\u2028\u2029\u202e\u2066\u200f"
    log.warning("account %r symbol %s", value, value)
    out = output(stream)
    assert len(out.splitlines()) == 1, out
    text = json.loads(out)["msg"] if fmt == "json" else out
    assert "\\x00\\x01" in text and "\\n\\x0b\\x0c\\r" in text and "\\x1b" in text
    assert "\\x7f\\x80" in text and "\\x85" in text and "\\x9f" in text
    assert "\\u2028\\u2029\\u202e\\u2066\\u200f" in text
    # The text itself is never changed otherwise.
    log.warning("plain ü € 漢字 \\ back\\slash")
    last = output(stream).splitlines()[-1]
    text = json.loads(last)["msg"] if fmt == "json" else last
    assert text.endswith("plain ü € 漢字 \\ back\\slash")


@pytest.mark.usefixtures("restore_logger")
@pytest.mark.parametrize("fmt", FORMATS)
def test_tracebacks_keep_their_lines_but_not_forged_ones(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = install(fmt, tmp_path, monkeypatch)
    log = logging.getLogger("tradingd.test")
    try:
        try:
            raise KeyError("inner\n<0>forged inner")
        except KeyError as exc:
            raise ValueError("venue said: bad\n<0>forged entry\x1b[2J") from exc
    except ValueError:
        log.exception("request for %s failed", "BTC\nUSDT")
    out = output(stream)
    if fmt == "json":
        assert len(out.splitlines()) == 1, out
        text = json.loads(out)["msg"]
    else:
        text = out
    lines = text.splitlines()
    if fmt == "journal":
        assert all(line.startswith("<3>") for line in lines), lines
        lines = [line[3:] for line in lines]
    assert lines[0].endswith("request for BTC\\nUSDT failed")
    assert lines[1] == "Traceback (most recent call last):"
    assert any(line.startswith('  File "') for line in lines)
    assert "The above exception was the direct cause of the following exception:" in lines
    assert "KeyError: 'inner\\n<0>forged inner'" in lines
    assert lines[-1] == "ValueError: venue said: bad\\n<0>forged entry\\x1b[2J"
    assert not [line for line in lines if line.startswith(("<0>", "forged"))], lines
    assert "\x1b" not in out


@pytest.mark.usefixtures("restore_logger")
@pytest.mark.parametrize("fmt", FORMATS)
def test_secrets_are_still_masked(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = resolve(SecretRef("env", "K"), {"K": "api-key-0f9e8d7c"})
    stream = install(fmt, tmp_path, monkeypatch)
    log = logging.getLogger("tradingd.test")
    log.warning("calling with key=%s\nand again %s", secret.reveal(), secret.reveal())
    try:
        raise RuntimeError(f"server said bad key {secret.reveal()}\n")
    except RuntimeError:
        log.exception("failed")
    out = output(stream)
    assert "api-key-0f9e8d7c" not in out
    if fmt == "json":
        out = "\n".join(json.loads(line)["msg"] for line in out.splitlines())
    assert "calling with key=***\\nand again ***" in out
    assert "RuntimeError: server said bad key ***\\n" in out


@pytest.mark.usefixtures("restore_logger")
def test_arguments_that_do_not_fit_do_not_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = install("text", tmp_path, monkeypatch)
    logging.getLogger("tradingd.test").info("count %d", "not\na number")
    out = output(stream)
    assert len(out.splitlines()) == 1, out
    assert "count %d (unformattable log arguments: ('not\\na number',))" in out


@pytest.mark.usefixtures("restore_logger")
@fuzz_settings(ci_examples=100)
@given(value=hostile_text)
def test_fuzz_any_value_is_one_line(value: str) -> None:
    stream = io.StringIO()
    logs.setup_logging(LoggingConfig(level="info", format="text"), stream)
    logging.getLogger("tradingd.test").warning("value %s and %r", value, value)
    out = stream.getvalue()
    assert out.count("\n") == 1 and out.endswith("\n"), out
    assert len(out.splitlines()) == 1, out
    for raw in RAW_CONTROLS:
        assert raw not in out


# --------------------------------------------------------------------------- the real daemon


@pytest.mark.slow
async def test_real_daemon_halt_reason_cannot_forge_a_log_line(
    tmp_path: Path, sockdir: Path
) -> None:
    with trio.fail_after(90):
        async with (
            open_harness(tmp_path, sockdir) as h,
            sim_process(tmp_path, "--symbols", "BTCUSDT") as sim,
        ):
            h.config_path.write_text(
                orders_config(
                    h,
                    sim=sim,
                    orders={"startup_reconcile_timeout_s": 10},
                    recv_window_ms=5000,
                    request_timeout_s=5.0,
                )
            )
            d = await h.start_ready()
            reason = "x\n<0>FAKE entry\n2026-01-01 00:00:00 CRITICAL tradingd: forged\x1b[2J"
            cli = await h.cli("halt", "--reason", reason, "--socket", str(h.control_socket))
            assert cli.returncode == 0, cli
            match = await d.wait_log(r"trading state of all accounts: ACTIVE -> HALTED")
            log = d.log()
            line = log[log.rfind("\n", 0, match.start()) + 1 :].split("\n", 1)[0]
            assert line.endswith(
                "(x\\n<0>FAKE entry\\n2026-01-01 00:00:00 CRITICAL tradingd: forged\\x1b[2J)"
            ), line
            forged = [
                entry
                for entry in log.splitlines()
                if entry.startswith(("<0>", "2026-01-01")) or "\x1b" in entry
            ]
            assert not forged, forged
