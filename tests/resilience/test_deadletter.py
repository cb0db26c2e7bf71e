"""Dead letters: the record, and the in-memory store's add/list/get/replay/purge."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from daemon.errors import PermanentError, TransientError
from daemon.resilience import (
    DeadLetter,
    DeadLetterStore,
    InMemoryDeadLetterStore,
    ReplayStatus,
)


class WallClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def letter(source: str = "intents", key: str | None = None, at: float = 1000.0) -> DeadLetter:
    return DeadLetter(
        source=source,
        payload={"symbol": "BTCUSDT", "qty": "0.1"},
        error_type="daemon.errors.PermanentError",
        error_message="rejected",
        attempts=1,
        first_failed_at=at,
        last_failed_at=at,
        key=key,
    )


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


async def test_the_in_memory_store_satisfies_the_protocol() -> None:
    assert isinstance(InMemoryDeadLetterStore(), DeadLetterStore)


async def test_add_list_get() -> None:
    store = InMemoryDeadLetterStore()
    a = await store.add(letter("intents"))
    b = await store.add(letter("trades"))
    c = await store.add(letter("intents"))
    assert [x.letter_id for x in (a, b, c)] == [1, 2, 3]
    assert [x.letter_id for x in await store.list()] == [1, 2, 3]
    assert [x.letter_id for x in await store.list(source="intents")] == [1, 3]
    assert [x.letter_id for x in await store.list(after_id=1, limit=1)] == [2]
    assert await store.get(2) == b
    assert await store.get(99) is None
    with pytest.raises(ValueError):
        await store.list(limit=0)


async def test_same_key_merges_into_one_letter() -> None:
    store = InMemoryDeadLetterStore()
    first = await store.add(letter(key="k1", at=100.0))
    again = await store.add(
        DeadLetter.from_error(
            {"v": 2},
            TransientError("still"),
            source="intents",
            attempts=2,
            key="k1",
            now=lambda: 200.0,
        )
    )
    other_source = await store.add(letter(source="trades", key="k1"))
    assert again.letter_id == first.letter_id
    assert again.attempts == 3
    assert again.first_failed_at == 100.0
    assert again.last_failed_at == 200.0
    assert again.error_type == "daemon.errors.TransientError"
    assert again.payload == {"v": 2}
    assert other_source.letter_id != first.letter_id
    assert len(store) == 2


async def test_replay_success_removes_the_letter() -> None:
    store = InMemoryDeadLetterStore()
    stored = await store.add(letter())
    replayed: list[DeadLetter] = []

    async def handler(item: DeadLetter) -> None:
        replayed.append(item)

    result = await store.replay(stored.letter_id or 0, handler)
    assert result.status is ReplayStatus.REPLAYED
    assert replayed == [stored]
    assert await store.get(stored.letter_id or 0) is None


async def test_replay_failure_keeps_and_updates_the_letter() -> None:
    clock = WallClock(5000.0)
    store = InMemoryDeadLetterStore(now=clock)
    stored = await store.add(letter(at=1000.0))

    async def handler(item: DeadLetter) -> None:
        raise TransientError("venue still down")

    result = await store.replay(1, handler)
    assert result.status is ReplayStatus.FAILED
    assert result.error == "TransientError: venue still down"
    assert result.letter is not None
    assert result.letter.attempts == stored.attempts + 1
    assert result.letter.error_type == "daemon.errors.TransientError"
    assert result.letter.first_failed_at == 1000.0
    assert result.letter.last_failed_at == 5000.0
    assert await store.get(1) == result.letter


async def test_replay_not_found_and_busy() -> None:
    store = InMemoryDeadLetterStore()

    async def never(item: DeadLetter) -> None:  # pragma: no cover - not called
        raise AssertionError("no letter, no call")

    assert (await store.replay(1, never)).status is ReplayStatus.NOT_FOUND
    await store.add(letter())
    gate = trio.Event()
    statuses: list[ReplayStatus] = []

    async def slow(item: DeadLetter) -> None:
        await gate.wait()

    async def replay() -> None:
        statuses.append((await store.replay(1, slow)).status)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(replay)
            await trio.testing.wait_all_tasks_blocked()
            statuses.append((await store.replay(1, slow)).status)
            assert await store.purge() == 0  # a letter being replayed is not purged
            gate.set()
    assert statuses == [ReplayStatus.BUSY, ReplayStatus.REPLAYED]
    assert len(store) == 0


async def test_purge_filters_combine() -> None:
    store = InMemoryDeadLetterStore()
    await store.add(letter("intents", at=100.0))
    await store.add(letter("trades", at=100.0))
    await store.add(letter("intents", at=300.0))
    await store.add(letter("trades", at=300.0))
    assert await store.purge(source="intents", failed_before=200.0) == 1
    assert [x.letter_id for x in await store.list()] == [2, 3, 4]
    assert await store.purge(letter_ids=[3, 99]) == 1
    assert await store.purge() == 2
    assert await store.list() == []
