"""How a supervisor reads the errors of its children.

:func:`describe_error` (what status and logs show), the unwrapping of
exception groups at the supervisor boundary (:func:`reraise_unwrapped`), the
error an escalation records (:func:`failure_error`), and ``_StartAborted``, the
start that was abandoned because the supervisor is stopping.
"""

from __future__ import annotations

from typing import NoReturn

import trio

from daemon.errors import ChildStartError

__all__ = ["_StartAborted", "describe_error", "failure_error", "leaves", "reraise_unwrapped"]


class _StartAborted(ChildStartError):
    """A start was abandoned because the supervisor is stopping (not a failure)."""


def leaves(exc: BaseException) -> list[BaseException]:
    """The leaf exceptions of ``exc`` (itself when it is not a group), depth first."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def describe_error(exc: BaseException) -> str:
    """``"Type: message"`` for an error; for a group, its first leaf (+ how many more)."""
    found = leaves(exc)
    first = found[0] if found else exc
    text = f"{type(first).__name__}: {first}" if str(first) else type(first).__name__
    if len(found) > 1:
        text += f" (+{len(found) - 1} more in {type(exc).__name__})"
    return text


def failure_error(exc: BaseException) -> BaseException:
    """The error recorded for escalation: a lone leaf rather than its wrapping group."""
    found = leaves(exc)
    return found[0] if len(found) == 1 else exc


def _raise_saving_context(exc: BaseException) -> NoReturn:
    """Re-raise ``exc`` without chaining it to the group being handled."""
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


def reraise_unwrapped(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Unwrap the supervisor nursery's group at the supervisor boundary.

    A non-Exception (KeyboardInterrupt, SystemExit) wins over Cancelled, which
    wins over Exceptions; a single Exception (EscalationError) is raised bare.
    """
    found = leaves(group)
    base = [e for e in found if not isinstance(e, Exception)]
    hard = [e for e in base if not isinstance(e, trio.Cancelled)]
    if hard:
        _raise_saving_context(hard[0])
    if base:
        _raise_saving_context(base[0])
    if len(found) == 1:
        _raise_saving_context(found[0])
    raise group  # several Exceptions: a bug in this package; keep all of them
