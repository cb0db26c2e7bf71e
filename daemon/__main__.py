"""``python -m daemon`` runs the ``tradingd`` command line."""

from daemon.cli import main

raise SystemExit(main())
