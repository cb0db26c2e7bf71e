"""Dead letters: the record itself (the stores are tested in tests/store/test_deadletters.py)."""

from __future__ import annotations

import json

import pytest

from daemon.errors import PermanentError
from daemon.resilience import (
    DeadLetter,
)
from tests.helpers.store import WallClock, letter


def test_from_error_records_type_message_source_and_times() -> None:
    clock = WallClock()
    record = DeadLetter.from_error(
        {"id": 7},
        PermanentError("-1121 Invalid symbol"),
        source="intents",
        attempts=3,
        first_failed_at=clock.now - 60,
        key="msg-7",
        now=clock,
    )
    assert record.error_type == "daemon.errors.PermanentError"
    assert record.error_message == "-1121 Invalid symbol"
    assert record.attempts == 3
    assert record.first_failed_at == clock.now - 60
    assert record.last_failed_at == clock.now
    assert record.letter_id is None
    builtin = DeadLetter.from_error(b"\xff", ValueError(), source="trades", now=clock)
    assert builtin.error_type == "ValueError"
    assert builtin.error_message == "ValueError()"
    assert builtin.first_failed_at == builtin.last_failed_at == clock.now


def test_long_error_messages_are_truncated() -> None:
    record = DeadLetter.from_error(1, RuntimeError("x" * 5000), source="s", now=lambda: 0.0)
    assert len(record.error_message) == 2000


def test_validation() -> None:
    with pytest.raises(ValueError, match="JSON"):
        DeadLetter.from_error(object(), ValueError(), source="s")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="JSON"):
        DeadLetter.from_error(float("nan"), ValueError(), source="s")
    with pytest.raises(ValueError):
        DeadLetter.from_error(1, ValueError(), source="")
    with pytest.raises(ValueError):
        DeadLetter.from_error(1, ValueError(), source="s", attempts=0)
    with pytest.raises(ValueError):
        DeadLetter.from_error(1, ValueError(), source="s", first_failed_at=2e9, now=lambda: 1e9)


def test_to_dict_is_json_including_bytes_payloads() -> None:
    raw = DeadLetter.from_error(
        b"\x00\xffbad frame", ValueError("undecodable"), source="ws", now=lambda: 5.0
    )
    data = json.loads(json.dumps(raw.to_dict()))
    assert data["payload"] == {"base64": "AP9iYWQgZnJhbWU="}
    assert data["payload_is_bytes"] is True
    assert data["first_failed_at"] == 5.0
    assert json.loads(json.dumps(letter().to_dict()))["payload"] == {
        "symbol": "BTCUSDT",
        "qty": "0.1",
    }


# The store protocol's behaviour (add/list/get/merge/replay/purge) is tested once,
# against both the in-memory reference and the durable SQLite store, in
# tests/store/test_deadletters.py.
