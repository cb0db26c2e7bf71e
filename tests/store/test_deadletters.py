"""The durable dead-letter store.

The behavioural cases of the :class:`~daemon.resilience.DeadLetterStore`
protocol run against the in-memory reference and the durable store on
**both** backends (SQLite, PostgreSQL), so they cannot drift apart;
durability-specific cases follow.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

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
from daemon.store import SqliteDeadLetterStore, SqliteStore, StoreClosedError
from tests.helpers.store import WallClock, letter, open_store, raw
from tests.store.pg import open_backend

Factory = Callable[..., DeadLetterStore]


def count(store: DeadLetterStore) -> Callable[[], Awaitable[int]]:
    async def size() -> int:
        if isinstance(store, SqliteDeadLetterStore):
            return await store.count()
        assert isinstance(store, InMemoryDeadLetterStore)
        return len(store)

    return size


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    """Builds a dead-letter store of the parametrised kind (``now=`` optional)."""
    if request.param == "memory":
        yield (
            lambda now=None: (
                InMemoryDeadLetterStore() if now is None else InMemoryDeadLetterStore(now=now)
            )
        )
        return
    dsn = request.getfixturevalue("pg_dsn") if request.param == "postgres" else None
    async with await open_backend(request.param, tmp_path, dsn=dsn) as owner:

        def build(now: Callable[[], float] | None = None) -> DeadLetterStore:
            if now is None:
                return owner.dead_letters
            return SqliteDeadLetterStore(owner, now=now)

        yield build


# ----------------------------------------------------------------------------- shared behaviour


async def test_the_store_satisfies_the_protocol(make: Factory) -> None:
    assert isinstance(make(), DeadLetterStore)


async def test_add_list_get(make: Factory) -> None:
    store = make()
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


async def test_same_key_merges_into_one_letter(make: Factory) -> None:
    store = make()
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
    assert await count(store)() == 2
    # An older failure merged later widens the window the other way.
    older = await store.add(letter(key="k1", at=50.0))
    assert (older.first_failed_at, older.last_failed_at, older.attempts) == (50.0, 200.0, 4)
    assert await store.get(first.letter_id or 0) == older


async def test_replay_success_removes_the_letter(make: Factory) -> None:
    store = make()
    stored = await store.add(letter())
    replayed: list[DeadLetter] = []

    async def handler(item: DeadLetter) -> None:
        replayed.append(item)

    result = await store.replay(stored.letter_id or 0, handler)
    assert result.status is ReplayStatus.REPLAYED
    assert replayed == [stored]
    assert await store.get(stored.letter_id or 0) is None


async def test_replay_failure_keeps_and_updates_the_letter(make: Factory) -> None:
    clock = WallClock(5000.0)
    store = make(now=clock)
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


async def test_replay_not_found_and_busy(make: Factory) -> None:
    store = make()

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
            busy = await store.replay(1, slow)
            statuses.append(busy.status)
            assert busy.letter is not None and busy.letter.letter_id == 1
            assert await store.purge() == 0  # a letter being replayed is not purged
            gate.set()
    assert statuses == [ReplayStatus.BUSY, ReplayStatus.REPLAYED]
    assert await count(store)() == 0


async def test_a_cancelled_replay_leaves_the_letter_as_it_was(
    make: Factory, autojump_clock: trio.testing.MockClock
) -> None:
    store = make()
    stored = await store.add(letter())

    async def hang(item: DeadLetter) -> None:
        await trio.sleep_forever()

    with trio.move_on_after(1):
        await store.replay(1, hang)
    assert await store.get(1) == stored
    assert await store.purge() == 1  # no longer marked as being replayed


async def test_purge_filters_combine(make: Factory) -> None:
    store = make()
    await store.add(letter("intents", at=100.0))
    await store.add(letter("trades", at=100.0))
    await store.add(letter("intents", at=300.0))
    await store.add(letter("trades", at=300.0))
    assert await store.purge(source="intents", failed_before=200.0) == 1
    assert [x.letter_id for x in await store.list()] == [2, 3, 4]
    assert await store.purge(letter_ids=[3, 99]) == 1
    assert await store.purge(letter_ids=[]) == 0
    assert await store.purge() == 2
    assert await store.list() == []


async def test_bytes_and_json_payloads_come_back_as_they_went_in(make: Factory) -> None:
    store = make()
    payloads: list[object] = [
        b"\x00\xff\xfe not utf-8",
        b"",
        {"nested": [1, 2.5, None, True, "é"]},
        "a string",
        0,
        None,
        [],
    ]
    for i, payload in enumerate(payloads):
        stored = await store.add(
            DeadLetter.from_error(payload, ValueError(i), source="ws", now=lambda: 1.0)  # type: ignore[arg-type]
        )
        fetched = await store.get(stored.letter_id or 0)
        assert fetched is not None
        assert fetched.payload == payload
        assert type(fetched.payload) is type(payload)


# ----------------------------------------------------------------------------- durability


async def test_letters_survive_a_restart_and_ids_are_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with await open_store(path) as store:
        await store.dead_letters.add(letter(key="k"))
        await store.dead_letters.add(letter(source="trades"))
        await store.dead_letters.purge(letter_ids=[2])
    async with await open_store(path) as store:
        survivors = await store.dead_letters.list()
        assert [(x.letter_id, x.key) for x in survivors] == [(1, "k")]
        merged = await store.dead_letters.add(letter(key="k", at=2000.0))
        assert (merged.letter_id, merged.attempts) == (1, 2)
        fresh = await store.dead_letters.add(letter())
        assert fresh.letter_id == 3  # 2 was purged and stays unused
    with raw(path) as conn:
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 2


async def test_a_failed_replay_handler_error_is_recorded_durably(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with await open_store(path) as store:
        await store.dead_letters.add(letter())

        async def handler(item: DeadLetter) -> None:
            raise PermanentError("still bad")

        await SqliteDeadLetterStore(store, now=lambda: 7000.0).replay(1, handler)
    async with await open_store(path) as store:
        stored = await store.dead_letters.get(1)
        assert stored is not None
        assert (stored.attempts, stored.last_failed_at) == (2, 7000.0)
        assert stored.error_message == "still bad"


async def test_dead_letter_writes_fail_loudly_on_a_closed_store(tmp_path: Path) -> None:
    store: SqliteStore = await open_store(tmp_path / "store.db")
    await store.aclose()
    with pytest.raises(StoreClosedError):
        await store.dead_letters.add(letter())
