"""tradingd: a Trio structured-concurrency trading daemon.

Read top to bottom, the package shows the path of a message:
``config`` → ``supervise`` (the tree) → ``health``/``notify`` (liveness) →
``admin`` (the operator's window) → ``app`` (the daemon itself) → ``cli``.
"""

__version__ = "0.1.0"
