"""Logging set-up: stderr only, journald-aware, secrets masked.

Under systemd, stderr goes to the journal, which stamps time and PID itself; we
prefix each line with the ``<N>`` syslog priority (sd-daemon(3)) so
``journalctl -p warning`` works. On a terminal we print timestamps. ``json``
gives one object per line for log shippers. Every handler carries the
:class:`~daemon.secrets.RedactingFilter`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, TextIO

from daemon.config import LoggingConfig
from daemon.secrets import RedactingFilter

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
