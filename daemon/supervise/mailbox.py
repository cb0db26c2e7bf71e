"""The mailbox of a supervisor's control loop.

Children report their exits (:class:`Exit`) and callers of ``start_child`` /
``stop_child`` their requests (:class:`StartRequest`, :class:`StopRequest`,
each answered through a :class:`Reply`) by posting to a :class:`Mailbox`; the
control loop takes them one at a time.
"""

from __future__ import annotations

import collections

import attrs
import trio

from daemon.errors import SupervisionError
from daemon.supervise.child import ChildRecord, Incarnation
from daemon.supervise.policy import ChildSpec

__all__ = ["Exit", "Mailbox", "Message", "Reply", "StartRequest", "StopRequest"]


class Reply:
    """The answer to one request: None when it succeeded, else the error to raise."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: BaseException | None = None

    def resolve(self, error: BaseException | None = None) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()

    async def wait(self) -> None:
        await self.done.wait()
        if self.error is not None:
            raise self.error


@attrs.define
class Exit:
    child: ChildRecord
    inc: Incarnation


@attrs.define
class StartRequest:
    spec: ChildSpec
    reply: Reply


@attrs.define
class StopRequest:
    name: str
    reply: Reply


Message = Exit | StartRequest | StopRequest


class Mailbox:
    """Messages for the control loop, and the event that wakes it."""

    def __init__(self) -> None:
        self._messages: collections.deque[Message] = collections.deque()
        self._wake = trio.Event()

    def __bool__(self) -> bool:
        return bool(self._messages)

    def post(self, message: Message) -> None:
        # Bounded by construction: one Exit per live incarnation plus one per
        # pending caller of start_child/stop_child (each waits for its reply).
        self._messages.append(message)
        self._wake.set()

    def take(self) -> Message:
        """The oldest message (the mailbox must not be empty)."""
        return self._messages.popleft()

    def wake(self) -> None:
        """Wake the control loop without a message (a stop request)."""
        self._wake.set()

    async def wait_until(self, deadline: float) -> None:
        """Sleep until woken (a message, or :meth:`wake`) or until ``deadline``."""
        self._wake = wake = trio.Event()
        with trio.move_on_at(deadline):
            await wake.wait()

    def reset(self) -> None:
        """Empty, with a fresh wake event (a new run)."""
        self._messages.clear()
        self._wake = trio.Event()

    def reject_all(self, reason: str) -> None:
        """Answer every waiting request with a SupervisionError and empty the mailbox."""
        for message in self._messages:
            if not isinstance(message, Exit):
                message.reply.resolve(SupervisionError(reason))
        self._messages.clear()
