"""``python -m daemon.cli`` runs the ``tradingd`` command line (as ``python -m daemon``)."""

import os

from daemon.cli import main

os.environ.setdefault("PYTHONUNBUFFERED", "1")
raise SystemExit(main())
