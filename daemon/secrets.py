"""Secret references and redacted secret values.

Configuration never holds a secret inline. It holds a *reference*::

    token = { credential = "admin-token" }   # $CREDENTIALS_DIRECTORY/admin-token
    token = { file = "/etc/tradingd/token" }  # a file readable by the daemon
    token = { env = "TRADINGD_ADMIN_TOKEN" }  # an environment variable

:func:`resolve` turns a reference into a :class:`Secret`, whose ``repr`` and
``str`` are redacted, and registers the value with :data:`REDACTOR` so that a
value that leaks into a log message anyway is masked there. Errors name the
reference (which is not secret), never the value.

URLs can carry credentials too (``user:pass@``, ``?apiKey=``, ``?signature=``):
:func:`redact_url` masks them, :func:`redact_document` does so in every
string of a document that is shown (status), and :class:`RedactingFilter`
in every log line.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from daemon.decode import NotRegularFileError, read_regular_file
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
            raw = read_regular_file(path, max_bytes=_MAX_SECRET_BYTES)
        except NotRegularFileError:
            raise SecretError(f"{ref.describe()}: {path} is not a regular file") from None
        except FileNotFoundError:
            raise SecretError(f"{ref.describe()}: {path} does not exist") from None
        except PermissionError:
            raise SecretError(f"{ref.describe()}: {path} is not readable") from None
        except OSError as exc:
            raise SecretError(f"{ref.describe()}: cannot read {path}: {exc.strerror}") from None
        except ValueError:  # a NUL in the path
            raise SecretError(f"{ref.describe()}: the path is not valid") from None
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


#: Query parameters whose values are credentials (compared case-insensitively,
#: ``-`` and ``_`` ignored): API keys, signatures, tokens, passwords.
SECRET_QUERY_NAMES = frozenset(
    {
        "apikey",
        "key",
        "secret",
        "apisecret",
        "signature",
        "sig",
        "token",
        "accesstoken",
        "authtoken",
        "auth",
        "password",
        "passwd",
        "pwd",
        "listenkey",
        "credential",
        "credentials",
        "session",
        "sessionid",
    }
)
#: A URL inside free text: a scheme, ``://``, then anything up to white space or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>`]+")


def _secret_name(name: str) -> bool:
    return name.replace("-", "").replace("_", "").lower() in SECRET_QUERY_NAMES


def redact_url(url: str) -> str:
    """``url`` with its credentials masked: ``user:pass@`` and secret query values.

    ``wss://u:p@host/ws?apiKey=K&symbol=X`` → ``wss://***@host/ws?apiKey=***&symbol=X``.
    The rest of the URL is kept byte for byte; a string that does not parse
    as a URL is returned unchanged.
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        # Not a URL urllib accepts (e.g. a bad IPv6 literal): mask any userinfo anyway.
        return re.sub(r"(://)[^/@]*@", r"\1***@", url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{_REDACTED}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        fields = []
        for field in query.split("&"):
            name, eq, _ = field.partition("=")
            secret = eq and _secret_name(urllib.parse.unquote_plus(name))
            fields.append(f"{name}={_REDACTED}" if secret else field)
        query = "&".join(fields)
    fragment = parts.fragment
    if netloc == parts.netloc and query == parts.query:
        return url
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def redact_urls_in_text(text: str) -> str:
    """Every URL in ``text`` passed through :func:`redact_url`."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def redact_document(obj: Any) -> Any:
    """A JSON-like document (dicts, lists, strings) with credentials masked in every URL.

    Used for everything the daemon shows (``/status``, ``tradingd status``).
    Returns new containers; strings without ``://`` are returned as they are.
    Iterative, so any depth is fine.
    """
    root: list[Any] = [obj]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        container, key = stack.pop()
        value = container[key]
        if isinstance(value, str):
            container[key] = redact_urls_in_text(value)
        elif isinstance(value, Mapping):
            copy = dict(value)
            container[key] = copy
            stack.extend((copy, k) for k in copy)
        elif isinstance(value, list | tuple):
            items = list(value)
            container[key] = items
            stack.extend((items, i) for i in range(len(items)))
    return root[0]


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
        redacted = redact_urls_in_text(REDACTOR.redact(message))
        if redacted != message:
            record.msg = redacted
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Render the traceback now so the secret cannot leak through it.
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact_urls_in_text(REDACTOR.redact(formatted))
            record.exc_info = None
            record.msg = f"{record.msg}\n{record.exc_text}"
            record.exc_text = None
        return True
