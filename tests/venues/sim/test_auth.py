"""Signatures, timing security and API keys, against Binance's documented worked example.

The example (REST API docs, "SIGNED Endpoint Examples for POST /api/v3/order"):
the key/secret below, and ``symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&
quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559`` signs to
``c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71`` (example 1:
body; example 2: query string), and the mixed example 3 (query
``symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC``, body
``quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559``) signs the two
concatenated *without* ``&`` to ``0fd168b8…9a77``.
"""

from __future__ import annotations

import httpx2
import pytest
import trio

from daemon.venues.sim import auth
from daemon.venues.sim.accounts import Ledger
from daemon.venues.sim.config import DOCS_API_KEY, DOCS_SECRET_KEY
from daemon.venues.sim.protocol import ApiError
from tests.helpers.sim_api import (
    TIMEOUT_S,
    ManualClock,
    api_for,
    hmac_hex,
    make_config,
    running_sim_server,
)

DOCS_QUERY = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
    "&recvWindow=5000&timestamp=1499827319559"
)
DOCS_SIGNATURE = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
MIXED_QUERY = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC"
MIXED_BODY = "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
MIXED_SIGNATURE = "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77"
DOCS_TIME_MS = 1499827319559


def _query(text: str) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for part in text.split("&"):
        name, _, value = part.partition("=")
        out[name] = (*out.get(name, ()), value)
    return out


# --------------------------------------------------------------------------- pure


def test_docs_example_signature() -> None:
    assert hmac_hex(DOCS_SECRET_KEY, DOCS_QUERY) == DOCS_SIGNATURE
    assert auth.sign(DOCS_SECRET_KEY.encode(), DOCS_QUERY.encode()) == DOCS_SIGNATURE


def test_payload_from_query_and_from_body() -> None:
    secret = DOCS_SECRET_KEY.encode()
    as_query = auth.signature_payloads(_query(DOCS_QUERY + "&signature=" + DOCS_SIGNATURE), b"")
    assert DOCS_QUERY.encode() in as_query
    assert auth.verify_signature(secret, as_query, DOCS_SIGNATURE)
    as_body = auth.signature_payloads({}, f"{DOCS_QUERY}&signature={DOCS_SIGNATURE}".encode())
    assert as_body == [DOCS_QUERY.encode()]
    assert auth.verify_signature(secret, as_body, DOCS_SIGNATURE.upper())  # not case sensitive


def test_mixed_payload_concatenates_without_ampersand() -> None:
    payloads = auth.signature_payloads(
        _query(MIXED_QUERY), f"{MIXED_BODY}&signature={MIXED_SIGNATURE}".encode()
    )
    assert (MIXED_QUERY + MIXED_BODY).encode() in payloads
    assert auth.verify_signature(DOCS_SECRET_KEY.encode(), payloads, MIXED_SIGNATURE)
    # The example-1 signature does not sign the mixed request.
    assert not auth.verify_signature(DOCS_SECRET_KEY.encode(), payloads, DOCS_SIGNATURE)


@pytest.mark.parametrize("bad", ["", "zz" * 32, DOCS_SIGNATURE[:-1], DOCS_SIGNATURE[:-1] + "0"])
def test_bad_signatures_rejected(bad: str) -> None:
    payloads = auth.signature_payloads(_query(DOCS_QUERY), b"")
    assert not auth.verify_signature(DOCS_SECRET_KEY.encode(), payloads, bad)


@pytest.mark.parametrize(
    ("timestamp", "window", "server", "code", "msg"),
    [
        ("1000", None, 1000, None, None),
        ("1000", None, 6000, None, None),  # exactly recvWindow old: accepted
        ("1000", None, 6001, -1021, "outside of the recvWindow"),
        ("1000", "10000", 6001, None, None),
        ("1999", None, 1000, None, None),  # 999 ms ahead: accepted
        ("2000", None, 1000, -1021, "1000ms ahead"),
        (None, None, 1000, -1102, "'timestamp'"),
        ("abc", None, 1000, -1102, "'timestamp'"),
        ("1000", "60001", 1000, -1102, "Cannot be greater than '60000'"),
        ("1000", "x", 1000, -1100, "recvWindow"),
    ],
)
def test_timing_security(
    timestamp: str | None, window: str | None, server: int, code: int | None, msg: str | None
) -> None:
    if code is None:
        auth.check_timestamp(timestamp, window, server)
        return
    with pytest.raises(ApiError) as info:
        auth.check_timestamp(timestamp, window, server)
    assert info.value.code == code
    assert msg is not None and msg in info.value.msg
    assert info.value.status == 400


def test_api_key_checks() -> None:
    ledger = Ledger()
    ledger.open_account(DOCS_API_KEY, DOCS_SECRET_KEY, {})
    assert auth.check_api_key(DOCS_API_KEY, ledger) == DOCS_API_KEY
    for header, code in ((None, -2014), ("not a key!", -2014), ("a" * 64, -2015)):
        with pytest.raises(ApiError) as info:
            auth.check_api_key(header, ledger)
        assert (info.value.code, info.value.status) == (code, 401)


