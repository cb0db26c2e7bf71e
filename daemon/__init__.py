"""tradingd: a Trio structured-concurrency trading daemon.

Two paths run through the package, both under one supervision tree:

* **market data**: ``venues`` (the Binance stream and REST clients) →
  ``marketdata`` (feed, gap backfill, ingest writer, local books) → ``store``;
  strategies read the local books;
* **orders**: ``admin`` (``POST /orders``) or ``strategies`` → ``orders``
  (entry, pre-trade ``risk``, the durable outbox in the ``store``,
  per-account dispatch, the executor, reconciliation) → ``venues``.

Around them: ``config`` (one TOML file), ``supervise`` (the tree),
``health``/``notify`` (liveness, systemd), ``channels`` (bounded queues),
``resilience`` (retries, rate limits, circuit breakers, dead letters),
``control`` (the Unix control socket), ``app`` (the composition root) and
``cli`` (the ``tradingd`` command). ``docs/ARCHITECTURE.md`` walks through
them module by module.
"""

__version__ = "0.1.0"
