"""A Binance-Spot-compatible exchange simulator (``tradingd sim``).

It speaks the public Binance Spot protocol — REST ``/api/v3`` with HMAC
signatures, rate-limit headers and error codes, WebSocket trade and diff-depth
streams, the WebSocket API ``/ws-api/v3`` (the same operations, and the user
data stream of executionReport events) — over a seeded, deterministic market,
so the demo, the tests and a real testnet all run the same client code. It is
an *independent* reading of the protocol: it shares no protocol code with the client in
:mod:`daemon.venues.binance`, only protocol-neutral infrastructure
(:mod:`daemon.http`, :mod:`daemon.decode`, :mod:`daemon.tomlschema`) and one
figure from the docs (:mod:`daemon.model.weights`).

Layers, from the wire inwards::

    server.py   serve_sim / SimServer: REST + streams + market as one Trio service
    rest.py     /api/v3 over HTTP: routing, query and form parameters, REST faults, encoding
    api.py      the operations, transport-neutral: weights, admission, auth, handlers
    params.py   typed parameter reading and validation (-1100 … -1130)
    answers.py  the JSON shapes of the answers
    control.py  the /sim control API (faults, accounts, audit, market)
    streams.py  /ws/<stream>, /stream?streams=…, pings, serverShutdown, stream faults
    benchfeed.py bench mode: pre-encoded trade frames at full speed, with backpressure
    wsapi.py    /ws-api/v3: the WebSocket API endpoint, sessions, user data stream methods
    wsframes.py WebSocket API frames sans I/O: requests, answers, rateLimits, signature payload
    userstream.py user data stream: subscriptions, event payloads, delivery, slow subscribers
    orderchanges.py what the engine tells the user data stream (ChangeFeed)
    auth.py     API keys, HMAC-SHA256 signatures, timestamp/recvWindow
    limits.py   request weight and order count windows, 429/418
    faults.py   fault specs and the injector
    audit.py    every accepted order
    market.py   seeded market generator, trade log, depth batches
    matching.py the matching engine: place, cancel, match, commissions
    orderbook.py order and trade values, book sides, filters
    accounts.py double-entry balances per API key
    protocol.py error codes, decimal formats, weights
    config.py   SimConfig and strict TOML loading
    cli.py      ``tradingd sim`` flags and entry point
"""

from __future__ import annotations

from daemon.venues.sim.config import SimConfig
from daemon.venues.sim.server import SimServer, serve_sim, system_clock_ms, trio_clock_ms

__all__ = ["SimConfig", "SimServer", "serve_sim", "system_clock_ms", "trio_clock_ms"]
