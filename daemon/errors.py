"""The exception tree of tradingd.

Every error the daemon raises on purpose is a :class:`TradingdError`. Library
errors (OSError from a socket, ``tomllib.TOMLDecodeError``, httpx2 errors, …)
are translated once, at the edge where they happen, with ``raise … from exc``.

::

    TradingdError
    ├── ConfigError                 the configuration is invalid (carries every problem)
    │   ├── StrategyOptionsError    strategies.base: a strategy's ``options`` table is invalid
    │   └── StrategyLoadError       strategies.loader: strategies cannot be loaded (each failure)
    ├── SecretError                 a referenced secret cannot be resolved
    ├── SupervisionError
    │   ├── EscalationError         a supervisor exceeded its restart intensity
    │   ├── StartTimeoutError       a child did not report ready within its start deadline
    │   ├── ChildStartError         a child raised before reporting ready
    │   ├── PoolFullError           a dynamic pool is at its cap of live children
    │   ├── StaleHeartbeatError     a child missed its heartbeat (recorded failure)
    │   └── UnexpectedExitError     a permanent child returned (recorded failure)
    ├── ControlError                the control socket could not be reached or answered badly
    ├── TransientError              retrying may help (connect errors, 502/503/504, DB busy)
    │   ├── RateLimitedError        told to wait (429/418/-1003/-1015); carries retry_after_s
    │   ├── EntrySaturatedError     orders.gateway: no more submissions now (503, Retry-After)
    │   ├── EntryUnavailableError   orders.gateway: no pipeline, or the store cannot commit (503)
    │   ├── QueueFullError          orders.dispatch_queues: the account's queue has no free slot
    │   ├── TooManyQueuesError      orders.dispatch_queues: dynamic mode, max_account_queues live
    │   └── DispatcherClosedError   orders.dispatch: draining or stopped, takes no new work
    ├── AmbiguousOutcomeError       the request may have taken effect (timeout after send, 5xx on
    │                               an order, -1006/-1007): query, never resend blindly
    ├── PermanentError              retrying cannot help (4xx rejects, validation, decode errors)
    │   ├── RiskRejectedError       pre-trade risk refused an order (coded reasons)
    │   ├── ReservationStateError   an illegal risk-reservation transition
    │   ├── IntentValidationError   orders.intent: a submitted intent is malformed (every reason)
    │   ├── InvalidStateTransitionError  orders.state: the transition table forbids the change
    │   │   └── StaleStateError     store.orders: the row is not in the transition's source state
    │   ├── IntentConflictError     orders.gateway: the message_id names another order (409)
    │   ├── UnknownOrderError       orders.gateway: no intent has this client order id (404)
    │   ├── UnknownIntentError      store.orders: no intent is stored under the client order id
    │   ├── DuplicateIntentError    store.orders: an inserted intent is already stored
    │   ├── VenueOrderIdConflictError  store.orders: a venue answer names another venue order id
    │   └── LeaseLostError      store.leases: this daemon no longer holds the account's lease
    │                           (its fencing token is stale): it must stop trading the account
    ├── CircuitOpenError            a circuit breaker is open; the call was not attempted
    │   └── CircuitRejectedError    rejected by a named breaker (carries name, state, retry_after_s)
    ├── RetryExhaustedError         a bounded retry ran out of attempts or time; carries the last
    │                               outcome and the run's statistics
    ├── StoreError                  a store operation failed; carries ``path``
    │   ├── StoreUnavailableError   [TransientError] the condition can clear; retry later
    │   │   ├── StoreBusyError      SQLITE_BUSY/LOCKED: another connection holds the lock
    │   │   ├── StoreFullError      SQLITE_FULL, ENOSPC: disk (or max_page_count) full
    │   │   ├── StoreReadOnlyError  SQLITE_READONLY, EROFS/EACCES/EPERM: cannot write
    │   │   └── StoreIOError        SQLITE_IOERR or another OSError: the disk misbehaved
    │   ├── StoreCorruptError       [PermanentError] not a database, or a malformed one
    │   ├── StoreVersionError       [PermanentError] the file's schema is newer than the code
    │   ├── StoreOpenError          [PermanentError] cannot be opened (or is not ours)
    │   ├── StoreMigrationError     [PermanentError] a schema migration failed (rolled back)
    │   ├── StoreDataError          [PermanentError] the schema refused a row
    │   ├── StoreClosedError        [PermanentError] the store was closed
    │   └── GapTransitionError      [PermanentError] an illegal gap state change
    └── VenueError                  a venue call failed; carries venue, code, venue_message,
        │                           http_status, endpoint. Each concrete class *also* derives
        │                           from the policy class in brackets, so ``except`` clauses on
        │                           the taxonomy keep working:
        ├── VenueRejectedError      [PermanentError] a definitive reject with a venue code
        │   ├── OrderRejectedError  -2010 the new order was rejected
        │   │   ├── DuplicateOrderError   -2010 "Duplicate order sent." (client id of an OPEN order)
        │   │   └── FilterFailureError    -1013, or -2010 "Filter failure: …"
        │   ├── OrderNotFoundError  -2013 the queried order does not exist (or is not visible yet)
        │   ├── CancelRejectedError -2011 cancel refused ("Unknown order sent."): unknown or closed
        │   ├── TimestampOutOfWindowError  -1021 timestamp outside recvWindow (after one resync)
        │   ├── SignatureError      -1022 the signature did not verify
        │   ├── ApiKeyRejectedError -2014/-2015 API key format, key, IP or permission refused
        │   └── ForbiddenError      HTTP 403: the venue's WAF refused the request
        ├── VenueRequestError       [PermanentError] the request could not be made (bad URL,
        │                           unsupported protocol, redirect loop)
        ├── VenueDecodeError        [PermanentError] an answer or stream frame that cannot be
        │                           decoded; carries the raw payload
        ├── VenueUnavailableError   [TransientError] not processed: connect errors, 5xx or a
        │                           timeout on a *query*, -1001/-1008
        ├── VenueRateLimitedError   [RateLimitedError] 429/418/-1003/-1015, or the local limiter
        │                           could not admit the request in time (``http_status is None``)
        └── VenueOutcomeUnknownError  [AmbiguousOutcomeError] an order request may have taken
                                    effect: 5xx, -1000/-1006/-1007, timeout or an undecodable
                                    answer after sending

Each class hangs under its first base class; a second base is named in
brackets. Classes defined next to the code that raises them name their module
first (``orders.gateway:`` is :mod:`daemon.orders.gateway`); the rest are
defined here. This is the only drawing of the tree: other modules point here
rather than draw their part again, and ``tests/test_errors_drawing.py`` checks
that every public subclass of :class:`TradingdError` appears in it exactly
once, under its own base. (Private classes such as ``supervise._StartAborted``
never leave their module and are not drawn.)

Retryable and terminal errors are different classes, so a ``except`` clause
states a policy rather than inspecting messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NotRequired, Protocol, TypedDict, Unpack


class TradingdError(Exception):
    """Base class of every error tradingd raises on purpose."""


class ConfigError(TradingdError):
    """The configuration is invalid.

    Raised by the loader with *every* problem found, not only the first, so an
    operator fixes a file in one pass. ``problems`` holds one line per problem,
    each naming the file, the dotted key path and (where known) the line.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("\n".join(self.problems) if self.problems else "invalid configuration")


