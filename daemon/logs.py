r"""Logging set-up: stderr only, journald-aware, secrets masked.

Under systemd, stderr goes to the journal, which stamps time and PID itself; we
prefix each line with the ``<N>`` syslog priority (sd-daemon(3)) so
``journalctl -p warning`` works. On a terminal we print timestamps. ``json``
gives one object per line for log shippers. Every handler carries the
:class:`~daemon.secrets.RedactingFilter`.

Log values often come from outside (a halt reason, an account name, a venue's
error message, a client order id): a newline in one of them would forge a
log entry (``"x\n<0>FAKE"`` is a new emergency-level entry in the journal),
an escape sequence would rewrite the operator's terminal. So every record
passes through :class:`EscapingFilter` first, whatever its call site: control
characters (C0, DEL, C1, the Unicode line and paragraph separators and the
bidirectional overrides) in the formatted message become visible escapes
(``\n``, ``\x1b``, ``\u2028``), in all three formats. Only the traceback
the logging layer renders itself keeps its line breaks; the exception
messages inside it are escaped the same way.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import traceback
from collections.abc import Sequence
from types import TracebackType
from typing import Any, TextIO

from daemon.config import LoggingConfig
from daemon.secrets import REDACTOR, RedactingFilter

ROOT_LOGGER = "tradingd"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# sd-daemon(3) priorities
_SYSLOG_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


#: Characters that must never reach a log line raw: C0 controls, DEL, C1 controls,
#: the Unicode line/paragraph separators and the bidirectional formatting controls.
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_CONTROL_BUT_NEWLINE = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group(0)
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_control(text: str) -> str:
    r"""``text`` with every control character as a visible escape (``\n``, ``\x1b``, ``\u2028``).

    Backslashes are left alone: the point is that outside text cannot start
    a line or steer a terminal, not that the escaping can be reversed.
    """
    return _CONTROL.sub(_escape_char, text)


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def format_exception(exc_info: ExcInfo) -> str:
    """The traceback of ``exc_info`` as ``logging`` prints it, exception messages escaped.

    The frames come from our own code and keep their lines; the message and
    notes of every exception in the chain may carry outside text, so their
    control characters (newlines included) are escaped.
    """
    exc_type, exc, tb = exc_info
    top = traceback.TracebackException(exc_type, exc, tb, compact=True)
    seen: set[int] = set()
    todo = [top]
    while todo:
        part = todo.pop()
        if id(part) in seen:
            continue
        seen.add(id(part))
        text = getattr(part, "_str", None)
        if isinstance(text, str):
            part._str = escape_control(text)  # type: ignore[attr-defined]
        notes = getattr(part, "__notes__", None)
        if isinstance(notes, Sequence) and not isinstance(notes, str):
            part.__notes__ = [escape_control(str(note)) for note in notes]
        todo.extend(x for x in (part.__cause__, part.__context__) if x is not None)
        todo.extend(getattr(part, "exceptions", None) or ())
    rendered = "".join(top.format()).rstrip("\n")
    # Whatever the interpreter's rendering holds, only its own line breaks survive.
    return _CONTROL_BUT_NEWLINE.sub(_escape_char, rendered)


class EscapingFilter(logging.Filter):
    """Escape control characters in a record's message; render its traceback safely.

    Installed before :class:`~daemon.secrets.RedactingFilter`: secrets are
    masked first (so escaping cannot hide one from the redactor), then the
    message is escaped, then the traceback (see :func:`format_exception`) is
    appended on its own lines, as the redacting filter would.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: log what there is
            message = f"{record.msg!s} (unformattable log arguments: {record.args!r})"
        text = escape_control(REDACTOR.redact(message))
        if record.exc_info and record.exc_info[1] is not None:
            exc_type, exc, tb = record.exc_info
            assert exc_type is not None
            try:
                rendered = format_exception((exc_type, exc, tb))
            except Exception:  # never lose the record over its traceback
                rendered = f"{exc_type.__name__} (its traceback could not be rendered)"
            text = f"{text}\n{REDACTOR.redact(rendered)}"
            record.exc_info = None
            record.exc_text = None
        record.msg = text
        record.args = None
        return True


def under_journald(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """True when ``stream`` is the journal stream systemd connected (JOURNAL_STREAM)."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class JournalFormatter(logging.Formatter):
    """``<6>tradingd.app: message`` — journald adds time and PID."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _SYSLOG_PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        # Continuation lines keep the priority so a traceback stays one entry's level.
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False)


def setup_logging(cfg: LoggingConfig, stream: TextIO | None = None) -> logging.Handler:
    """Install the tradingd handler on the ``tradingd`` logger; returns the handler."""
    out = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(out)
    # Order matters: escape (and mask) the message before the traceback is added.
    handler.addFilter(EscapingFilter())
    handler.addFilter(RedactingFilter())
    handler.setFormatter(_formatter(cfg, out))
    logger = logging.getLogger(ROOT_LOGGER)
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(_LEVELS[cfg.level])
    logger.propagate = False
    return handler


def apply(cfg: LoggingConfig, stream: TextIO | None = None) -> None:
    """Apply a reloaded logging config (level and format) to the installed handler."""
    logger = logging.getLogger(ROOT_LOGGER)
    logger.setLevel(_LEVELS[cfg.level])
    for handler in logger.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setFormatter(_formatter(cfg, stream or handler.stream))


def _formatter(cfg: LoggingConfig, stream: TextIO) -> logging.Formatter:
    if cfg.format == "json":
        return JsonFormatter()
    if cfg.format == "auto" and under_journald(stream):
        return JournalFormatter("%(name)s: %(message)s")
    return logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
