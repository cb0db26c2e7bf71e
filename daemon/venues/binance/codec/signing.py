"""Parameter encoding and request signing: the bytes a signed request is made of.

* **Encoding** — parameters are percent-encoded with RFC 3986 rules
  (everything but ``A-Za-z0-9-._~`` as UTF-8 ``%XX``) in the order given
  (:func:`encode_params`); decimals are written in plain notation
  (``0.00010000``, never ``1E-4``: :func:`format_decimal`).
* **Signing** — ``signature = hex(HMAC-SHA256(secret, totalParams))`` where
  ``totalParams`` is the encoded query string immediately followed by the
  encoded body (no separator), exactly as sent (:func:`signature_payload`,
  :func:`sign`). :func:`split_signature` takes a signature back out (the REST
  client masks it in error text); :func:`verify_signature` and
  :func:`parse_query` are the server half of the rules, used by the tests to
  check what the client sends.

Nothing here knows an endpoint: the REST requests (:mod:`.requests`) use it,
and so can a WebSocket API codec, whose signed requests carry the same
HMAC-SHA256 hex signature over their own parameter string.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from decimal import Decimal
from urllib.parse import quote, unquote

__all__ = [
    "encode_params",
    "format_decimal",
    "parse_query",
    "sign",
    "signature_payload",
    "split_signature",
    "verify_signature",
]

# --------------------------------------------------------------------------- encoding


def format_decimal(value: Decimal) -> str:
    """A decimal in plain notation as Binance expects it (``"0.00010000"``, ``"100"``).

    Raises:
        ValueError: NaN or infinity.
    """
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValueError(f"not a finite Decimal: {value!r}")
    text = format(value, "f")
    return "0" if text in {"-0", "-0.0"} else text


def _pct(text: str) -> str:
    return quote(text, safe="", encoding="utf-8", errors="strict")


def encode_params(params: Iterable[tuple[str, str]]) -> str:
    """``k=v&k2=v2`` with RFC 3986 percent-encoding of names and values, order kept.

    Spaces become ``%20`` (never ``+``); unreserved characters
    (``A-Za-z0-9-._~``) are left alone. This exact string is both what is sent
    and what is signed, so whatever the server sees verifies.
    """
    return "&".join(f"{_pct(name)}={_pct(value)}" for name, value in params)


def parse_query(text: str) -> list[tuple[str, str]]:
    """Decode ``k=v&…`` (query string or form body) into pairs, order kept.

    ``+`` is read as a space (form encoding); empty segments are skipped. The
    server half of :func:`encode_params`: ``parse_query(encode_params(p)) == p``.
    """
    pairs: list[tuple[str, str]] = []
    for part in text.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((unquote(name.replace("+", " ")), unquote(value.replace("+", " "))))
    return pairs


# --------------------------------------------------------------------------- signing


def signature_payload(query: str, body: str = "") -> str:
    """Binance's ``totalParams``: the query string immediately followed by the body.

    Both exactly as sent (percent-encoded), without the ``signature``
    parameter. There is no ``&`` between them: Binance's documented mixed
    example signs ``…timeInForce=GTCquantity=1…``.
    """
    return query + body


def sign(secret: str, payload: str) -> str:
    """Lower-case hex HMAC-SHA256 of ``payload`` under ``secret``."""
    return hmac.new(secret.encode("utf-8"), payload.encode("utf-8"), hashlib.sha256).hexdigest()


def verify_signature(secret: str, payload: str, signature: str) -> bool:
    """Whether ``signature`` is the HMAC-SHA256 of ``payload`` (hex, case-insensitive).

    Constant-time comparison; take the payload from :func:`split_signature`.
    The daemon never verifies a signature: the tests use this to check the
    client's requests (the simulator has its own, :mod:`daemon.venues.sim.auth`).
    """
    if not isinstance(signature, str) or len(signature) != 64:
        return False
    return hmac.compare_digest(sign(secret, payload), signature.lower())


def split_signature(encoded: str) -> tuple[str, str | None]:
    """Split an encoded query string (or body) into ``(without_signature, signature)``.

    The ``signature`` parameter is removed wherever it is, the other
    parameters keep their order and encoding, so the first element is what
    was signed (combine query and body with :func:`signature_payload`). The
    signature is ``None`` when absent; when it appears more than once the
    last one is returned (Binance rejects such requests with -1101 anyway).
    """
    kept: list[str] = []
    signature: str | None = None
    for part in encoded.split("&"):
        if part.startswith("signature="):
            signature = unquote(part[len("signature=") :])
        elif part:
            kept.append(part)
    return "&".join(kept), signature