class SecretError(TradingdError):
    """A referenced secret could not be resolved.

    The message names the *reference* (credential name, file path or variable
    name), never the secret's value.
    """


class SupervisionError(TradingdError):
    """Base class of errors raised by supervisors."""


class ControlError(TradingdError):
    """The daemon's control socket could not be reached or gave a bad answer."""


class TransientError(TradingdError):
    """A failure that a bounded retry with backoff may cure."""


class RateLimitedError(TransientError):
    """The peer asked us to slow down; wait ``retry_after_s`` before the next call."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AmbiguousOutcomeError(TradingdError):
    """The request may or may not have taken effect.

    Never retried automatically: the caller must find out (for orders: query the
    venue by client order id) before doing anything that could repeat the effect.
    """


class PermanentError(TradingdError):
    """A failure that no retry can cure (rejects, validation, decode errors)."""


class CircuitOpenError(TradingdError):
    """A circuit breaker is open; the call was rejected without being attempted."""


class ChildFailure:
    """One recorded failure of a supervised child (for escalation reports)."""

    __slots__ = ("at", "child", "error")

    def __init__(self, child: str, error: BaseException, at: float) -> None:
        self.child = child
        self.error = error
        self.at = at

    def __repr__(self) -> str:
        error = f"{type(self.error).__name__}: {self.error}"
        return f"ChildFailure({self.child!r}, {error}, at={self.at:.3f})"


class EscalationError(SupervisionError):
    """A supervisor exceeded its restart intensity and gave up.

    Raised to the supervisor's parent after all of its children were stopped in
    reverse start order. ``failures`` are the failures inside the intensity
    period that caused it (oldest first).
    """

    def __init__(self, supervisor: str, failures: Sequence[ChildFailure]) -> None:
        self.supervisor = supervisor
        self.failures: tuple[ChildFailure, ...] = tuple(failures)
        last = self.failures[-1] if self.failures else None
        detail = f"; last: {last.child}: {type(last.error).__name__}: {last.error}" if last else ""
        super().__init__(
            f"supervisor {supervisor!r} exceeded its restart intensity "
            f"({len(self.failures)} failures){detail}"
        )


class StartTimeoutError(SupervisionError):
    """A child did not call ``task_status.started()`` within its start deadline."""


class ChildStartError(SupervisionError):
    """A child failed before reporting ready."""


class PoolFullError(SupervisionError):
    """A dynamic pool already runs its maximum number of children."""


class StaleHeartbeatError(SupervisionError):
    """A child declared a heartbeat interval and missed it beyond its tolerance.

    Recorded as the failure of the child the supervisor cancelled and restarted.
    """


class UnexpectedExitError(SupervisionError):
    """A permanent child returned although it is meant to run until stopped.

    Recorded as the failure whose restart counts toward the intensity.
    """


class CircuitRejectedError(CircuitOpenError):
    """A :class:`~daemon.resilience.CircuitBreaker` rejected a call without attempting it.

    Raised immediately (no waiting) when the breaker is OPEN, or HALF_OPEN with
    all of its trial slots taken. ``state`` is the breaker's state name at the
    time (``"open"`` or ``"half_open"``); ``retry_after_s`` is how long until the
    breaker lets a trial call through, or ``None`` when that is unknown: forced
    open (only a manual reset closes it), or half-open with its trials in flight.
    """

    def __init__(
        self, message: str, *, breaker: str, state: str, retry_after_s: float | None
    ) -> None:
        super().__init__(message)
        self.breaker = breaker
        self.state = state
        self.retry_after_s = retry_after_s


class RetryExhaustedError(TradingdError):
    """A bounded retry gave up while the failure was still retryable.

    Raised by :class:`~daemon.resilience.RetryPolicy` when its attempt or
    elapsed-time budget runs out, or when a ``Retry-After`` asks for a wait that
    would not fit in what is left of the budget. It is deliberately *not* a
    :class:`TransientError`: an outer retry must not multiply the inner one's
    attempts (that is how retry storms start).

    The last outcome is kept: ``last_error`` (also the ``__cause__``) when the
    last attempt raised, ``last_result`` when it returned a value that the
    classifier wanted retried (e.g. an HTTP 503 response). ``reason`` is one of
    ``"attempts_exhausted"``, ``"elapsed_exhausted"`` and
    ``"retry_after_exceeds_budget"``; in the latter case ``retry_after_s`` is the
    wait the peer asked for, so the caller can freeze its rate limiter.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        attempts: int,
        elapsed_s: float,
        waited_s: float,
        last_error: BaseException | None = None,
        last_result: object = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.attempts = attempts
        self.elapsed_s = elapsed_s
        self.waited_s = waited_s
        self.last_error = last_error
        self.last_result = last_result
        self.retry_after_s = retry_after_s


