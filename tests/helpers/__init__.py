"""Shared helpers of the test suite: one module per concern, imported by test modules.

Test modules import helpers from here, never from another test module or a
``conftest.py``; fixtures stay in ``conftest.py`` files and take their logic
from here.

* :mod:`~tests.helpers.process` — the real ``tradingd run`` as a subprocess
  (notify socket, config, CLI, waits, ``http_get``, ``HOSTILE_ENV``), a module
  fixture's one scenario run (``run_scenario``) and the read-only view of its
  database file (``ReadOnlyDatabase``);
* :mod:`~tests.helpers.demo` — a real ``tradingd demo`` process;
* :mod:`~tests.helpers.sim` — the exchange simulator, in process
  (:func:`~tests.helpers.sim.running_sim`) or as ``tradingd sim``
  (:func:`~tests.helpers.sim.sim_process`); :mod:`~tests.helpers.sim_api` a raw,
  signing Binance REST caller for the simulator's own tests;
* :mod:`~tests.helpers.capture` and :mod:`~tests.helpers.orders_process` — the
  witnesses and configurations of the capture and order process tests;
  :mod:`~tests.helpers.operator` the operator-command process test's daemon and CLI runner;
  :mod:`~tests.helpers.pg_witness` the PostgreSQL witness (a plain read-only
  psycopg session) and the per-run schema of the crash tests on that backend;
* :mod:`~tests.helpers.orders` — the real order pipeline in process;
  :mod:`~tests.helpers.model_venue` an in-memory venue with faults, and
  :mod:`~tests.helpers.model_userstream` its user data stream;
* :mod:`~tests.helpers.marketdata_fakes` — a scripted venue for capture tests
  under a virtual clock;
* :mod:`~tests.helpers.admin` and :mod:`~tests.helpers.raw_http` — the admin API in
  process and a raw HTTP/1.1 client;
* :mod:`~tests.helpers.app` — the in-process :class:`~daemon.app.Daemon`'s
  configuration and notify socket;
* :mod:`~tests.helpers.binance_stream` — a WebSocket server for the stream
  client's tests;
* :mod:`~tests.helpers.store` — builders of the store tests (wall clock,
  trades, snapshots, dead letters);
* :mod:`~tests.helpers.risk` and :mod:`~tests.helpers.strategy_fakes` — builders
  of the risk tests and test doubles of the strategy tests;
* :mod:`~tests.helpers.fuzzing` — hypothesis strategies and budgets of the
  parser fuzzers;
* :mod:`~tests.helpers.clock` (a settable clock), :mod:`~tests.helpers.instruments`
  (a trading symbol with given filters) and :mod:`~tests.helpers.supervision` (a
  real supervisor for the duration of a block).
"""
