"""The clients of a torture scenario: order intents, duplicates, retries and cancels.

Several submitters post intents to the admin API (``POST /orders``): LIMIT
orders near the market (they rest, and fill later as the market moves), LIMIT
orders far from it (they rest until cancelled) and MARKET orders (they fill at
once: a blind resend of one would be a *second* order). Every intent has its
own ``message_id``; a client retries the same ``message_id`` on every
connection failure, timeout, 429 and 503 until it gets 200 or 202 — that
answer is what makes an intent *accepted* — and now and then two clients send
the same ``message_id`` at once. A canceller asks for the cancel of resting
LIMIT orders. The daemon's admin URL changes with every incarnation (port 0):
:attr:`Admin.base_url` follows it, and requests fail (connection refused) while
there is none, as a real client's would.
"""

from __future__ import annotations

import random
from collections import Counter
from decimal import Decimal
from typing import Any

import attrs
import httpx2
import trio

from daemon.torture.procs import SimProc
from daemon.torture.setup import ACCOUNT, SYMBOL

__all__ = ["Admin", "Answer", "ClientLog", "Workload"]

#: One request of a client (a frozen daemon makes it time out).
CLIENT_TIMEOUT_S = 3.0
#: Statuses a client retries with the same message_id (0: no answer at all).
RETRYABLE = frozenset({0, 429, 503})
#: Chance that an intent is sent by two clients at once (same message_id).
DUPLICATE_PROBABILITY = 0.15
#: Intent kinds and their weights.
KINDS = (("limit-near", 0.35), ("limit-far", 0.35), ("market", 0.30))
QUANTITY = "0.001"


@attrs.frozen
class Answer:
    status: int
    body: dict[str, Any]
    retry_after_s: float | None = None


class Admin:
    """A client of the daemon's admin API that follows it across restarts."""

    def __init__(self, token: str) -> None:
        self._token = token
        self._url: str | None = None
        self.http = httpx2.AsyncClient(
            trust_env=False,
            timeout=CLIENT_TIMEOUT_S,
            limits=httpx2.Limits(max_keepalive_connections=0),
        )

    @property
    def base_url(self) -> str | None:
        return self._url

    @base_url.setter
    def base_url(self, url: str | None) -> None:
        self._url = url

    async def request(self, method: str, path: str, body: Any = None) -> Answer:
        """One attempt; a transport failure (or no daemon) is status 0."""
        url = self._url
        if url is None:
            await trio.sleep(0.05)
            return Answer(0, {"error": "no daemon"})
        try:
            with trio.fail_after(CLIENT_TIMEOUT_S + 1.0):
                response = await self.http.request(
                    method,
                    f"{url}{path}",
                    json=body,
                    headers={"Authorization": f"Bearer {self._token}"},
                )
        except (httpx2.HTTPError, trio.TooSlowError, OSError) as exc:
            return Answer(0, {"error": f"{type(exc).__name__}: {exc}"})
        try:
            payload = response.json()
        except ValueError:
            payload = {"raw": response.text[:300]}
        retry_after = response.headers.get("retry-after")
        try:
            retry_s = float(retry_after) if retry_after else None
        except ValueError:
            retry_s = None
        return Answer(
            response.status_code,
            payload if isinstance(payload, dict) else {"raw": payload},
            retry_s,
        )

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self.http.aclose()


@attrs.define
class ClientLog:
    """The clients' side of the story."""

    #: message_id -> the intent's body as sent.
    bodies: dict[str, dict[str, str]] = attrs.Factory(dict)
    #: message_id -> client_order_id of the first 200/202.
    accepted: dict[str, str] = attrs.Factory(dict)
    #: (message_id, first id, other id): a later answer named another id.
    id_changes: list[tuple[str, str, str]] = attrs.Factory(list)
    #: message_id -> (status, body) of an answer neither success nor retryable.
    refused: dict[str, tuple[int, dict[str, Any]]] = attrs.Factory(dict)
    statuses: Counter[int] = attrs.Factory(Counter)
    retries: int = 0
    duplicates_sent: int = 0
    #: client_order_id -> the cancel request's answer status.
    cancels: dict[str, int] = attrs.Factory(dict)
    #: Accepted answers so far (a targeted kill waits for the next one).
    accepted_count: int = 0

    def note_accepted(self, message_id: str, coid: str) -> None:
        first = self.accepted.setdefault(message_id, coid)
        if first != coid:
            self.id_changes.append((message_id, first, coid))
        self.accepted_count += 1


