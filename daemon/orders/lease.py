"""Account leases of one daemon: which accounts it trades, the send window, the keeper.

Several daemons may share one store; each account is traded by exactly one
of them at a time (the rules and the fencing token:
:mod:`daemon.store.lease_rules`). :class:`AccountLeases` is this daemon's
side of it. Every account configured here is in one state:

* **standby** — another daemon holds its lease; nothing of it runs here and
  order entry answers 503 for it;
* **taking over** — this daemon has just taken the lease from another one
  and waits, before it touches the account's orders, until the old lease's
  expiry (on the store's clock) plus ``section_deadline_s`` plus
  ``query_lag_s``: by then any send section of the old owner has ended and
  what it sent is visible to queries, so its SENDING rows can be treated as
  UNKNOWN and resolved by query as at start-up;
* **active** — this daemon trades it: it is part of the running pipeline
  incarnation;
* **lost** — this daemon held it and does not any more (a renewal found
  another holder, the lease ran out by our own clock before a renewal
  succeeded, or an order change was fenced off with
  :class:`~daemon.errors.LeaseLostError`): the account stops here at once
  and health is degraded, saying why.

**The send window.** The venue knows nothing of fencing tokens, so the
window around the send itself is closed by time. Each renewal is timed from
*before* its request left (conservative): the lease is ours, by our own
monotonic clock, until ``sent + lease_ttl_s`` (less a drift margin) — the
store set its expiry later than that, on its clock. The executor starts a
send section only while more than ``section_deadline_s`` of that is left
(:meth:`AccountLeases.send_window`), and the section's deadline is counted
from that check, so no request of ours leaves after our lease has expired
on the store's clock. A process frozen (SIGSTOP, a long GC, a VM pause) and
woken late finds its window closed and does not send; its store writes fail
on the fencing token once another daemon took the account.

**The keeper** (:meth:`AccountLeases.run`) claims every configured account
every ``lease_renew_s``: it renews the ones held (the token stays), takes
expired ones (the token grows), and notices the ones lost. A change that
needs the pipeline rebuilt — an account lost, or a takeover whose wait is
over — sets :attr:`AccountLeases.changed`; the order service then drains the
running incarnation and starts one over the new set of active accounts
(:func:`daemon.orders.lease_run.run_leased`).

SQLite has one daemon per file: its leases are always granted, through the
same code.
"""

from __future__ import annotations

import enum
import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import attrs
import trio

from daemon.config import OrdersConfig
from daemon.errors import StoreError
from daemon.health import HealthLevel
from daemon.orders.gateway import EntryUnavailableError
from daemon.store.lease_rules import Claim, LeaseGrant, LeaseRow
from daemon.store.lease_store import LeaseStore

__all__ = [
    "DRIFT",
    "AccountLease",
    "AccountLeases",
    "LeaseState",
    "default_instance_id",
    "lease_end",
    "send_window",
]

log = logging.getLogger("tradingd.orders.lease")

#: Fraction of the ttl not counted on, for our clock running slower than the store's.
DRIFT: Final = 0.001
#: The environment variable a systemd template unit sets to its instance name.
INSTANCE_ENV: Final = "TRADINGD_INSTANCE"


def lease_end(sent: float, ttl_s: float) -> float:
    """Until when (our clock) a lease renewed by a request sent at ``sent`` is surely ours.

    The store set its expiry to *its* now + ttl when the request arrived, which
    is later than ``sent``; the drift margin covers our clock running slower.
    """
    return sent + ttl_s * (1 - DRIFT)


def send_window(valid_until: float | None, now: float, section_deadline_s: float) -> float:
    """Seconds during which a send section may still start (≤ 0: none): a section
    started now ends, at the latest, ``section_deadline_s`` later, while the lease holds."""
    if valid_until is None:
        return float("-inf")
    return valid_until - now - section_deadline_s


def default_instance_id(environ: dict[str, str] | None = None) -> str:
    """This daemon's owner id when ``[orders] instance_id`` is empty: the host name,
    with ``@INSTANCE`` when ``$TRADINGD_INSTANCE`` is set (``tradingd@NAME.service``)."""
    env = os.environ if environ is None else environ
    host = socket.gethostname() or "localhost"
    instance = env.get(INSTANCE_ENV, "").strip()
    return f"{host}@{instance}" if instance else host


