"""The outcome of one call: a value or an exception, as a value.

Retry classifiers judge an :class:`Outcome`, and :func:`~daemon.resilience.gather`
in ``"collect"`` mode returns one per input. Only :class:`Exception` is ever
captured: ``trio.Cancelled``, ``KeyboardInterrupt`` and ``SystemExit`` are not
outcomes of a call, they are the caller being told to stop, and always propagate.
"""

from __future__ import annotations

from typing import Generic, TypeVar, cast

import attrs

__all__ = ["Outcome"]

T = TypeVar("T")


@attrs.frozen(slots=True)
class Outcome(Generic[T]):
    """What one call produced.

    Build with :meth:`success` or :meth:`failure`; ``error is None`` means the
    call returned ``result`` (which may itself be ``None``).
    """

    result: T | None = None
    error: Exception | None = None

    @classmethod
    def success(cls, result: T) -> Outcome[T]:
        """The call returned ``result``."""
        return cls(result=result, error=None)

    @classmethod
    def failure(cls, error: Exception) -> Outcome[T]:
        """The call raised ``error``."""
        return cls(result=None, error=error)

    @property
    def ok(self) -> bool:
        """True when the call returned instead of raising."""
        return self.error is None

    def unwrap(self) -> T:
        """Return the result, or raise the captured error."""
        if self.error is not None:
            raise self.error
        return cast(T, self.result)
