"""Dead letters: messages that failed for good, kept for an operator.

When a message cannot be processed — a permanent error, or retries exhausted
— dropping it would lose data silently and retrying it forever would block the
queue behind it (a *poison message*). It goes to a dead-letter store instead,
with what is needed to understand and replay it: the original payload, the
error's type and message, its source (queue or stream name), how many attempts
were made, and when it first and last failed.

Timestamps are **wall-clock epoch seconds (UTC, float)**, not
``trio.current_time()``: dead letters outlive the process, and an operator
reads them against the calendar.

:class:`DeadLetterStore` is the interface; the daemon's implementation is
the durable :class:`daemon.store.deadletters.SqliteDeadLetterStore`
(``store.dead_letters``). :class:`InMemoryDeadLetterStore` is **for tests
only**: it loses everything on restart.

Replay hands a letter to a handler (usually: put the payload back on its
source queue, or run its processing again). On success the letter is removed;
on failure it stays, with ``attempts`` incremented and the new error recorded.
Adding a letter with the ``key`` of one already stored for the same source
updates that letter instead of duplicating it, so a message that keeps failing
after replays stays one record.
"""

from __future__ import annotations

import base64
import enum
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeAlias, TypedDict, Unpack, runtime_checkable

import attrs
import trio

__all__ = [
    "DeadLetter",
    "DeadLetterStore",
    "InMemoryDeadLetterStore",
    "JsonValue",
    "PurgeFilters",
    "ReplayResult",
    "ReplayStatus",
]

#: A payload: anything :func:`json.dumps` accepts (as the durable store will
#: persist it), or raw ``bytes`` for frames that could not even be decoded.
JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None

#: Error messages are cut to this length: a letter must stay readable.
MAX_ERROR_MESSAGE_CHARS = 2000


def _check_payload(_: object, __: attrs.Attribute[Any], value: JsonValue | bytes) -> None:
    if isinstance(value, bytes):
        return
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a dead-letter payload must be JSON or bytes: {exc}") from exc


def _error_type(error: BaseException) -> str:
    cls = type(error)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _error_message(error: BaseException) -> str:
    text = str(error) or repr(error)
    if len(text) > MAX_ERROR_MESSAGE_CHARS:
        text = text[: MAX_ERROR_MESSAGE_CHARS - 1] + "…"
    return text