class LeaseState(enum.Enum):
    """An account's state in this daemon (see the module docstring)."""

    STANDBY = "standby"
    TAKING_OVER = "taking_over"
    ACTIVE = "active"
    LOST = "lost"


@attrs.define
class AccountLease:
    """What this daemon knows of one account's lease."""

    account: str
    state: LeaseState = LeaseState.STANDBY
    #: Our fencing token while we hold it.
    token: int | None = None
    #: Our clock (``trio.current_time``): the lease is ours until then, at the least.
    valid_until: float | None = None
    #: Our clock: when a takeover's wait ends.
    ready_at: float | None = None
    #: The row as last seen, the store's clock then, and ours then.
    row: LeaseRow | None = None
    seen_server_ms: int | None = None
    seen_at: float | None = None
    #: Why it is lost or not ours (for the log, ``/status`` and health).
    reason: str | None = None


class AccountLeases:
    """This daemon's account leases (see the module docstring).

    Args:
        store: The lease table.
        settings: ``[orders]`` (``lease_ttl_s``, ``lease_renew_s``,
            ``section_deadline_s``, ``query_lag_s``, ``instance_id``).
        accounts: The accounts configured here.
        owner: This daemon's instance id (stable across restarts).
        holder: This run's id (fresh per process by default).
        clock: Monotonic seconds (Trio's clock).
    """

    def __init__(
        self,
        store: LeaseStore,
        settings: OrdersConfig,
        accounts: Iterable[str],
        *,
        owner: str,
        holder: str | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.store = store
        self.settings = settings
        self.owner = owner
        self.holder = holder or f"{owner}/{os.getpid()}/{secrets.token_hex(4)}"
        self.clock = clock
        self.leases = {name: AccountLease(name) for name in sorted(set(accounts))}
        #: Account → our fencing token, read by the store's fencing check.
        self.tokens: dict[str, int] = {}
        #: Set when the running pipeline must be rebuilt (an account lost or ready).
        self.changed = trio.Event()
        #: The accounts of the running pipeline incarnation.
        self.running: frozenset[str] = frozenset()
        #: Called after a renewal reopened send windows (the pipeline queues PENDING again).
        self.on_renewed: Callable[[], None] | None = None
        self.rounds = 0
        self.failed_rounds = 0
        self.last_error: str | None = None
        self.takeovers = 0
        self.losses = 0

    # ------------------------------------------------------------------ queries

    def state(self, account: str) -> LeaseState | None:
        lease = self.leases.get(account)
        return None if lease is None else lease.state

    def trades(self, account: str) -> bool:
        """Whether ``account`` is part of the running incarnation (and not lost since)."""
        lease = self.leases.get(account)
        return account in self.running and lease is not None and lease.state is LeaseState.ACTIVE

    def active(self) -> frozenset[str]:
        return frozenset(a for a, lease in self.leases.items() if lease.state is LeaseState.ACTIVE)

    def send_window(self, account: str, now: float | None = None) -> float:
        """Seconds during which a send section of ``account`` may still *start* (≤ 0:
        none): what is left of the lease by our clock, less ``section_deadline_s``."""
        lease = self.leases.get(account)
        if lease is None or lease.state is not LeaseState.ACTIVE:
            return float("-inf")
        at = self.clock() if now is None else now
        return send_window(lease.valid_until, at, self.settings.section_deadline_s)

    def admit(self, request: Mapping[str, Any] | object) -> None:
        """Order entry's check: :class:`~daemon.orders.gateway.EntryUnavailableError` (503)
        when the request's account is configured here but traded by another daemon."""
        account = request.get("account") if isinstance(request, Mapping) else None
        if isinstance(account, str) and (why := self.refusal(account)) is not None:
            raise EntryUnavailableError(why, retry_after_s=self.settings.lease_renew_s)

    def refusal(self, account: str) -> str | None:
        """Why entry must refuse ``account`` here now (``None``: it trades it)."""
        lease = self.leases.get(account)
        if lease is None or self.trades(account):
            return None
        holder = lease.row.owner if lease.row is not None and lease.row.owner else None
        if lease.state is LeaseState.TAKING_OVER:
            return f"account {account} is being taken over by this daemon; submit again shortly"
        if lease.state is LeaseState.ACTIVE:
            return f"account {account} is starting here; submit again shortly"
        where = f"daemon {holder!r}" if holder else "another daemon"
        return f"account {account} is traded by {where} ({lease.state.value} here)"

    # ------------------------------------------------------------------ claims

    async def start(self) -> None:
        """The first claim (a restart takes its own owner's leases back at once)."""
        await self._round(Claim.START)

    async def _round(self, claim: Claim) -> None:
        sent = self.clock()
        try:
            grants = await self.store.claim(
                self.leases,
                owner=self.owner,
                holder=self.holder,
                ttl_s=self.settings.lease_ttl_s,
                claim=claim,
            )
        except StoreError as exc:
            self.failed_rounds += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("orders: lease renewal failed: %s", self.last_error)
            if claim is Claim.START:
                raise
            self._expire_unrenewed()
            return
        self.rounds += 1
        self.last_error = None
        reopened = False
        for grant in grants:
            reopened |= self._apply(grant, sent)
        if reopened and self.on_renewed is not None:
            self.on_renewed()

    def _apply(self, grant: LeaseGrant, sent: float) -> bool:
        """Take one claim's outcome in; whether a send window may have reopened."""
        lease = self.leases[grant.account]
        lease.row, lease.seen_server_ms, lease.seen_at = grant.row, grant.now_ms, self.clock()
        if not grant.held:
            if lease.state in (LeaseState.ACTIVE, LeaseState.TAKING_OVER):
                self.lost(grant.account, f"held by {grant.row.owner} (token {grant.row.token})")
            elif lease.state is LeaseState.STANDBY:
                lease.reason = f"held by {grant.row.owner} (token {grant.row.token})"
            return False
        valid_until = lease_end(sent, self.settings.lease_ttl_s)
        if lease.token == grant.row.token and lease.state is not LeaseState.LOST:
            lease.valid_until = valid_until  # renewed: same tenure
            return lease.state is LeaseState.ACTIVE
        # A new tenure (a take, or a start): no earlier writes of ours are trusted.
        if lease.state is LeaseState.ACTIVE:
            self.lost(grant.account, "the lease changed hands while we held it")
        lease.token = grant.row.token
        lease.valid_until = valid_until
        self.tokens[grant.account] = grant.row.token
        wait = self._takeover_wait(grant)
        lease.state = LeaseState.TAKING_OVER
        lease.ready_at = self.clock() + wait
        lease.reason = None
        if grant.taken_over:
            self.takeovers += 1
            log.warning(
                "orders: account %s taken over from %s (token %d); its orders are "
                "recovered in %.1f s (old lease's expiry + section_deadline_s + query_lag_s)",
                grant.account,
                grant.previous.owner,
                grant.row.token,
                wait,
            )
        else:
            log.info("orders: account %s leased here (token %d)", grant.account, grant.row.token)
        if wait <= 0:
            self._ready(lease)
        return False

    def _takeover_wait(self, grant: LeaseGrant) -> float:
        """Seconds until another owner's sends are over and visible (0: none to wait for)."""
        if not grant.taken_over:
            return 0.0  # never held, or ours (a restart: recovered as at any start)
        s = self.settings
        old_left = max(0, grant.previous.expires_at_ms - grant.now_ms) / 1000
        return old_left + s.section_deadline_s + s.query_lag_s

    def _ready(self, lease: AccountLease) -> None:
        lease.state = LeaseState.ACTIVE
        lease.ready_at = None
        self.changed.set()

    def _expire_unrenewed(self) -> None:
        now = self.clock()
        for lease in self.leases.values():
            if lease.state in (LeaseState.ACTIVE, LeaseState.TAKING_OVER) and (
                lease.valid_until is not None and now >= lease.valid_until
            ):
                self.lost(lease.account, "not renewed before it ran out (store unreachable?)")

    def lost(self, account: str, reason: str) -> None:
        """Stop trading ``account`` here at once (a renewal or a fenced write said so)."""
        lease = self.leases.get(account)
        if lease is None or lease.state not in (LeaseState.ACTIVE, LeaseState.TAKING_OVER):
            return
        self.losses += 1
        lease.state = LeaseState.LOST
        lease.valid_until = None
        lease.ready_at = None
        lease.reason = reason
        self.tokens.pop(account, None)
        self.changed.set()
        log.error(
            "orders: lease of account %s lost (%s): this daemon stops trading it; its "
            "intents stay in the store for the daemon that holds it",
            account,
            reason,
        )

    # ------------------------------------------------------------------ loops

    def begin(self) -> frozenset[str]:
        """A new pipeline incarnation starts: its accounts (the active ones)."""
        self.changed = trio.Event()
        self.running = self.active()
        return self.running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The keeper: claim every ``lease_renew_s``; end takeover waits when due."""
        task_status.started()
        next_round = self.clock() + self.settings.lease_renew_s
        while True:
            due = [x.ready_at for x in self.leases.values() if x.ready_at is not None]
            wake = min([next_round, *due])
            await trio.sleep_until(wake)
            now = self.clock()
            for lease in self.leases.values():
                if lease.ready_at is not None and now >= lease.ready_at:
                    self._ready(lease)
            if now >= next_round:
                next_round = now + self.settings.lease_renew_s
                await self._round(Claim.TAKE)

    async def release(self) -> None:
        """Give up what this daemon holds (a clean stop: the next owner need not wait
        for the ttl). Best effort: a lease not released simply expires."""
        held = [a for a, x in self.leases.items() if x.token is not None]
        try:
            released = await self.store.release(held, owner=self.owner, holder=self.holder)
        except StoreError as exc:
            log.warning("orders: leases not released (they expire): %s", exc)
            return
        for account in released:
            lease = self.leases[account]
            lease.state, lease.token, lease.valid_until = LeaseState.STANDBY, None, None
            self.tokens.pop(account, None)
        if released:
            log.info("orders: leases released: %s", ", ".join(released))

    # ------------------------------------------------------------------ status

    def check(self) -> tuple[HealthLevel, str | None]:
        for key, message in self.settings.lease_problems():
            # The loader refuses this; a settings object built in code may not have.
            return HealthLevel.DEGRADED, f"orders: {key} {message}: nothing can be sent"
        lost = sorted(a for a, x in self.leases.items() if x.state is LeaseState.LOST)
        if lost:
            why = "; ".join(f"{a}: {self.leases[a].reason}" for a in lost)
            return HealthLevel.DEGRADED, f"orders: lease lost, not trading {why}"
        if self.last_error is not None:
            return HealthLevel.DEGRADED, f"orders: lease renewal failing ({self.last_error})"
        return HealthLevel.HEALTHY, None

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        accounts: dict[str, Any] = {}
        for name, lease in self.leases.items():
            row = lease.row
            expires_in = None
            if row is not None and lease.seen_server_ms is not None and lease.seen_at is not None:
                left_ms = row.expires_at_ms - lease.seen_server_ms
                expires_in = round(left_ms / 1000 - (now - lease.seen_at), 3)
            window = self.send_window(name, now)
            accounts[name] = {
                "state": lease.state.value,
                "owner": row.owner if row is not None else None,
                "token": row.token if row is not None else None,
                "expires_in_s": expires_in,
                "send_window_s": round(window, 3) if window != float("-inf") else None,
                "takeover_in_s": (
                    round(max(0.0, lease.ready_at - now), 3) if lease.ready_at is not None else None
                ),
                "reason": lease.reason,
            }
        return {
            "owner": self.owner,
            "holder": self.holder,
            "ttl_s": self.settings.lease_ttl_s,
            "renew_s": self.settings.lease_renew_s,
            "rounds": self.rounds,
            "failed_rounds": self.failed_rounds,
            "last_error": self.last_error,
            "takeovers": self.takeovers,
            "losses": self.losses,
            "accounts": accounts,
        }
