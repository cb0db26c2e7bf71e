"""What every ``tradingd`` command module shares: exit codes and default paths."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130
#: Output into a closed pipe: 128 + SIGPIPE, as a shell reports it for ``ls | head``.
EXIT_BROKEN_PIPE = 141

DEFAULT_CONFIG = "/etc/tradingd/tradingd.toml"
#: RuntimeDirectory= of systemd/tradingd.service.
SYSTEMD_RUNTIME_DIR = "/run/tradingd"

#: CLI verbs that flip a trading switch (the control socket's ``trading`` actions).
TRADING_COMMANDS = ("halt", "reduce-only", "resume")