# --------------------------------------------------------------------------- over HTTP


async def test_docs_examples_accepted_over_http() -> None:
    """The three documented requests, byte for byte, with the server clock at the example time."""
    clock = ManualClock(DOCS_TIME_MS + 10)
    headers = {"X-MBX-APIKEY": DOCS_API_KEY}
    form = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server(make_config(), wall_clock=clock) as sim,
            httpx2.AsyncClient(base_url=sim.rest_url or "") as http,
        ):
            # An empty book, so that the documented BUY at 0.1 rests instead of taking.
            cleared = await http.post("/sim/market/clear", json={"symbol": "LTCBTC"})
            assert cleared.json()["withdrawn"] > 0
            body1 = f"{DOCS_QUERY}&signature={DOCS_SIGNATURE}"
            r1 = await http.post("/api/v3/order", content=body1, headers=form)
            r2 = await http.post(f"/api/v3/order?{body1}", headers=headers)
            r3 = await http.post(
                f"/api/v3/order?{MIXED_QUERY}",
                content=f"{MIXED_BODY}&signature={MIXED_SIGNATURE}",
                headers=form,
            )
            for response in (r1, r2, r3):
                assert response.status_code == 200, response.text
                assert response.json()["status"] == "NEW"
                assert response.json()["price"] == "0.10000000"
            # Tampering with one character of the signed data breaks it.
            tampered = body1.replace("quantity=1", "quantity=2")
            r4 = await http.post("/api/v3/order", content=tampered, headers=form)
            assert r4.status_code == 400
            assert r4.json() == {
                "code": -1022,
                "msg": "Signature for this request is not valid.",
            }
            # The example-1 signature on the mixed split is wrong too.
            r5 = await http.post(
                f"/api/v3/order?{MIXED_QUERY}",
                content=f"{MIXED_BODY}&signature={DOCS_SIGNATURE}",
                headers=form,
            )
            assert r5.json()["code"] == -1022
            assert len(sim.audit) == 3


async def test_signed_endpoint_errors_over_http() -> None:
    clock = ManualClock()
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server(make_config(), wall_clock=clock) as sim,
            api_for(sim, clock=clock) as api,
        ):
            ok = await api.signed("GET", "/api/v3/account")
            assert ok.status_code == 200
            no_key = await api.http.get("/api/v3/account", params={"timestamp": clock()})
            assert (no_key.status_code, no_key.json()["code"]) == (401, -2014)
            assert no_key.json()["msg"] == "API-key format invalid."
            unknown = await api.signed("GET", "/api/v3/account", key="Z" * 64)
            assert (unknown.status_code, unknown.json()["code"]) == (401, -2015)
            assert unknown.json()["msg"] == "Invalid API-key, IP, or permissions for action."
            wrong_secret = await api.signed("GET", "/api/v3/account", secret="nope")
            assert (wrong_secret.status_code, wrong_secret.json()["code"]) == (400, -1022)
            stale = await api.signed("GET", "/api/v3/account", timestamp=clock() - 5001)
            assert (stale.status_code, stale.json()["code"]) == (400, -1021)
            assert stale.json()["msg"] == "Timestamp for this request is outside of the recvWindow."
            wide = await api.signed(
                "GET", "/api/v3/account", timestamp=clock() - 5001, recvWindow=6000
            )
            assert wide.status_code == 200
            ahead = await api.signed("GET", "/api/v3/account", timestamp=clock() + 1000)
            assert ahead.json() == {
                "code": -1021,
                "msg": "Timestamp for this request was 1000ms ahead of the server's time.",
            }
            unsigned = await api.http.get(
                "/api/v3/account",
                params={"timestamp": clock()},
                headers={"X-MBX-APIKEY": api.key},
            )
            assert unsigned.json()["code"] == -1102
            assert "'signature'" in unsigned.json()["msg"]
            # The same signature in upper case is accepted (not case sensitive).
            query = f"timestamp={clock()}"
            upper = hmac_hex(api.secret, query).upper()
            r = await api.http.get(
                f"/api/v3/account?{query}&signature={upper}", headers={"X-MBX-APIKEY": api.key}
            )
            assert r.status_code == 200
            # Signed in the body works for DELETE too (param in body).
            body = await api.signed(
                "DELETE", "/api/v3/order", in_body=True, symbol="BTCUSDT", orderId=999
            )
            assert body.json() == {"code": -2011, "msg": "Unknown order sent."}


def test_raw_query_is_verified_byte_exact() -> None:
    """With the raw query string, the signature covers exactly the bytes received."""
    raw = DOCS_QUERY + "&signature=" + DOCS_SIGNATURE
    (payload,) = auth.signature_payloads({}, b"", raw_query=raw)
    assert payload == DOCS_QUERY.encode()
    # A re-encoded (but equivalent) query is NOT what was signed: byte-exact means exact.
    (other,) = auth.signature_payloads({}, b"", raw_query=DOCS_QUERY.replace("=0.1", "=0%2E1"))
    assert other != DOCS_QUERY.encode()
