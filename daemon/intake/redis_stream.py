"""The intake's Redis connection: redis-py's sync client on a lane of its own.

Why sync redis-py on a thread: Trio has no Redis client of its own, and
redis-py's asyncio API is asyncio's. The kept, sync client runs here on one
:class:`~daemon.resilience.ThreadLane` (one thread at a time, one
connection: ``single_connection_client``), the way the SQLite store owns its
connection. Every blocking read carries ``BLOCK block_ms`` (at most 1 s), so
a cancelled or stopped intake waits at most that long for the call in flight
— the lane never abandons a call, so the connection is never used by two
calls at once.

Replies are taken raw (no redis-py parsing) and parsed by
:mod:`daemon.intake.entries`: a stream entry may repeat a field name, which a
dict would hide. redis-py's own retries are off; the intake retries with its
backoff and re-reads its pending entries after a failure.

Errors are translated here, once: an unreachable or timed-out server (and a
reply of an unexpected shape) is a :class:`~daemon.errors.TransientError`;
any other refusal (``WRONGTYPE``, ``NOPERM``, …) a
:class:`~daemon.errors.PermanentError`. A group deleted under the intake
(``NOGROUP``) is created again and the command repeated once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from daemon.config import IntakeConfig
from daemon.errors import PermanentError, TransientError
from daemon.intake.entries import (
    ReplyError,
    StreamEntry,
    parse_autoclaim_reply,
    parse_pending_range,
    parse_pending_summary,
    parse_read_reply,
)
from daemon.resilience import ThreadLane
from daemon.secrets import Secret, redact_url, resolve

__all__ = ["RedisStreamLog"]

log = logging.getLogger("tradingd.intake")

T = TypeVar("T")

#: Commands whose replies are taken as the server sent them.
_RAW_COMMANDS = ("XREADGROUP", "XAUTOCLAIM", "XPENDING", "XADD", "XACK", "XCLAIM", "XGROUP")


def _raw(response: Any, **options: Any) -> Any:
    return response


class RedisStreamLog:
    """The stream commands of one intake consumer, each run on the intake's lane.

    Args:
        settings: ``[intake]``.
        consumer: This consumer's name in the group.
        lane: Where the blocking calls run (one thread).
    """

    def __init__(self, settings: IntakeConfig, consumer: str, lane: ThreadLane) -> None:
        self.settings = settings
        self.consumer = consumer
        self._consumer_b = consumer.encode()
        self._stream = settings.stream.encode()
        self._group = settings.group.encode()
        self.lane = lane
        self._client: redis.Redis | None = None

    @property
    def shown_url(self) -> str:
        return redact_url(self.settings.redis_url)

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Connect (the password resolved now), and create the group if it is missing."""
        await self.lane.run(self._open)

    async def aclose(self) -> None:
        """Close the connection (in the lane: a call in flight finishes first)."""
        if self._client is not None:
            await self.lane.run(self._close)

    def _open(self) -> None:
        self._close()
        s = self.settings
        password: Secret | None = resolve(s.password) if s.password is not None else None
        client = self._translated(
            lambda: redis.Redis.from_url(
                s.redis_url,
                password=password.reveal() if password is not None else None,
                protocol=2,
                decode_responses=False,
                single_connection_client=True,
                socket_timeout=s.block_ms / 1000 + s.socket_timeout_s,
                socket_connect_timeout=s.socket_timeout_s,
                retry=Retry(NoBackoff(), 0),
                client_name=f"tradingd-intake:{self.consumer}"[:100].replace(" ", "_"),
            )
        )
        for command in _RAW_COMMANDS:
            client.set_response_callback(command, _raw)
        self._client = client
        self._translated(self._create_group)

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # closing a broken connection: nothing to keep
                log.debug("intake: closing the Redis connection: %s", exc)

    def _create_group(self) -> None:
        try:
            self._command("XGROUP", "CREATE", self._stream, self._group, "0", "MKSTREAM")
        except redis.ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise

    # ------------------------------------------------------------------ commands

    async def read(self, cursor: bytes) -> list[StreamEntry]:
        """Up to ``batch`` entries: new ones (``cursor`` ``b">"``, blocking at most
        ``block_ms``) or this consumer's pending ones after ``cursor`` (``b"0"``: all),
        with their delivery counts."""
        return await self.lane.run(self._read, cursor)

    def _read(self, cursor: bytes) -> list[StreamEntry]:
        s = self.settings
        args: list[Any] = ["GROUP", self._group, self._consumer_b, "COUNT", s.batch]
        if cursor == b">":
            args += ["BLOCK", s.block_ms]
        reply = self._grouped("XREADGROUP", *args, "STREAMS", self._stream, cursor)
        entries = self._parsed(parse_read_reply, reply)
        if cursor == b">" or not entries:
            return entries
        return self._with_deliveries(entries)

    async def autoclaim(self, cursor: bytes) -> tuple[bytes, list[StreamEntry], int]:
        """One ``XAUTOCLAIM`` step from ``cursor``: entries idle longer than
        ``claim_idle_ms`` become this consumer's. Returns the next cursor
        (``b"0-0"``: the sweep is done), the claimed entries with their delivery
        counts, and how many pending ids had lost their entry."""
        return await self.lane.run(self._autoclaim, cursor)

    def _autoclaim(self, cursor: bytes) -> tuple[bytes, list[StreamEntry], int]:
        s = self.settings
        reply = self._grouped(
            "XAUTOCLAIM",
            self._stream,
            self._group,
            self._consumer_b,
            s.claim_idle_ms,
            cursor,
            "COUNT",
            s.batch,
        )
        following, entries, deleted = self._parsed(parse_autoclaim_reply, reply)
        if entries:
            entries = self._with_deliveries(entries)
        return following, entries, deleted

    def _with_deliveries(self, entries: list[StreamEntry]) -> list[StreamEntry]:
        # One XPENDING over the batch's id range, this consumer's entries only.
        reply = self._grouped(
            "XPENDING",
            self._stream,
            self._group,
            entries[0].entry_id,
            entries[-1].entry_id,
            len(entries) * 2 + 8,
            self._consumer_b,
        )
        counts = self._parsed(parse_pending_range, reply)
        return [
            StreamEntry(e.entry_id, e.fields, max(1, counts.get(e.entry_id, 1))) for e in entries
        ]

    async def settle(self, acks: Sequence[bytes], dead: Sequence[list[bytes]]) -> None:
        """In one ``MULTI``: ``XADD`` each dead letter (a flat field list), then
        ``XACK`` the acknowledged and the dead-lettered ids.

        Atomic, so a dead letter is never written without its ack nor acked
        without its dead letter; after a failure neither happened and the
        entries are delivered again.
        """
        if acks or dead:
            await self.lane.run(self._settle, list(acks), list(dead))

    def _settle(self, acks: list[bytes], dead: list[list[bytes]]) -> None:
        client = self._connected()

        def run() -> None:
            pipe: Any = client.pipeline(transaction=True)
            for fields in dead:
                pipe.execute_command("XADD", self.settings.dead_letter_stream, "*", *fields)
            if acks:
                pipe.execute_command("XACK", self._stream, self._group, *acks)
            pipe.execute()

        self._translated(run)

    async def touch(self, entry_ids: Sequence[bytes]) -> None:
        """Reset the idle time of entries this consumer holds (``XCLAIM … JUSTID``:
        the delivery count stays), so no claim sweep takes them while it retries."""
        if entry_ids:
            await self.lane.run(self._touch, list(entry_ids))

    def _touch(self, entry_ids: list[bytes]) -> None:
        self._grouped(
            "XCLAIM", self._stream, self._group, self._consumer_b, 0, *entry_ids, "JUSTID"
        )

    async def pending(self) -> tuple[int, int]:
        """(entries pending in the group, pending with this consumer)."""
        return await self.lane.run(self._pending)

    def _pending(self) -> tuple[int, int]:
        reply = self._grouped("XPENDING", self._stream, self._group)
        return self._parsed(lambda r: parse_pending_summary(r, self._consumer_b), reply)

    # ------------------------------------------------------------------ plumbing

    def _connected(self) -> redis.Redis:
        if self._client is None:
            raise TransientError("redis: not connected")
        return self._client

    def _command(self, *args: Any) -> Any:
        return cast(Any, self._connected()).execute_command(*args)

    def _grouped(self, *args: Any) -> Any:
        """A group command; the group is created again (once) if it was deleted."""

        def run() -> Any:
            try:
                return self._command(*args)
            except redis.ResponseError as exc:
                if not str(exc).startswith("NOGROUP"):
                    raise
                log.warning(
                    "intake: consumer group %s of stream %s is missing; creating it again",
                    self.settings.group,
                    self.settings.stream,
                )
                self._create_group()
                return self._command(*args)

        return self._translated(run)

    def _parsed(self, parse: Callable[[Any], T], reply: Any) -> T:
        try:
            return parse(reply)
        except ReplyError as exc:
            raise TransientError(f"redis: unexpected reply: {exc}") from exc

    def _translated(self, fn: Callable[[], T]) -> T:
        """``fn()`` with redis-py's and the socket's errors translated (see the module)."""
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._close()
            raise TransientError(f"redis at {self.shown_url} unreachable: {exc}") from exc
        except redis.RedisError as exc:
            self._close()
            raise PermanentError(f"redis at {self.shown_url} refused: {exc}") from exc
