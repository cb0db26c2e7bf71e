"""Deterministic client order ids (docs/ARCHITECTURE.md §4 Orders).

The client order id is the only handle that survives every failure: it is
derived from the intent's idempotency key, persisted with the intent before
any network I/O, sent as ``newClientOrderId``, and used to query the venue
when an outcome is ambiguous. Deriving it (instead of drawing a random one)
means the same message submitted twice — by a retrying client, or by a process
that restarted before answering — maps to the same id and the same intent row.

Scheme (version 1)::

    payload = b"tradingd.client_order_id.v1\\0"
              + for each field in (message_id, account, symbol):
                    len(utf8(field)) as 4-byte big-endian  +  utf8(field)
    digest  = SHA-256(payload)
    id      = prefix + lowercase(base32(digest)) without padding, cut to 36 - len(prefix)

* **Unambiguous**: every field is length-prefixed, so ``("ab", "c", s)`` and
  ``("a", "bc", s)`` hash different bytes; no separator character can be
  forged inside a field. The domain tag keeps these hashes apart from any other
  SHA-256 use of the same strings.
* **Stable**: UTF-8, big-endian lengths, SHA-256 and RFC 4648 base32 are
  fixed by standards; nothing depends on ``hash()``, the process, the platform
  or the Python version. Fields are *not* Unicode-normalised: two spellings
  are two keys (entry validation keeps message ids to printable ASCII anyway).
* **In the venue's format**: lowercase base32 (``a-z``, ``2-7``) is inside
  Binance's ``[A-Za-z0-9_-]``, and case-insensitive venues cannot fold two ids
  together. The default prefix ``td1-`` marks our ids (and the scheme
  version), so reconciliation can tell them from orders placed by hand.

Collision analysis: with the default prefix the id keeps 32 base32 characters
= 160 bits of the digest. By the birthday bound, ``n`` distinct keys collide
with probability about ``n² / 2¹⁶¹``: for a trillion (10¹²) intents that is
~3·10⁻²⁵. A longer custom prefix (e.g. a broker tag) keeps at least
:data:`MIN_DIGEST_CHARS` characters (130 bits: ~4·10⁻¹⁶ for 10¹²), so a
collision stays far less likely than a disk corrupting the store.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Final

from daemon.model.orders import (
    CLIENT_ORDER_ID_MAX_LEN,
    CLIENT_ORDER_ID_PATTERN,
    is_valid_client_order_id,
)

__all__ = [
    "CLIENT_ORDER_ID_MAX_LEN",
    "DEFAULT_PREFIX",
    "DIGEST_BITS_PER_CHAR",
    "MIN_DIGEST_CHARS",
    "SCHEME_TAG",
    "derive_client_order_id",
    "digest_bits",
    "is_derived_client_order_id",
    "validate_client_order_id",
]

#: Marks ids derived by this module (scheme version 1).
DEFAULT_PREFIX: Final = "td1-"

#: Domain separation tag hashed before the fields; changes with the scheme.
SCHEME_TAG: Final = b"tradingd.client_order_id.v1\x00"

#: Each base32 character carries 5 bits of the digest.
DIGEST_BITS_PER_CHAR: Final = 5

#: Fewest digest characters an id may keep (130 bits), which caps the prefix length.
MIN_DIGEST_CHARS: Final = 26

#: Characters in the unpadded base32 encoding of a SHA-256 digest (256 bits).
_B32_CHARS: Final = 52

_PREFIX_PATTERN: Final = re.compile(r"\A[A-Za-z0-9_-]*\Z")


def _check_prefix(prefix: str) -> int:
    """Validate ``prefix``; return how many digest characters follow it."""
    if not isinstance(prefix, str) or _PREFIX_PATTERN.match(prefix) is None:
        raise ValueError(f"prefix must be characters of [A-Za-z0-9_-], got {prefix!r}")
    digest_chars = min(_B32_CHARS, CLIENT_ORDER_ID_MAX_LEN - len(prefix))
    if digest_chars < MIN_DIGEST_CHARS:
        raise ValueError(
            f"prefix {prefix!r} is too long: at most "
            f"{CLIENT_ORDER_ID_MAX_LEN - MIN_DIGEST_CHARS} characters keep "
            f"{MIN_DIGEST_CHARS * DIGEST_BITS_PER_CHAR} bits of digest"
        )
    return digest_chars


def digest_bits(prefix: str = DEFAULT_PREFIX) -> int:
    """Bits of the SHA-256 digest an id with ``prefix`` keeps (160 for the default).

    Raises:
        ValueError: the prefix is not allowed (see :func:`derive_client_order_id`).
    """
    return _check_prefix(prefix) * DIGEST_BITS_PER_CHAR


def _encode_field(name: str, value: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{name} is not encodable as UTF-8 (lone surrogate?)") from exc
    return len(data).to_bytes(4, "big") + data


def derive_client_order_id(
    message_id: str, account: str, symbol: str, *, prefix: str = DEFAULT_PREFIX
) -> str:
    """The client order id of the intent keyed by ``(message_id, account, symbol)``.

    Pure and deterministic: the same arguments give the same id in every
    process, on every platform and Python version (see the module docstring
    for the scheme and its collision analysis).

    Args:
        message_id: The caller's idempotency key.
        account: The account the order is for.
        symbol: The venue symbol.
        prefix: Prepended verbatim; ``[A-Za-z0-9_-]``, at most
            ``36 - MIN_DIGEST_CHARS`` (10) characters. Changing it changes every id.

    Returns:
        A string matching ``^[A-Za-z0-9_-]{1,36}$``.

    Raises:
        TypeError: a field is not a ``str``.
        ValueError: a field is empty or not UTF-8 encodable, or the prefix is invalid.
    """
    digest_chars = _check_prefix(prefix)
    payload = b"".join(
        (
            SCHEME_TAG,
            _encode_field("message_id", message_id),
            _encode_field("account", account),
            _encode_field("symbol", symbol),
        )
    )
    # Base32 maps every 5 bytes to 8 characters, so the first ``digest_chars``
    # characters of the whole digest's encoding are those of its first
    # ceil(digest_chars / 8) * 5 bytes: encode only those (the same id, less work).
    used = hashlib.sha256(payload).digest()[: -(-digest_chars // 8) * 5]
    encoded = base64.b32encode(used).decode("ascii")
    return prefix + encoded.lower()[:digest_chars]


def validate_client_order_id(value: object) -> str:
    """Return ``value`` if it is a valid Binance client order id, else raise.

    For ids arriving from outside (``GET /orders/{client_order_id}``, venue
    reports of orders we did not place), where the format is all we can check.

    Raises:
        ValueError: ``value`` is not 1 to 36 characters of ``[A-Za-z0-9_-]``.
    """
    if not isinstance(value, str) or not is_valid_client_order_id(value):
        raise ValueError(
            f"client order id must match {CLIENT_ORDER_ID_PATTERN.pattern}, got {value!r}"
        )
    return value


def is_derived_client_order_id(value: str, *, prefix: str = DEFAULT_PREFIX) -> bool:
    """Whether ``value`` has the shape of an id this module derives with ``prefix``.

    A shape check only (the key cannot be recovered from a hash). The
    reconciler uses it to tell our orders from orders placed by other means
    when it reports venue orders unknown to the store.

    Raises:
        ValueError: the prefix is not allowed.
    """
    digest_chars = _check_prefix(prefix)
    if not isinstance(value, str) or not value.startswith(prefix):
        return False
    rest = value[len(prefix) :]
    return len(rest) == digest_chars and re.fullmatch(r"[a-z2-7]+", rest) is not None
