"""Secret references and redacted secret values.

Configuration never holds a secret inline. It holds a *reference*::

    token = { credential = "admin-token" }   # $CREDENTIALS_DIRECTORY/admin-token
    token = { file = "/etc/tradingd/token" }  # a file readable by the daemon
    token = { env = "TRADINGD_ADMIN_TOKEN" }  # an environment variable

:func:`resolve` turns a reference into a :class:`Secret`, whose ``repr`` and
``str`` are redacted, and registers the value with :data:`REDACTOR` so that a
value that leaks into a log message anyway is masked there. Errors name the
reference (which is not secret), never the value.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import attrs

from daemon.errors import SecretError

SecretKind = Literal["credential", "file", "env"]
SECRET_KINDS: tuple[SecretKind, ...] = ("credential", "file", "env")

#: A credential name as systemd accepts it for ``LoadCredential=``.
_MAX_SECRET_BYTES = 64 * 1024
_REDACTED = "***"


@attrs.frozen
class SecretRef:
    """Where a secret comes from. Safe to log: it contains no secret."""

    kind: SecretKind
    name: str

    def describe(self) -> str:
        """A short human description, e.g. ``credential 'admin-token'``."""
        return f"{self.kind} {self.name!r}"


@attrs.frozen(repr=False)
class Secret:
    """A resolved secret. Its value is only reachable through :meth:`reveal`."""

    ref: SecretRef
    _value: str = attrs.field(alias="value")

    def reveal(self) -> str:
        """The secret value. Call it only where the value is used, never to log."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.ref.describe()}, value={_REDACTED})"

    __str__ = __repr__


def credential_path(name: str, environ: Mapping[str, str] | None = None) -> Path:
    """The path of a systemd credential, or :class:`SecretError` when unavailable."""
    env = os.environ if environ is None else environ
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise SecretError(
            f"credential {name!r}: $CREDENTIALS_DIRECTORY is not set "
            "(use LoadCredential= in the unit, or a { file = ... } reference)"
        )
    if "/" in name or name in {"", ".", ".."}:
        raise SecretError(f"credential {name!r}: not a valid credential name")
    return Path(directory) / name


def resolve(ref: SecretRef, environ: Mapping[str, str] | None = None) -> Secret:
    """Resolve a reference into a :class:`Secret`.

    Raises:
        SecretError: the credential, file or variable is missing, unreadable,
            empty or too large. The message never contains the value.
    """
    env = os.environ if environ is None else environ
    if ref.kind == "env":
        value = env.get(ref.name)
        if value is None:
            raise SecretError(f"env {ref.name!r}: environment variable is not set")
    else:
        path = credential_path(ref.name, env) if ref.kind == "credential" else Path(ref.name)
        try:
            with path.open("rb") as fh:
                raw = fh.read(_MAX_SECRET_BYTES + 1)
        except FileNotFoundError:
            raise SecretError(f"{ref.describe()}: {path} does not exist") from None
        except PermissionError:
            raise SecretError(f"{ref.describe()}: {path} is not readable") from None
        except OSError as exc:
            raise SecretError(f"{ref.describe()}: cannot read {path}: {exc.strerror}") from None
        if len(raw) > _MAX_SECRET_BYTES:
            raise SecretError(f"{ref.describe()}: larger than {_MAX_SECRET_BYTES} bytes")
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SecretError(f"{ref.describe()}: not valid UTF-8") from None
        # A trailing newline from `echo secret > file` is never part of the secret.
        value = value.rstrip("\r\n")
    if not value:
        raise SecretError(f"{ref.describe()}: is empty")
    REDACTOR.register(value)
    return Secret(ref=ref, value=value)


class Redactor:
    """Masks registered secret values in text (defence in depth for logs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()

    def register(self, value: str) -> None:
        """Remember a value to mask. Very short values are ignored (too many false hits)."""
        if len(value) < 4:
            return
        with self._lock:
            if value not in self._values:
                # Longest first, so a secret containing another is masked whole.
                self._values = tuple(sorted((*self._values, value), key=len, reverse=True))

    def redact(self, text: str) -> str:
        """``text`` with every registered secret replaced by ``***``."""
        for value in self._values:
            if value in text:
                text = text.replace(value, _REDACTED)
        return text


REDACTOR = Redactor()


class RedactingFilter(logging.Filter):
    """A logging filter that masks registered secrets in the formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = REDACTOR.redact(message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Render the traceback now so the secret cannot leak through it.
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text = REDACTOR.redact(formatted)
            record.exc_info = None
            record.msg = f"{record.msg}\n{record.exc_text}"
            record.exc_text = None
        return True