# --------------------------------------------------------------------------- venues


class VenueErrorFields(TypedDict):
    """The keyword arguments every :class:`VenueError` takes (for typed subclasses)."""

    venue: str
    code: NotRequired[int | None]
    venue_message: NotRequired[str | None]
    http_status: NotRequired[int | None]
    endpoint: NotRequired[str | None]


class VenueError(TradingdError):
    """A call to a trading venue failed; the venue's own words are kept.

    Never raised itself: every concrete subclass also derives from the policy
    class that says what to do (:class:`PermanentError`, :class:`TransientError`,
    :class:`RateLimitedError`, :class:`AmbiguousOutcomeError`), so callers can
    catch by policy and still read the venue's ``code`` (e.g. ``-2010``),
    ``venue_message``, ``http_status`` and ``endpoint`` (method and path, never
    the query string: it carries the signature). Messages never contain API
    keys, secrets or signatures.
    """

    def __init__(
        self,
        message: str,
        *,
        venue: str,
        code: int | None = None,
        venue_message: str | None = None,
        http_status: int | None = None,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.venue = venue
        self.code = code
        self.venue_message = venue_message
        self.http_status = http_status
        self.endpoint = endpoint


class VenueRejectedError(VenueError, PermanentError):
    """The venue definitively refused the request (4xx with a venue code).

    Nothing took effect; repeating the same request gets the same answer.
    """


class OrderRejectedError(VenueRejectedError):
    """-2010: the venue rejected a new order (balance, market closed, would take, …)."""


class DuplicateOrderError(OrderRejectedError):
    """-2010 "Duplicate order sent.": an *open* order already uses this client id.

    Proof that an order with that id exists and is open; it is not an error of
    the intent. On Binance the id becomes free again once that order is
    closed, so this answer cannot be expected for a resend after a fill.
    """


class FilterFailureError(OrderRejectedError):
    """-1013 (or -2010 "Filter failure: …"): the order broke a symbol filter.

    ``filter_type`` names the filter (``"PRICE_FILTER"``, ``"LOT_SIZE"``,
    ``"NOTIONAL"``, …) when the venue said which.
    """

    def __init__(
        self, message: str, *, filter_type: str | None = None, **fields: Unpack[VenueErrorFields]
    ) -> None:
        super().__init__(message, **fields)
        self.filter_type = filter_type


class OrderNotFoundError(VenueRejectedError):
    """-2013: the queried order does not exist.

    Proof of absence only once the venue has had time to make a new order
    visible to queries; a reconciler should allow for that lag.
    """


class CancelRejectedError(VenueRejectedError):
    """-2011: the cancel was refused ("Unknown order sent.").

    The order is unknown *or already closed* (filled, canceled, expired): not a
    proof that it never existed. Query it to learn which.
    """


class TimestampOutOfWindowError(VenueRejectedError):
    """-1021: the request's timestamp was outside ``recvWindow`` (or ahead of the server).

    The request was refused before processing. Raised after the client has
    already re-synced its clock and resent once.
    """


class SignatureError(VenueRejectedError):
    """-1022: the request's signature did not verify (wrong secret or encoding bug)."""


class ApiKeyRejectedError(VenueRejectedError):
    """-2014/-2015: the API key's format, the key itself, the IP or its permissions were refused."""


class ForbiddenError(VenueRejectedError):
    """HTTP 403: the venue's web application firewall refused the request."""


class VenueRequestError(VenueError, PermanentError):
    """The request could not be made at all (invalid URL, unsupported protocol, redirects)."""


class VenueDecodeError(VenueError, PermanentError):
    """An answer or stream frame could not be decoded into the model.

    ``raw`` is the payload as received (``bytes`` or ``str``), for dead letters
    and diagnosis; the message shows only a short prefix of it.
    """

    def __init__(
        self, message: str, *, raw: bytes | str, **fields: Unpack[VenueErrorFields]
    ) -> None:
        super().__init__(message, **fields)
        self.raw = raw


class VenueUnavailableError(VenueError, TransientError):
    """The venue did not process the request; a bounded retry may help.

    Connect errors (the request never left), overload answers (-1001, -1008),
    and 5xx or timeouts on *queries*. For an order request this class means
    "not sent" (connect failure): it is never used when the order may exist.
    """


class VenueRateLimitedError(VenueError, RateLimitedError):
    """The venue (429, 418, -1003, -1015) or our own limiter said slow down.

    ``retry_after_s`` is the venue's ``Retry-After`` (or the remaining local
    freeze); ``banned`` is true for 418 (an IP ban). ``http_status is None``
    means the local limiter could not admit the request within its wait
    budget: the request was never sent.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        banned: bool = False,
        **fields: Unpack[VenueErrorFields],
    ) -> None:
        super().__init__(message, **fields)
        self.retry_after_s = retry_after_s
        self.banned = banned


class VenueOutcomeUnknownError(VenueError, AmbiguousOutcomeError):
    """An order request may have taken effect: the order may exist.

    HTTP 5xx, -1000/-1006/-1007, a timeout or a broken connection after the
    request left, or an answer that could not be decoded. Never retried: find
    out by querying the client order id (docs/ARCHITECTURE.md §4 Orders).
    """


# --------------------------------------------------------------------------- store


class StoreError(TradingdError):
    """A store operation failed.

    ``path`` is the database file; ``sqlite_error`` the SQLite error name
    (``"SQLITE_FULL"``) when the cause was an SQLite error.
    """

    def __init__(
        self, message: str, *, path: str | None = None, sqlite_error: str | None = None
    ) -> None:
        super().__init__(message)
        self.path = path
        self.sqlite_error = sqlite_error


class StoreUnavailableError(StoreError, TransientError):
    """The store cannot write (or read) right now; the condition can clear.

    Nothing committed before is lost. Retry with backoff; health is unhealthy
    while writes fail.
    """


class StoreBusyError(StoreUnavailableError):
    """SQLITE_BUSY/SQLITE_LOCKED: another connection held the lock past the busy timeout."""


class StoreFullError(StoreUnavailableError):
    """SQLITE_FULL or ENOSPC: the disk (or the database's ``max_page_count``) is full."""


class StoreReadOnlyError(StoreUnavailableError):
    """SQLITE_READONLY, EROFS, EACCES: the file or its file system refuses writes."""


class StoreIOError(StoreUnavailableError):
    """SQLITE_IOERR or another OSError: the disk or file system misbehaved."""


class StoreCorruptError(StoreError, PermanentError):
    """The file is not an SQLite database, or the database is malformed.

    Never retried and never "repaired" automatically: an operator runs
    ``integrity_check`` and restores from a backup.
    """


class StoreVersionError(StoreError, PermanentError):
    """The file's schema version is newer than this code knows.

    Raised at open, before anything is written: an older daemon must never
    touch a database a newer one has migrated.
    """

    def __init__(self, message: str, *, path: str, file_version: int, code_version: int) -> None:
        super().__init__(message, path=path)
        self.file_version = file_version
        self.code_version = code_version


class StoreOpenError(StoreError, PermanentError):
    """The database file cannot be opened (missing directory, permissions, not ours)."""


class StoreMigrationError(StoreError, PermanentError):
    """A schema migration failed; its transaction was rolled back, the file is unchanged."""


class StoreDataError(StoreError, PermanentError):
    """The schema refused a row (CHECK/NOT NULL constraint, integer out of range).

    Only the chunk containing the row fails; the caller dead-letters it.
    """


class StoreClosedError(StoreError, PermanentError):
    """The store was closed; no further calls are accepted."""


class GapTransitionError(StoreError, PermanentError):
    """A gap was asked to change state along an edge the transition table forbids."""


class LeaseLostError(PermanentError):
    """This daemon no longer holds the lease of an account (or never did here).

    Raised inside the store transaction of an order change (the fencing check
    of :mod:`daemon.store.lease_store`) when the account's lease row does not
    carry this daemon's owner and fencing token any more: another daemon took
    the account over. Nothing was changed. Retrying cannot help: the daemon
    stops trading the account (:mod:`daemon.orders.lease`).

    Attributes:
        account: The account.
        holder: Who holds the lease now (``owner`` and token), for the log.
    """

    def __init__(self, account: str, detail: str, *, holder: str | None = None) -> None:
        super().__init__(f"lease of account {account!r} lost: {detail}")
        self.account = account
        self.holder = holder


# --------------------------------------------------------------------------- risk


class CodedReason(Protocol):
    """A coded reject reason (``daemon.risk.RiskReason`` is one)."""

    @property
    def code(self) -> str: ...

    @property
    def message(self) -> str: ...


class RiskRejectedError(PermanentError):
    """Pre-trade risk refused an order; ``reasons`` holds every coded reason.

    Permanent: resubmitting the same order is refused again until something
    changes (the order, the limits, the trading state, the position, or time
    for the order rate). The admin API maps it to 422.
    """

    def __init__(self, reasons: Sequence[CodedReason]) -> None:
        self.reasons: tuple[CodedReason, ...] = tuple(reasons)
        detail = "; ".join(f"{r.code}: {r.message}" for r in self.reasons)
        super().__init__(f"rejected by pre-trade risk: {detail or 'no reason given'}")

    @property
    def codes(self) -> tuple[str, ...]:
        """The reason codes, in order."""
        return tuple(r.code for r in self.reasons)


class ReservationStateError(PermanentError):
    """A risk reservation was asked for a transition its table forbids.

    For example rolling back a committed reservation (its intent exists and
    may be sent), releasing one that was never committed, or a second
    committed reservation for a client order id that already has one.
    """