@attrs.frozen(kw_only=True)
class DeadLetter:
    """One message that failed for good.

    Attributes:
        source: The queue or stream it came from (``"intents"``,
            ``"binance.trades.BTCUSDT"``); replay sends it back there.
        payload: The original message (JSON value or raw bytes).
        error_type: Qualified class name of the last error
            (``"daemon.errors.PermanentError"``).
        error_message: The last error's message (truncated).
        attempts: Processing attempts made so far (>= 1).
        first_failed_at: Epoch seconds (UTC) of the first failure.
        last_failed_at: Epoch seconds (UTC) of the latest failure.
        key: Optional identity (idempotency key, client order id) used to
            merge repeated failures of the same message.
        letter_id: Assigned by the store; ``None`` until stored.
    """

    source: str
    payload: JsonValue | bytes = attrs.field(validator=_check_payload)
    error_type: str
    error_message: str
    attempts: int = 1
    first_failed_at: float
    last_failed_at: float
    key: str | None = None
    letter_id: int | None = None

    def __attrs_post_init__(self) -> None:
        if not self.source:
            raise ValueError("a dead letter needs a source")
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        if self.last_failed_at < self.first_failed_at:
            raise ValueError("last_failed_at must not be before first_failed_at")

    @classmethod
    def from_error(
        cls,
        payload: JsonValue | bytes,
        error: BaseException,
        *,
        source: str,
        attempts: int = 1,
        first_failed_at: float | None = None,
        key: str | None = None,
        now: Callable[[], float] = time.time,
    ) -> DeadLetter:
        """Build a letter from the error that ended processing."""
        at = now()
        return cls(
            source=source,
            payload=payload,
            error_type=_error_type(error),
            error_message=_error_message(error),
            attempts=attempts,
            first_failed_at=at if first_failed_at is None else first_failed_at,
            last_failed_at=at,
            key=key,
        )

    def failed_again(self, error: BaseException, *, at: float) -> DeadLetter:
        """This letter after one more failed attempt (a replay that raised ``error`` at
        ``at``): the new error, ``attempts + 1``, ``last_failed_at`` never moving back."""
        return attrs.evolve(
            self,
            error_type=_error_type(error),
            error_message=_error_message(error),
            attempts=self.attempts + 1,
            last_failed_at=max(self.last_failed_at, at),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (bytes payloads as ``{"base64": ...}``), for the CLI."""
        payload: Any = self.payload
        if isinstance(payload, bytes):
            payload = {"base64": base64.b64encode(payload).decode("ascii")}
        return {
            "letter_id": self.letter_id,
            "source": self.source,
            "key": self.key,
            "payload": payload,
            "payload_is_bytes": isinstance(self.payload, bytes),
            "error_type": self.error_type,
            "error_message": self.error_message,
            "attempts": self.attempts,
            "first_failed_at": self.first_failed_at,
            "last_failed_at": self.last_failed_at,
        }


class ReplayStatus(enum.Enum):
    """How a replay ended."""

    REPLAYED = "replayed"  #: the handler succeeded; the letter was removed
    FAILED = "failed"  #: the handler raised; the letter was kept and updated
    NOT_FOUND = "not_found"  #: no letter with that id
    BUSY = "busy"  #: the letter is being replayed by someone else right now


@attrs.frozen
class ReplayResult:
    """The result of :meth:`DeadLetterStore.replay`; ``letter`` as it is now stored
    (``None`` once removed or when not found)."""

    status: ReplayStatus
    letter: DeadLetter | None = None
    error: str | None = None


#: A replay handler gets the letter and raises if it could not process it.
ReplayHandler = Callable[[DeadLetter], Awaitable[None]]


class PurgeFilters(TypedDict, total=False):
    """Which letters :meth:`DeadLetterStore.purge` deletes: those matching *all* the
    filters given (absent or ``None``: no filter on that).

    Attributes:
        letter_ids: Only these ids.
        source: Only letters of this source.
        failed_before: Only letters whose ``last_failed_at`` is before this
            (epoch seconds).
    """

    letter_ids: Sequence[int] | None
    source: str | None
    failed_before: float | None


@runtime_checkable
class DeadLetterStore(Protocol):
    """Where dead letters are kept. All methods are async (the durable store
    goes through the database thread)."""

    async def add(self, letter: DeadLetter) -> DeadLetter:
        """Store ``letter`` (or merge it into the stored one with the same
        source and key) and return it as stored, with its ``letter_id``."""
        ...

    async def list(
        self, *, source: str | None = None, after_id: int | None = None, limit: int = 100
    ) -> Sequence[DeadLetter]:
        """Letters by ascending id, optionally of one source, after an id (paging)."""
        ...

    async def get(self, letter_id: int) -> DeadLetter | None:
        """One letter, or ``None``."""
        ...

    async def replay(self, letter_id: int, handler: ReplayHandler) -> ReplayResult:
        """Hand a letter to ``handler``; remove it on success, update it on failure."""
        ...

    async def purge(self, **which: Unpack[PurgeFilters]) -> int:
        """Delete letters matching *all* given filters (all letters when none
        is given), except those being replayed; return how many were deleted."""
        ...


class InMemoryDeadLetterStore:
    """A :class:`DeadLetterStore` in a dict — **for tests only**.

    Nothing survives a restart; the durable store replaces it in production.

    Args:
        now: Wall clock (epoch seconds) used to stamp failed replays.
    """

    def __init__(self, *, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._letters: dict[int, DeadLetter] = {}
        self._next_id = 1
        self._replaying: set[int] = set()

    def __len__(self) -> int:
        return len(self._letters)

    async def add(self, letter: DeadLetter) -> DeadLetter:
        await trio.lowlevel.checkpoint()
        if letter.key is not None:
            for stored in self._letters.values():
                if stored.source == letter.source and stored.key == letter.key:
                    assert stored.letter_id is not None
                    merged = attrs.evolve(
                        stored,
                        payload=letter.payload,
                        error_type=letter.error_type,
                        error_message=letter.error_message,
                        attempts=stored.attempts + letter.attempts,
                        first_failed_at=min(stored.first_failed_at, letter.first_failed_at),
                        last_failed_at=max(stored.last_failed_at, letter.last_failed_at),
                    )
                    self._letters[stored.letter_id] = merged
                    return merged
        stored = attrs.evolve(letter, letter_id=self._next_id)
        self._letters[self._next_id] = stored
        self._next_id += 1
        return stored

    async def list(
        self, *, source: str | None = None, after_id: int | None = None, limit: int = 100
    ) -> Sequence[DeadLetter]:
        await trio.lowlevel.checkpoint()
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        found: list[DeadLetter] = []
        for letter_id in sorted(self._letters):
            letter = self._letters[letter_id]
            if after_id is not None and letter_id <= after_id:
                continue
            if source is not None and letter.source != source:
                continue
            found.append(letter)
            if len(found) >= limit:
                break
        return found

    async def get(self, letter_id: int) -> DeadLetter | None:
        await trio.lowlevel.checkpoint()
        return self._letters.get(letter_id)

    async def replay(self, letter_id: int, handler: ReplayHandler) -> ReplayResult:
        await trio.lowlevel.checkpoint()
        letter = self._letters.get(letter_id)
        if letter is None:
            return ReplayResult(ReplayStatus.NOT_FOUND)
        if letter_id in self._replaying:
            return ReplayResult(ReplayStatus.BUSY, letter)
        self._replaying.add(letter_id)
        try:
            await handler(letter)
        except Exception as exc:
            current = self._letters.get(letter_id, letter)
            updated = current.failed_again(exc, at=self._now())
            if letter_id in self._letters:
                self._letters[letter_id] = updated
            return ReplayResult(ReplayStatus.FAILED, updated, f"{type(exc).__name__}: {exc}")
        finally:
            self._replaying.discard(letter_id)
        self._letters.pop(letter_id, None)
        return ReplayResult(ReplayStatus.REPLAYED)

    async def purge(self, **which: Unpack[PurgeFilters]) -> int:
        await trio.lowlevel.checkpoint()
        letter_ids = which.get("letter_ids")
        source = which.get("source")
        failed_before = which.get("failed_before")
        ids = set(letter_ids) if letter_ids is not None else None
        doomed = [
            letter_id
            for letter_id, letter in self._letters.items()
            if (ids is None or letter_id in ids)
            and (source is None or letter.source == source)
            and (failed_before is None or letter.last_failed_at < failed_before)
            and letter_id not in self._replaying
        ]
        for letter_id in doomed:
            del self._letters[letter_id]
        return len(doomed)
