"""Benchmarks (not tests), run on demand; never imported by ``tradingd run``.

* :mod:`.orders` — ``tradingd bench orders``: the order pipeline's latency and
  throughput against a raw baseline, with the real daemon and the simulator,
  orders over REST or the WebSocket API (``--transport``);
  :mod:`.orders_load` is its load-generator process (the baseline and the
  HTTP clients), :mod:`.orders_baseline` the raw baseline of each transport.
* :mod:`.ingest` — ``tradingd bench ingest``: market-data capture, trades
  durably committed per second by the real daemon against a bare
  trio-websocket client (:mod:`.ingest_raw`, its own process) on the
  simulator's bench mode, with loop lag, memory, CPU and queue depth; the
  store's chunked write against raw ``executemany`` (:mod:`.ingest_store`);
  an overload phase (memory growth, no trade lost, ``/health``). Its parts:
  :mod:`.ingest_setup`, :mod:`.ingest_phases`, :mod:`.ingest_overload`,
  :mod:`.ingest_stats`, :mod:`.ingest_report`.
* ``--store postgres`` (both benches): tradingd's store on a fresh schema of
  a PostgreSQL server, the raw baselines on the same server —
  :mod:`.pg` (the server, ``--dsn``/``--password-file``, schemas made and
  dropped), :mod:`.ingest_pg` (the witness that counts from the server, the
  store phase against raw binary ``COPY`` and ``executemany``),
  :mod:`.orders_pg` (the baseline's two commits on PostgreSQL).
* :mod:`.resilience` — ``python -m daemon.bench.resilience``: the per-call
  overhead of the rate limiters and the circuit breaker.
* :mod:`.common` — what they share: process start-up (the simulator as a
  subprocess, private files, line-framed pipes), CPU accounting, the facts
  about the machine and report formatting.

The command line imports these modules only inside the ``bench`` command, and
``tests/test_layering.py`` checks that running the daemon loads none of them.
"""