class Workload:
    """The submitters and the canceller of one scenario."""

    def __init__(
        self,
        admin: Admin,
        sim: SimProc,
        *,
        prefix: str,
        seed: str,
        submitters: int,
        pace_s: tuple[float, float],
        kinds: tuple[tuple[str, float], ...] = KINDS,
        cancels: bool = True,
    ) -> None:
        self.admin = admin
        self.sim = sim
        self.prefix = prefix
        self.seed = seed
        self.submitters = submitters
        self.pace_s = pace_s
        self.kinds = kinds
        self.with_cancels = cancels
        self.log = ClientLog()
        self._next = 0
        self._mid = Decimal("30000")
        self._stopping = False

    def new_message_id(self, tag: str = "") -> str:
        self._next += 1
        return f"{self.prefix}-{tag}{self._next}"

    async def mid_price(self) -> Decimal:
        """The venue's mid price now (the last one known while it is down)."""
        try:
            market = await self.sim.control("GET", "/sim/market")
            book = market["symbols"][SYMBOL]
            bid, ask = Decimal(book["bestBid"]), Decimal(book["bestAsk"])
            self._mid = (bid + ask) / 2
        except Exception:  # the venue is down or its book empty: the last one known
            pass
        return self._mid

    async def body(self, rng: random.Random, kind: str | None = None) -> dict[str, str]:
        kind = kind or rng.choices([k for k, _ in self.kinds], [w for _, w in self.kinds])[0]
        side = rng.choice(("BUY", "SELL"))
        body = {
            "message_id": self.new_message_id(),
            "account": ACCOUNT,
            "symbol": SYMBOL,
            "side": side,
            "quantity": QUANTITY,
        }
        if kind == "market":
            body["type"] = "MARKET"
            return body
        mid = await self.mid_price()
        sign = -1 if side == "BUY" else 1
        away = Decimal(str(rng.uniform(0.0005, 0.004) if kind == "limit-near" else 0.25))
        price = (mid * (1 + sign * away)).quantize(Decimal("0.01"))
        body.update(type="LIMIT", price=str(price), time_in_force="GTC")
        return body

    async def submit(self, body: dict[str, str]) -> str | None:
        """Retry one intent (same message_id) until 200/202; ``None`` at a refusal or a stop."""
        mid = body["message_id"]
        self.log.bodies[mid] = body
        while True:
            answer = await self.admin.request("POST", "/orders", body)
            self.log.statuses[answer.status] += 1
            if answer.status in (200, 202):
                coid = str(answer.body.get("client_order_id"))
                self.log.note_accepted(mid, coid)
                return coid
            if answer.status not in RETRYABLE:
                self.log.refused[mid] = (answer.status, answer.body)
                return None
            self.log.retries += 1
            await trio.sleep(min(answer.retry_after_s or 0.1, 1.0))

    async def submit_maybe_twice(self, body: dict[str, str], rng: random.Random) -> None:
        if rng.random() >= DUPLICATE_PROBABILITY:
            await self.submit(body)
            return
        self.log.duplicates_sent += 1
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.submit, body)
            nursery.start_soon(self.submit, dict(body))

    async def _submitter(self, k: int) -> None:
        rng = random.Random(f"{self.seed}:submitter:{k}")
        while True:
            await trio.sleep(rng.uniform(*self.pace_s))
            if self._stopping:
                return
            await self.submit_maybe_twice(await self.body(rng), rng)

    async def _canceller(self) -> None:
        rng = random.Random(f"{self.seed}:canceller")
        while not self._stopping:
            await trio.sleep(rng.uniform(0.5, 2.5))
            resting = [
                coid
                for mid, coid in self.log.accepted.items()
                if self.log.bodies[mid].get("type") == "LIMIT" and coid not in self.log.cancels
            ]
            if not resting:
                continue
            coid = rng.choice(resting)
            for _ in range(20):
                answer = await self.admin.request("POST", f"/orders/{coid}/cancel")
                if answer.status not in RETRYABLE:
                    self.log.cancels[coid] = answer.status
                    break
                await trio.sleep(0.2)

    async def burst(self, count: int, rng: random.Random) -> None:
        """``count`` intents at once, each retried until answered (for a drain under load)."""
        bodies = [await self.body(rng) for _ in range(count)]
        async with trio.open_nursery() as nursery:
            for body in bodies:
                nursery.start_soon(self.submit, body)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Submit (and cancel) until :meth:`stop`; the intents in flight are finished first."""
        async with trio.open_nursery() as nursery:
            for k in range(self.submitters):
                nursery.start_soon(self._submitter, k)
            if self.with_cancels:
                nursery.start_soon(self._canceller)
            task_status.started()

    def stop(self) -> None:
        self._stopping = True
