"""What a supervisor reports as it goes: :class:`SupervisorEvent` s and counters.

:class:`Reporter` delivers the events of one supervisor to its optional
``on_event`` observer (whose exceptions are logged and ignored: an observer
must not kill the tree) and holds the :class:`Counters` that status shows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs
import trio

from daemon.supervise.policy import EventKind

__all__ = ["Counters", "Reporter", "SupervisorEvent"]

log = logging.getLogger("tradingd.supervise")


@attrs.frozen
class SupervisorEvent:
    """Something that happened to a supervisor or one of its children.

    ``child`` is None for events of the supervisor itself (started = ready,
    stopped, escalated). ``at`` is ``trio.current_time()``.
    """

    kind: EventKind
    supervisor: str
    child: str | None
    error: BaseException | None
    at: float


@attrs.define
class Counters:
    """What one supervisor did since it was constructed (across runs)."""

    starts: int = 0
    exits: int = 0
    restarts: int = 0
    failures: int = 0
    escalations: int = 0


class Reporter:
    """The event observer and the counters of one supervisor."""

    def __init__(self, name: str, on_event: Callable[[SupervisorEvent], None] | None) -> None:
        self.name = name
        self.counters = Counters()
        self._on_event = on_event

    def emit(
        self,
        kind: EventKind,
        child: str | None,
        error: BaseException | None = None,
        *,
        at: float | None = None,
    ) -> None:
        """Tell the observer (if any); ``at`` defaults to now."""
        if self._on_event is None:
            return
        event = SupervisorEvent(
            kind=kind,
            supervisor=self.name,
            child=child,
            error=error,
            at=trio.current_time() if at is None else at,
        )
        try:
            self._on_event(event)
        except Exception:
            log.exception("supervisor %s: on_event observer failed", self.name)
