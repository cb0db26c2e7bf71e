"""The intake's sans-IO core: raw replies, hostile entries, outcomes, dead letters."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.errors import RiskRejectedError
from daemon.intake.entries import (
    Outcome,
    PoisonEntry,
    ReplyError,
    StreamEntry,
    Verdict,
    dead_letter_fields,
    decode_intent,
    judge,
    parse_autoclaim_reply,
    parse_pending_range,
    parse_pending_summary,
    parse_read_reply,
)
from daemon.orders.gateway import EntrySaturatedError, EntryUnavailableError, IntentConflictError
from daemon.orders.intent import IntentValidationError, OrderIntent
from tests.helpers.orders import limit_request


def entry(*fields: tuple[bytes, bytes], deliveries: int = 1) -> StreamEntry:
    return StreamEntry(b"1-0", tuple(fields), deliveries)


def test_an_intent_entry_decodes_to_the_post_orders_body() -> None:
    body = limit_request("m-1")
    assert decode_intent(entry((b"intent", json.dumps(body).encode()))) == body


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ((), "MISSING_INTENT"),
        (((b"other", b"{}"),), "UNKNOWN_FIELD"),
        (((b"intent", b"{}"), (b"trace", b"x")), "UNKNOWN_FIELD"),
        (((b"intent", b"{}"), (b"intent", b"{}")), "REPEATED_FIELD"),
        (((b"intent", b"not json"),), "INVALID_JSON"),
        (((b"intent", b"\xff\xfe"),), "INVALID_JSON"),
        (((b"intent", b"[1, 2]"),), "INVALID_JSON"),
        (((b"intent", b"[" * 100_000),), "INVALID_JSON"),
        (((b"intent", b'{"q": NaN}'),), "INVALID_JSON"),
        (((b"intent", b"1" * 100_000),), "INVALID_JSON"),
        (((b"intent", b'{"a": "' + b"x" * 70_000 + b'"}'),), "INVALID_JSON"),
    ],
)
def test_poison_entries_are_refused_with_a_code(
    fields: tuple[tuple[bytes, bytes], ...], code: str
) -> None:
    with pytest.raises(PoisonEntry) as refused:
        decode_intent(entry(*fields))
    assert refused.value.answer["problems"][0]["code"] == code
    assert refused.value.answer["status"] == 400


def test_an_entry_deleted_while_pending_is_poison() -> None:
    with pytest.raises(PoisonEntry, match="deleted"):
        decode_intent(StreamEntry(b"1-0", None))


@given(st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=200)), max_size=4))
def test_any_entry_decodes_or_is_poison(fields: list[tuple[bytes, bytes]]) -> None:
    try:
        body = decode_intent(entry(*fields))
    except PoisonEntry:
        return
    assert isinstance(body, dict)


def test_read_reply_keeps_repeated_fields_and_deleted_entries() -> None:
    reply = [[b"s", [[b"1-0", [b"intent", b"a", b"intent", b"b"]], [b"2-0", None]]]]
    first, second = parse_read_reply(reply)
    assert first.fields == ((b"intent", b"a"), (b"intent", b"b"))
    assert second.fields is None
    assert parse_read_reply(None) == []


@pytest.mark.parametrize(
    "reply",
    [
        [[b"s", [[b"1-0", [b"odd"]]]]],
        [[b"s", [[b"1-0", [b"k", 5]]]]],
        [[b"s", [["1-0", []]]]],
        [[b"s", "entries"]],
        [[b"a", []], [b"b", []]],
        "OK",
    ],
)
def test_read_replies_of_a_wrong_shape_are_reply_errors(reply: object) -> None:
    with pytest.raises(ReplyError):
        parse_read_reply(reply)


def test_autoclaim_and_pending_replies() -> None:
    cursor, entries, deleted = parse_autoclaim_reply(
        [b"0-0", [[b"3-0", [b"intent", b"{}"]]], [b"1-0", b"2-0"]]
    )
    assert (cursor, len(entries), deleted) == (b"0-0", 1, 2)
    # Redis 6.2: no third element, deleted entries come back without fields.
    _, old, gone = parse_autoclaim_reply([b"5-0", [[b"4-0", None]]])
    assert old[0].fields is None and gone == 0
    assert parse_pending_range([[b"1-0", b"c", 10, 3]]) == {b"1-0": 3}
    assert parse_pending_summary([3, b"1-0", b"3-0", [[b"c", b"2"], [b"d", b"1"]]], b"c") == (
        3,
        2,
    )
    assert parse_pending_summary([0, None, None, None], b"c") == (0, 0)
    with pytest.raises(ReplyError):
        parse_pending_range([[b"1-0", b"c", 10, b"x"]])


def test_outcomes_of_order_entry_answers() -> None:
    transient = judge(EntrySaturatedError("full", retry_after_s=2.0))
    assert (transient.verdict, transient.retry_after_s) == (Verdict.RETRY, 2.0)
    assert judge(EntryUnavailableError("down")).verdict is Verdict.RETRY
    try:
        OrderIntent.from_request({"message_id": "m"})
    except IntentValidationError as exc:
        invalid = judge(exc)
    assert invalid.verdict is Verdict.DEAD and invalid.answer is not None
    assert invalid.answer["status"] == 400 and invalid.answer["problems"]
    conflict = judge(IntentConflictError("td1-x", ["price"]))
    assert conflict.answer is not None and conflict.answer["status"] == 409
    risk = judge(RiskRejectedError([]))
    assert risk.verdict is Verdict.DEAD and risk.answer is not None
    assert risk.answer["status"] == 422
    bug = judge(ZeroDivisionError("x"))
    assert bug.verdict is Verdict.DEAD and bug.answer is not None
    assert bug.answer["status"] == 500


def test_a_dead_letter_keeps_the_original_entry_error_and_deliveries() -> None:
    original = StreamEntry(b"7-1", ((b"intent", b"\xffraw"), (b"x", b"y")), deliveries=3)
    flat = dead_letter_fields(
        original,
        Outcome.dead("bad", {"status": 400, "error": "bad"}),
        stream="s",
        group="g",
        consumer="c",
        at_ms=5,
    )
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    assert fields[b"entry_id"] == b"7-1"
    assert fields[b"deliveries"] == b"3"
    assert fields[b"error"] == b"bad"
    assert json.loads(fields[b"answer"]) == {"status": 400, "error": "bad"}
    assert fields[b"field.intent"] == b"\xffraw"
    assert fields[b"field.x"] == b"y"
