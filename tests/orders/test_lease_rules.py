"""The lease rules and the send window, as a model: two daemons, their clocks, pauses, expiry.

:func:`daemon.store.lease_rules.decide` is the store's side (what a claim
leaves in the row, on the store's clock); :func:`daemon.orders.lease.lease_end`
and :func:`daemon.orders.lease.send_window` are the daemon's side (until when
its own clock says the lease is surely its own, and whether a send section
may start). The state machine drives both with two daemons whose clocks
have their own offsets and rates (within the drift margin), requests that
take any time to reach the store and to come back, and daemons that pause
anywhere — between the window check and the send included. It checks:

* the token only grows, and grows exactly on a new tenure;
* **never two daemons with an open send window at once**;
* **every send happens while its token is still the row's token** (no
  other daemon has taken the account over yet), i.e. a send of a lost
  tenure is impossible, however long its daemon was frozen.
"""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from daemon.orders.lease import DRIFT, lease_end, send_window
from daemon.store.lease_rules import (
    Claim,
    LeaseRow,
    decide,
    fence_ok,
    released,
    vacant,
)
from tests.helpers.fuzzing import fuzz_settings

TTL_MS = 10_000
DEADLINE_S = 4.0


def test_decide_takes_free_leases_renews_its_own_and_refuses_the_rest() -> None:
    row = vacant("a")
    a1 = decide(row, owner="A", holder="A1", now_ms=1000, ttl_ms=TTL_MS, claim=Claim.TAKE)
    assert a1 == LeaseRow("a", "A", "A1", 1, 11_000, 1000, 1000)
    # B cannot take a held lease, even at start; A's renewal keeps the token.
    assert decide(a1, owner="B", holder="B1", now_ms=5000, ttl_ms=TTL_MS, claim=Claim.START) is None
    renewed = decide(a1, owner="A", holder="A1", now_ms=5000, ttl_ms=TTL_MS, claim=Claim.RENEW)
    assert renewed is not None and (renewed.token, renewed.expires_at_ms) == (1, 15_000)
    # Expired: B takes it (token + 1), then A cannot renew.
    b = decide(renewed, owner="B", holder="B1", now_ms=15_000, ttl_ms=TTL_MS, claim=Claim.TAKE)
    assert b is not None and (b.owner, b.token, b.acquired_at_ms) == ("B", 2, 15_000)
    assert (
        decide(b, owner="A", holder="A1", now_ms=15_001, ttl_ms=TTL_MS, claim=Claim.RENEW) is None
    )
    # A restart of B takes it at start only, with a new token; not by TAKE while held.
    assert decide(b, owner="B", holder="B2", now_ms=16_000, ttl_ms=TTL_MS, claim=Claim.TAKE) is None
    b2 = decide(b, owner="B", holder="B2", now_ms=16_000, ttl_ms=TTL_MS, claim=Claim.START)
    assert b2 is not None and (b2.holder, b2.token) == ("B2", 3)
    # Its own expired lease, nobody in between: renewed, same token (nobody else wrote).
    late = decide(b2, owner="B", holder="B2", now_ms=99_000, ttl_ms=TTL_MS, claim=Claim.RENEW)
    assert late is not None and late.token == 3
    # Release: expired at once, token kept; only by its holder.
    assert released(b2, owner="B", holder="B1", now_ms=17_000) is None
    gone = released(b2, owner="B", holder="B2", now_ms=17_000)
    assert gone is not None and gone.expired(17_000) and gone.token == 3
    assert fence_ok(b2, owner="B", token=3) and not fence_ok(b2, owner="B", token=2)
    assert not fence_ok(None, owner="B", token=3) and not fence_ok(b2, owner="A", token=3)
    with pytest.raises(ValueError):
        decide(row, owner="A", holder="A1", now_ms=0, ttl_ms=0, claim=Claim.TAKE)


def test_the_send_window_closes_section_deadline_before_the_lease_ends() -> None:
    end = lease_end(100.0, 20.0)
    assert end == pytest.approx(100.0 + 20.0 * (1 - DRIFT))
    assert send_window(end, 100.0, DEADLINE_S) == pytest.approx(end - 100.0 - DEADLINE_S)
    assert send_window(end, end - DEADLINE_S, DEADLINE_S) == pytest.approx(0.0)
    assert send_window(None, 0.0, DEADLINE_S) == float("-inf")


@given(
    sent=st.floats(0, 1e6),
    delay=st.floats(0, 30),
    ttl=st.floats(5, 120),
    deadline=st.floats(0.1, 4),
    rate=st.floats(1 - DRIFT, 1 + DRIFT),
)
def test_no_send_can_leave_after_the_store_expiry(
    sent: float, delay: float, ttl: float, deadline: float, rate: float
) -> None:
    """The latest request a section may send (window checked at its last instant, sent
    at its deadline's last instant) leaves before the store's expiry, on any clock whose
    rate is within the drift margin: the store set expiry = its now (>= sent) + ttl."""
    local_sent = 0.0
    end = lease_end(local_sent, ttl)
    last_check = end - deadline  # the window is open strictly before this
    assert send_window(end, last_check, deadline) <= 1e-9  # (float rounding)
    latest_send_local = last_check + deadline
    latest_send_real = sent + (latest_send_local - local_sent) / rate
    assert latest_send_real <= sent + delay + ttl + 1e-9


