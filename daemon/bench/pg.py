"""What both benches need to run tradingd on PostgreSQL: the server, a fresh schema per run.

``tradingd bench ingest --store postgres`` and ``tradingd bench orders
--store postgres`` run the daemon with ``[store] backend = "postgres"``
and set raw psycopg baselines beside it, on the same server in the same
run. This module holds what they share:

* :func:`add_store_arguments` — ``--store``, ``--dsn``, ``--password-file``;
* :class:`PgServer` — the server named by ``--dsn`` (default
  :data:`DEFAULT_DSN`, the development machine's: trust auth, database
  ``test``), with the password of ``--password-file`` kept apart from the
  DSN: it is given to the driver and to the daemon's configuration (as a
  ``{ file = … }`` secret reference) and never printed — what reports and
  errors show is :func:`~daemon.store.pg_errors.public_dsn`;
* :meth:`PgServer.fresh_schema` — a new schema per run
  (``tradingd_bench_<kind>_<hex>``), named by the DSN's ``search_path``
  option, so a run never sees another's rows; :meth:`PgServer.drop_all`
  drops every schema it made (``--keep`` keeps them, and so does a failed
  run, as it keeps its state directory);
* :func:`store_toml` — the daemon's ``[store]`` section for a schema.

Everything here is blocking (psycopg's sync API): the benches call it from
a worker thread, or before the Trio loop starts.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from pathlib import Path
from typing import Any, Final

import attrs
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from daemon.bench.common import BenchError
from daemon.errors import SecretError
from daemon.secrets import SecretRef, resolve
from daemon.store.pg_errors import public_dsn

__all__ = [
    "DEFAULT_DSN",
    "STORES",
    "PgServer",
    "add_store_arguments",
    "drop_schemas",
    "kept_schemas",
    "server_from_args",
    "store_toml",
    "with_search_path",
]

#: The backends a bench run can put tradingd's store on (``--store``).
STORES: Final = ("sqlite", "postgres")
#: The server of ``--store postgres`` when ``--dsn`` is not given.
DEFAULT_DSN: Final = "host=127.0.0.1 port=5432 dbname=test user=postgres"
#: Bound of connecting to the server (seconds).
CONNECT_TIMEOUT_S: Final = 10


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """``--store``, ``--dsn`` and ``--password-file`` (both benches)."""
    add = parser.add_argument
    add(
        "--store",
        choices=STORES,
        default="sqlite",
        help="tradingd's store, and the raw baselines with it: sqlite (the embedded file) or "
        "postgres (a fresh schema on --dsn's server, dropped afterwards unless --keep) (sqlite)",
    )
    add(
        "--dsn",
        metavar="DSN",
        default=None,
        help=f"the PostgreSQL server of --store postgres, without a password ({DEFAULT_DSN})",
    )
    add(
        "--password-file",
        metavar="PATH",
        default=None,
        help="a file holding the PostgreSQL password (never printed; a trailing newline is "
        "ignored)",
    )


def with_search_path(dsn: str, schema: str) -> str:
    """``dsn`` whose connections use ``schema`` first (``options=-c search_path=…``)."""
    options = conninfo_to_dict(dsn).get("options")
    extra = f"-c search_path={schema}"
    return make_conninfo(dsn, options=f"{options} {extra}" if options else extra)


@attrs.define
class PgServer:
    """The PostgreSQL server of a bench run, and the schemas the run made on it.

    Attributes:
        dsn: The DSN as given (it must not hold a password).
        password: From ``--password-file``; never shown (``repr`` hides it).
        password_file: That file, for the daemon's ``{ file = … }`` reference.
        schemas: Every schema :meth:`fresh_schema` made, in order.
    """

    dsn: str
    password: str | None = attrs.field(default=None, repr=False)
    password_file: Path | None = None
    schemas: list[str] = attrs.Factory(list)

    @property
    def public(self) -> str:
        """The DSN as reports show it (never a password)."""
        return public_dsn(self.dsn)

    def connect(self, dsn: str | None = None, **kwargs: Any) -> psycopg.Connection[Any]:
        """A new connection to ``dsn`` (default: the server's), the password given apart.

        Raises:
            BenchError: it failed (the message names the public DSN only).
        """
        target = self.dsn if dsn is None else dsn
        if self.password is not None:
            kwargs["password"] = self.password
        kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
        try:
            return psycopg.connect(target, **kwargs)
        except psycopg.Error as exc:
            raise BenchError(
                f"PostgreSQL at {public_dsn(target)!r}: cannot connect: "
                f"{type(exc).__name__}: {_first_line(exc)}"
            ) from None

    def version(self) -> str:
        """The server's version (``server_version``), checking that it answers."""
        with self.connect(autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    def fresh_schema(self, kind: str) -> str:
        """Create ``tradingd_bench_<kind>_<hex>``; the DSN whose ``search_path`` is it."""
        schema = f"tradingd_bench_{kind}_{secrets.token_hex(4)}"
        with self.connect(autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        self.schemas.append(schema)
        return with_search_path(self.dsn, schema)

    def drop_all(self) -> None:
        """Drop every schema this run made (what is in them goes too)."""
        if not self.schemas:
            return
        with self.connect(autocommit=True) as conn:
            for schema in self.schemas:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        self.schemas.clear()

    def report(self) -> dict[str, Any]:
        """The ``--json`` facts of the server: its DSN (no password), version, schemas."""
        return {"dsn": self.public, "server_version": self.version(), "schemas": list(self.schemas)}


def server_from_args(args: argparse.Namespace) -> PgServer | None:
    """The server of ``--store postgres`` (``None`` for ``sqlite``), checked to answer.

    Raises:
        BenchError: a password in the DSN, an unreadable password file, no server.
    """
    if args.store != "postgres":
        if args.dsn is not None or args.password_file is not None:
            raise BenchError("--dsn and --password-file go with --store postgres")
        return None
    dsn = args.dsn or DEFAULT_DSN
    try:
        given = conninfo_to_dict(dsn)
    except psycopg.Error:
        raise BenchError("--dsn does not parse as a libpq DSN") from None
    if given.get("password"):
        raise BenchError("--dsn must not hold a password: give it with --password-file")
    password: str | None = None
    password_file: Path | None = None
    if args.password_file is not None:
        password_file = Path(args.password_file).resolve()
        try:
            password = resolve(SecretRef("file", str(password_file))).reveal()
        except SecretError as exc:
            raise BenchError(f"--password-file: {exc}") from None
    server = PgServer(dsn, password, password_file)
    server.version()
    return server


def drop_schemas(server: PgServer | None) -> None:
    """:meth:`PgServer.drop_all`, a failure said on stderr (the run's result stands)."""
    if server is None:
        return
    try:
        server.drop_all()
    except (BenchError, psycopg.Error) as exc:
        print(
            f"could not drop the PostgreSQL schema(s) {', '.join(server.schemas)}: "
            f"{type(exc).__name__}: {_first_line(exc)}",
            file=sys.stderr,
        )


def kept_schemas(server: PgServer | None) -> str:
    """``"; PostgreSQL schemas A, B kept"`` for a message (nothing without schemas)."""
    if server is None or not server.schemas:
        return ""
    return f"; PostgreSQL schema(s) {', '.join(server.schemas)} kept on {server.public}"


def store_toml(dsn: str, password_file: Path | None) -> str:
    """The daemon's ``[store]`` section for PostgreSQL at ``dsn`` (default settings otherwise)."""
    q = json.dumps  # a TOML basic string is a JSON string
    lines = ["[store]", 'backend = "postgres"', f"dsn = {q(dsn)}"]
    if password_file is not None:
        lines.append(f"password = {{ file = {q(str(password_file))} }}")
    return "\n".join(lines) + "\n"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
