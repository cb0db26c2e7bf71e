"""Secret references: resolution, redaction, and never leaking values."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest

from daemon.errors import SecretError
from daemon.secrets import REDACTOR, RedactingFilter, SecretRef, resolve


def test_resolve_credential_file_and_env(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("credential-value-1\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path), "VAR": "env-value-2"}
    assert resolve(SecretRef("credential", "tok"), env).reveal() == "credential-value-1"
    assert resolve(SecretRef("file", str(tmp_path / "tok")), env).reveal() == "credential-value-1"
    assert resolve(SecretRef("env", "VAR"), env).reveal() == "env-value-2"


def test_repr_and_str_are_redacted(tmp_path: Path) -> None:
    secret = resolve(SecretRef("env", "V"), {"V": "super-secret-xyz"})
    assert "super-secret-xyz" not in repr(secret)
    assert "super-secret-xyz" not in str(secret)
    assert "super-secret-xyz" not in f"{secret}"
    assert "env 'V'" in repr(secret)


@pytest.mark.parametrize(
    ("ref", "env", "message"),
    [
        (SecretRef("env", "NOPE"), {}, "env 'NOPE': environment variable is not set"),
        (SecretRef("env", "E"), {"E": ""}, "env 'E': is empty"),
        (SecretRef("credential", "x"), {}, "$CREDENTIALS_DIRECTORY is not set"),
        (SecretRef("credential", "../x"), {"CREDENTIALS_DIRECTORY": "/"}, "not a valid"),
        (SecretRef("file", "/nonexistent/secret"), {}, "does not exist"),
    ],
)
def test_errors_name_the_reference(ref: SecretRef, env: dict[str, str], message: str) -> None:
    with pytest.raises(SecretError, match=message.replace("$", r"\$").replace(".", r"\.")):
        resolve(ref, env)


def test_error_never_contains_the_value(tmp_path: Path) -> None:
    path = tmp_path / "bin"
    path.write_bytes(b"\xff\xfe not utf8 leaked-part")
    with pytest.raises(SecretError) as info:
        resolve(SecretRef("file", str(path)), {})
    assert "leaked-part" not in str(info.value)


def test_redacting_filter_masks_resolved_values_in_logs_and_tracebacks() -> None:
    secret = resolve(SecretRef("env", "K"), {"K": "api-key-abcdef"})
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("tradingd.test.redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("calling with key=%s", secret.reveal())
        try:
            raise RuntimeError(f"server said bad key {secret.reveal()}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "api-key-abcdef" not in out
    assert "calling with key=***" in out
    assert "server said bad key ***" in out


def test_redactor_masks_longest_first() -> None:
    REDACTOR.register("abcd")
    REDACTOR.register("abcdefgh")
    assert REDACTOR.redact("x abcdefgh y abcd") == "x *** y ***"


def test_a_secret_file_that_is_not_a_regular_file_is_refused_without_blocking(
    tmp_path: Path,
) -> None:
    """A FIFO in place of a secret file would block a reload forever; a directory or a
    device is no secret either. Each is a SecretError at once."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(SecretError, match="not a regular file"):
        resolve(SecretRef("file", str(fifo)))
    with pytest.raises(SecretError, match="not a regular file"):
        resolve(SecretRef("file", "/dev/null"))
    with pytest.raises(SecretError, match=str(tmp_path)):
        resolve(SecretRef("file", str(tmp_path)))  # a directory: EISDIR or not regular
    with pytest.raises(SecretError, match="not valid"):
        resolve(SecretRef("file", "/tmp/a\x00b"))
