"""Stream entries: Redis's raw replies parsed, entries decoded as hostile input, outcomes judged.

Sans-IO: bytes and lists in (the replies of ``XREADGROUP``, ``XAUTOCLAIM``,
``XPENDING`` exactly as the server sent them, unparsed by redis-py), typed
values out. Nothing here talks to Redis or to the order pipeline, so every
rule is tested without either.

An intake entry has exactly one field, ``intent``, whose value is the JSON
body of ``POST /orders`` (``message_id`` included; at most
:data:`MAX_INTENT_BYTES`, nesting at most :data:`MAX_INTENT_DEPTH`, the
limits of that endpoint). Anything else — another or a repeated field, bytes
that are not UTF-8 JSON, a JSON value that is not an object, an entry deleted
from the stream while it was pending — is *poison*: :func:`decode_intent`
raises :class:`PoisonEntry`, and the entry goes to the dead-letter stream
with :func:`dead_letter_fields` (its id, its fields verbatim, the error, the
delivery count).

:func:`judge` maps what order entry answered to what the intake does with
the entry: acknowledge it (committed: created, or the same ``message_id``
seen before), dead-letter it (refused for good: 400, 409, 422 — the answers
``POST /orders`` gives, kept in the dead letter), or keep it pending and
submit again (503: the entry queue is full, the store or the pipeline is
down or stopping).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from daemon.decode import DecodeError, json_loads
from daemon.errors import PermanentError, TransientError
from daemon.orders.control import error_answer
from daemon.orders.gateway import SubmitResult

__all__ = [
    "INTENT_FIELD",
    "MAX_INTENT_BYTES",
    "MAX_INTENT_DEPTH",
    "Outcome",
    "PoisonEntry",
    "ReplyError",
    "StreamEntry",
    "Verdict",
    "dead_letter_fields",
    "decode_intent",
    "judge",
    "parse_autoclaim_reply",
    "parse_pending_range",
    "parse_pending_summary",
    "parse_read_reply",
]

#: The one field of an intake entry: the ``POST /orders`` JSON body.
INTENT_FIELD: Final = b"intent"
#: Largest ``intent`` value (the admin API's ``MAX_ORDER_BODY_BYTES``).
MAX_INTENT_BYTES: Final = 64 * 1024
#: Deepest nesting of the ``intent`` JSON (the admin API's ``MAX_JSON_DEPTH``).
MAX_INTENT_DEPTH: Final = 16
#: Prefix of the original fields in a dead letter (``field.intent``): no clash with ours.
FIELD_PREFIX: Final = b"field."
#: Longest error text kept in a dead letter.
_MAX_ERROR_CHARS: Final = 2000


class ReplyError(ValueError):
    """A Redis reply without the shape its command documents (a protocol problem)."""


class PoisonEntry(ValueError):
    """An entry that can never become an intent; ``answer`` is its ``POST /orders``-style answer."""

    def __init__(self, message: str, *, code: str = "INVALID_ENTRY") -> None:
        super().__init__(message)
        self.answer: dict[str, Any] = {
            "status": 400,
            "error": message,
            "problems": [{"code": code, "field": None, "message": message}],
        }


@attrs.frozen
class StreamEntry:
    """One entry as delivered to this consumer.

    Attributes:
        entry_id: The stream entry id (``b"1718000000000-0"``).
        fields: Field/value pairs in order, verbatim; ``None`` when the entry
            was deleted from the stream (trimmed) while it was pending.
        deliveries: How often the group has delivered it (1: first delivery).
    """

    entry_id: bytes
    fields: tuple[tuple[bytes, bytes], ...] | None
    deliveries: int = 1

    @property
    def shown_id(self) -> str:
        return self.entry_id.decode("ascii", "replace")


# --------------------------------------------------------------------------- replies


def _entry(raw: Any) -> StreamEntry:
    if not isinstance(raw, list | tuple) or len(raw) != 2 or not isinstance(raw[0], bytes):
        raise ReplyError(f"a stream entry must be [id, fields], got {type(raw).__name__}")
    entry_id, flat = raw
    if flat is None:
        return StreamEntry(entry_id, None)
    if not isinstance(flat, list | tuple) or len(flat) % 2:
        raise ReplyError("stream entry fields must be an even-length array")
    if not all(isinstance(item, bytes) for item in flat):
        raise ReplyError("stream entry fields must be bulk strings")
    pairs = tuple((flat[i], flat[i + 1]) for i in range(0, len(flat), 2))
    return StreamEntry(entry_id, pairs)


def _entries(raw: Any) -> list[StreamEntry]:
    if not isinstance(raw, list | tuple):
        raise ReplyError(f"expected an array of entries, got {type(raw).__name__}")
    return [_entry(item) for item in raw]


def parse_read_reply(reply: Any) -> list[StreamEntry]:
    """``XREADGROUP … STREAMS key id`` (one stream): its entries; ``None`` (timeout) is none."""
    if reply is None:
        return []
    if not isinstance(reply, list | tuple) or len(reply) != 1:
        raise ReplyError("XREADGROUP on one stream must answer one [stream, entries] pair")
    pair = reply[0]
    if not isinstance(pair, list | tuple) or len(pair) != 2:
        raise ReplyError("XREADGROUP must answer [stream, entries]")
    return _entries(pair[1])


def parse_autoclaim_reply(reply: Any) -> tuple[bytes, list[StreamEntry], int]:
    """``XAUTOCLAIM``: the next cursor, the claimed entries, how many ids were deleted.

    Redis 7 lists ids whose entries were deleted as a third element (and
    drops them from the pending list itself); Redis 6.2 returns them as
    entries without fields instead, which :class:`StreamEntry` carries as
    ``fields=None``.
    """
    if not isinstance(reply, list | tuple) or len(reply) not in (2, 3):
        raise ReplyError("XAUTOCLAIM must answer [cursor, entries(, deleted)]")
    cursor = reply[0]
    if not isinstance(cursor, bytes):
        raise ReplyError("XAUTOCLAIM's cursor must be a bulk string")
    deleted = reply[2] if len(reply) == 3 else []
    if not isinstance(deleted, list | tuple):
        raise ReplyError("XAUTOCLAIM's deleted ids must be an array")
    return cursor, _entries(reply[1]), len(deleted)


def parse_pending_range(reply: Any) -> dict[bytes, int]:
    """``XPENDING key group start end count [consumer]``: entry id → delivery count."""
    if not isinstance(reply, list | tuple):
        raise ReplyError("XPENDING with a range must answer an array")
    out: dict[bytes, int] = {}
    for row in reply:
        if not isinstance(row, list | tuple) or len(row) != 4 or not isinstance(row[0], bytes):
            raise ReplyError("XPENDING rows must be [id, consumer, idle, deliveries]")
        try:
            out[row[0]] = int(row[3])
        except (TypeError, ValueError):
            raise ReplyError("XPENDING's delivery count must be an integer") from None
    return out


def parse_pending_summary(reply: Any, consumer: bytes) -> tuple[int, int]:
    """``XPENDING key group``: (entries pending in the group, pending with ``consumer``)."""
    if not isinstance(reply, list | tuple) or len(reply) != 4:
        raise ReplyError("XPENDING must answer [count, min, max, consumers]")
    try:
        total = int(reply[0])
        mine = 0
        for name, count in reply[3] or []:
            if name == consumer:
                mine = int(count)
    except (TypeError, ValueError):
        raise ReplyError("XPENDING's summary has an unexpected shape") from None
    return total, mine


# --------------------------------------------------------------------------- decoding


def _shown_name(name: bytes) -> str:
    return json.dumps(name[:40].decode("utf-8", "backslashreplace"))


def decode_intent(entry: StreamEntry) -> dict[str, Any]:
    """The ``POST /orders`` body an entry carries; :class:`PoisonEntry` if it has none.

    Never raises anything else, whatever the entry holds.
    """
    if entry.fields is None:
        raise PoisonEntry(
            "the entry was deleted from the stream (trimmed?) before it was processed",
            code="ENTRY_DELETED",
        )
    names = [name for name, _ in entry.fields]
    unknown = [name for name in names if name != INTENT_FIELD]
    if unknown:
        shown = ", ".join(_shown_name(n) for n in unknown[:5])
        raise PoisonEntry(
            f"unknown field(s) {shown}: an intake entry has exactly one field, "
            f'"{INTENT_FIELD.decode()}"',
            code="UNKNOWN_FIELD",
        )
    if len(names) != 1:
        raise PoisonEntry(
            f'the entry has {len(names)} "{INTENT_FIELD.decode()}" fields; exactly one is allowed',
            code="MISSING_INTENT" if not names else "REPEATED_FIELD",
        )
    try:
        body = json_loads(
            entry.fields[0][1],
            what="intent",
            max_bytes=MAX_INTENT_BYTES,
            max_depth=MAX_INTENT_DEPTH,
        )
    except DecodeError as exc:
        raise PoisonEntry(str(exc), code="INVALID_JSON") from None
    if not isinstance(body, dict):
        raise PoisonEntry(
            f"intent must be a JSON object (the POST /orders body), got {type(body).__name__}",
            code="INVALID_JSON",
        )
    return body


# --------------------------------------------------------------------------- outcomes


class Verdict(enum.Enum):
    """What becomes of one delivered entry."""

    ACK = "ack"
    DEAD = "dead"
    RETRY = "retry"


@attrs.frozen
class Outcome:
    """The verdict on one entry and what the dead letter or the status says about it.

    Attributes:
        verdict: Acknowledge, dead-letter, or keep pending and submit again.
        created: For ``ACK``: a new intent (``True``) or one recorded before.
        client_order_id: For ``ACK``: the intent's id.
        error: For ``DEAD`` and ``RETRY``: one line.
        answer: For ``DEAD``: the ``POST /orders``-style answer (status + body).
        retry_after_s: For ``RETRY``: when order entry suggests trying again.
    """

    verdict: Verdict
    created: bool | None = None
    client_order_id: str | None = None
    error: str | None = None
    answer: Mapping[str, Any] | None = None
    retry_after_s: float = 1.0

    @classmethod
    def dead(cls, error: str, answer: Mapping[str, Any] | None = None) -> Outcome:
        return cls(Verdict.DEAD, error=error[:_MAX_ERROR_CHARS], answer=answer)


def judge(result: SubmitResult | BaseException) -> Outcome:
    """The outcome of one ``OrdersService.submit`` (its result, or what it raised)."""
    if isinstance(result, SubmitResult):
        return Outcome(Verdict.ACK, created=result.created, client_order_id=result.client_order_id)
    if isinstance(result, PoisonEntry):
        return Outcome.dead(str(result), result.answer)
    answer = error_answer(result)
    if isinstance(result, TransientError):
        retry = getattr(result, "retry_after_s", None)
        return Outcome(
            Verdict.RETRY,
            error=f"{type(result).__name__}: {result}"[:_MAX_ERROR_CHARS],
            retry_after_s=float(retry) if isinstance(retry, int | float) else 1.0,
        )
    if answer is not None:
        return Outcome.dead(str(result), {"status": answer.status, **answer.body})
    if isinstance(result, PermanentError):
        return Outcome.dead(str(result), {"status": 400, "error": str(result)})
    # Not an answer order entry documents (a bug): the entry is dead-lettered rather
    # than submitted again and again; the caller logs the traceback.
    message = f"unexpected error: {type(result).__name__}: {result}"
    return Outcome.dead(message, {"status": 500, "error": message})


def dead_letter_fields(
    entry: StreamEntry,
    outcome: Outcome,
    *,
    stream: str,
    group: str,
    consumer: str,
    at_ms: int,
) -> list[bytes]:
    """The flat field list of an ``XADD`` to the dead-letter stream.

    Ours first (``entry_id``, ``stream``, ``group``, ``consumer``,
    ``deliveries``, ``error``, ``answer`` as JSON, ``dead_at_ms``), then the
    entry's own fields verbatim, each name prefixed with ``field.``.
    """
    answer = json.dumps(outcome.answer or {}, separators=(",", ":"), default=str)
    flat: list[bytes] = [
        b"entry_id",
        entry.entry_id,
        b"stream",
        stream.encode(),
        b"group",
        group.encode(),
        b"consumer",
        consumer.encode(),
        b"deliveries",
        str(entry.deliveries).encode(),
        b"error",
        (outcome.error or "").encode("utf-8", "backslashreplace"),
        b"answer",
        answer.encode(),
        b"dead_at_ms",
        str(at_ms).encode(),
    ]
    for name, value in entry.fields or ():
        flat += [FIELD_PREFIX + name, value]
    return flat


def ids(entries: Sequence[StreamEntry]) -> list[bytes]:
    """The entry ids of ``entries``, in order."""
    return [entry.entry_id for entry in entries]