@attrs.define
class Request:
    """A claim on its way: sent (daemon clock), decided (store), or answered."""

    sent_local: float
    claim: Claim
    result: LeaseRow | None = None
    decided: bool = False


@attrs.define
class Daemon:
    name: str
    offset: float  # seconds
    rate: float  # local seconds per real second
    holder: str
    token: int | None = None
    valid_until: float | None = None  # local clock
    request: Request | None = None
    sends: int = 0

    def local(self, real_ms: int) -> float:
        return self.offset + self.rate * real_ms / 1000


class LeaseModel(RuleBasedStateMachine):
    """Two daemons (A, B), one lease row, real time in milliseconds."""

    def __init__(self) -> None:
        super().__init__()
        self.t = 0
        self.row = vacant("acct")
        self.daemons: dict[str, Daemon] = {}
        self.tokens_seen = [0]

    @rule(
        offset_a=st.floats(-1e5, 1e5),
        offset_b=st.floats(-1e5, 1e5),
        rate_a=st.sampled_from([1.0, 1 - DRIFT / 2, 1 + DRIFT]),
        rate_b=st.sampled_from([1.0, 1 - DRIFT / 2, 1 + DRIFT]),
    )
    @precondition(lambda self: not self.daemons)
    def boot(self, offset_a: float, offset_b: float, rate_a: float, rate_b: float) -> None:
        self.daemons = {
            "A": Daemon("A", offset_a, rate_a, "A/1"),
            "B": Daemon("B", offset_b, rate_b, "B/1"),
        }

    @rule(
        dt=st.one_of(
            st.sampled_from([1, 500, 1000, 3000, 4000, 6000, 9000, 10_000, 11_000]),
            st.integers(0, 15_000),
        )
    )
    def time_passes(self, dt: int) -> None:
        """Real time moves; any daemon that does nothing meanwhile is 'paused'."""
        self.t += dt

    @precondition(lambda self: bool(self.daemons))
    @rule(name=st.sampled_from("AB"))
    def claim_round_trip(self, name: str) -> None:
        """A claim sent, decided and answered with no pause (the common case)."""
        if self.daemons[name].request is None:
            self.send_claim(name, Claim.TAKE)
            self.store_decides(name)
            self.answer_arrives(name)

    @precondition(lambda self: bool(self.daemons))
    @rule(name=st.sampled_from("AB"), claim=st.sampled_from([Claim.TAKE, Claim.RENEW]))
    def send_claim(self, name: str, claim: Claim) -> None:
        d = self.daemons[name]
        if d.request is None:
            d.request = Request(d.local(self.t), claim)

    @precondition(lambda self: bool(self.daemons))
    @rule(name=st.sampled_from("AB"))
    def store_decides(self, name: str) -> None:
        d = self.daemons[name]
        if d.request is None or d.request.decided:
            return
        new = decide(
            self.row,
            owner=d.name,
            holder=d.holder,
            now_ms=self.t,
            ttl_ms=TTL_MS,
            claim=d.request.claim,
        )
        d.request.decided = True
        d.request.result = new
        if new is not None:
            assert new.token >= self.row.token  # the token only grows
            if new.token != self.row.token:
                assert new.token == self.row.token + 1
                assert new.acquired_at_ms == self.t
            self.row = new
            self.tokens_seen.append(new.token)

    @precondition(lambda self: bool(self.daemons))
    @rule(name=st.sampled_from("AB"))
    def answer_arrives(self, name: str) -> None:
        d = self.daemons[name]
        if d.request is None or not d.request.decided:
            return
        result, sent = d.request.result, d.request.sent_local
        d.request = None
        if result is None:
            d.token, d.valid_until = None, None  # refused: not ours (any more)
            return
        d.token = result.token
        d.valid_until = lease_end(sent, TTL_MS / 1000)

    @precondition(lambda self: bool(self.daemons))
    @rule(
        name=st.sampled_from("AB"),
        pause=st.one_of(st.sampled_from([0, 1000, 3999, 4000, 5000]), st.integers(0, 30_000)),
        other_claims=st.booleans(),
    )
    def send_section(self, name: str, pause: int, other_claims: bool) -> None:
        """A send section: the window is checked; the daemon freezes for ``pause`` (the
        other daemon may claim meanwhile); the request leaves only if the section's
        deadline, counted from the check, has not passed (a frozen daemon that wakes
        late is cut at its first checkpoint)."""
        d = self.daemons[name]
        checked = d.local(self.t)
        if send_window(d.valid_until, checked, DEADLINE_S) <= 0:
            return
        token = d.token
        self.t += pause
        if other_claims:
            self.claim_round_trip("B" if name == "A" else "A")
        if d.local(self.t) >= checked + DEADLINE_S:
            return  # cut by the deadline: nothing sent
        # The send happens under a tenure nobody has taken over.
        assert token == self.row.token and self.row.owner == d.name
        d.sends += 1

    @invariant()
    def never_two_open_windows(self) -> None:
        open_ = [
            d.name
            for d in self.daemons.values()
            if send_window(d.valid_until, d.local(self.t), DEADLINE_S) > 0
        ]
        assert len(open_) <= 1, open_
        if open_:
            [name] = open_
            assert self.row.owner == name  # the row names the one with the window

    @invariant()
    def tokens_only_grow(self) -> None:
        assert self.tokens_seen == sorted(self.tokens_seen)


LeaseModel.TestCase.settings = settings(fuzz_settings(300), stateful_step_count=60, deadline=None)
TestLeaseModel = LeaseModel.TestCase
