"""The control-socket clients: ``status``, ``reload``, ``dead-letters``, ``halt``/
``reduce-only``/``resume``, ``trading``, ``orders`` and ``debug-fault``.

Each command sends one request to a running daemon (:func:`_ask`) over the
control socket found by :func:`_socket_of` and prints the answer (rendered by
:mod:`daemon.cli.render`, or raw with ``--json``). No daemon reachable: exit 3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import attrs

from daemon import config as configmod
from daemon import control, tomlschema
from daemon.cli.common import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_UNREACHABLE,
    SYSTEMD_RUNTIME_DIR,
    TRADING_COMMANDS,
)
from daemon.cli.render import (
    render_order,
    render_orders,
    render_positions,
    render_reconcile,
    render_replay,
    render_status,
    render_trading,
)
from daemon.errors import ConfigError, ControlError


def _socket_of(args: argparse.Namespace) -> Path:
    """The control socket to talk to.

    The config file is only used to *find* the socket, and must not have to be
    valid: ``tradingd reload`` after a bad edit has to reach the daemon so that
    the daemon rejects the file, logs why and keeps running.
    """
    if args.socket:
        return Path(args.socket)
    try:
        path = configmod.load(args.config).control_socket_path()
    except ConfigError:
        path = _lenient_socket_path(Path(args.config))
    if not path.exists() and not os.environ.get("RUNTIME_DIRECTORY"):
        # A root shell outside the unit: the unit's RuntimeDirectory= is /run/tradingd.
        under_systemd = Path(SYSTEMD_RUNTIME_DIR) / "control.sock"
        if under_systemd.exists():
            return under_systemd
    return path


def _lenient_socket_path(config_path: Path) -> Path:
    """The socket path from a config file that does not validate (best effort)."""
    raw: dict[str, Any] = {}
    try:
        text = tomlschema.read_text(config_path)
    except ConfigError:
        text = ""
    try:
        raw = tomlschema.parse(text, source=str(config_path))
    except ConfigError:
        raw = {"daemon": _daemon_keys_by_line(text)}
    section = raw.get("daemon")
    if not isinstance(section, dict):
        section = {}
    daemon = configmod.DaemonConfig()
    explicit = section.get("control_socket")
    if isinstance(explicit, str) and explicit:
        daemon = attrs.evolve(daemon, control_socket=explicit)
    state_dir = section.get("state_dir")
    if isinstance(state_dir, str) and state_dir:
        resolved = Path(state_dir)
        if not resolved.is_absolute():
            resolved = config_path.resolve().parent / resolved
        daemon = attrs.evolve(daemon, state_dir=resolved)
    return attrs.evolve(configmod.defaults(), daemon=daemon).control_socket_path()


def _daemon_keys_by_line(text: str) -> dict[str, Any]:
    """``daemon.state_dir``/``control_socket`` of a file that does not parse (e.g. a
    stray value nested too deep): each is read from its own line, if that line parses."""
    lines = text.splitlines()
    found: dict[str, Any] = {}
    for path, lineno in tomlschema.locate_keys(text).items():
        if path not in (("daemon", "state_dir"), ("daemon", "control_socket")):
            continue
        try:
            data = tomlschema.parse(lines[lineno - 1], source="<line>")
        except ConfigError:
            continue
        value = data.get(path[1], data.get("daemon", {}).get(path[1]))
        if isinstance(value, str):
            found[path[1]] = value
    return found


def _ask(args: argparse.Namespace, message: dict[str, Any]) -> dict[str, Any] | None:
    try:
        answer = control.request(_socket_of(args), message, timeout_s=args.timeout)
    except ControlError as exc:
        print(f"tradingd: {exc}", file=sys.stderr)
        return None
    if not isinstance(answer, dict):
        print("tradingd: unexpected answer from the daemon", file=sys.stderr)
        return None
    return answer


def _ask_ok(
    args: argparse.Namespace, message: dict[str, Any], *, detail: bool = True
) -> dict[str, Any] | int:
    """The daemon's answer when it is ``ok``; else the exit code, the reason said on stderr
    (with every problem and risk reason the daemon listed, unless ``detail`` is off)."""
    answer = _ask(args, message)
    if answer is None:
        return EXIT_UNREACHABLE
    if not answer.get("ok"):
        if detail:
            _print_failure(answer)
        else:
            print(f"tradingd: {answer.get('error')}", file=sys.stderr)
        return EXIT_FAILURE
    return answer


def cmd_reload(args: argparse.Namespace) -> int:
    answer = _ask(args, {"cmd": "reload"})
    if answer is None:
        return EXIT_UNREACHABLE
    if answer.get("ok"):
        applied = ", ".join(answer.get("applied", [])) or "nothing changed live"
        print(f"reloaded: {applied}")
        for key in answer.get("restart_required", []):
            print(f"  needs a restart to take effect: {key}")
        return EXIT_OK
    errors = answer.get("errors") or [answer.get("error", "rejected")]
    print(
        "reload rejected; the daemon keeps running on its previous configuration:", file=sys.stderr
    )
    for problem in errors:
        print(f"  {problem}", file=sys.stderr)
    return EXIT_FAILURE


def cmd_status(args: argparse.Namespace) -> int:
    if args.watch is not None:
        return _watch_status(args)
    answer = _ask(args, {"cmd": "status"})
    if answer is None:
        return EXIT_UNREACHABLE
    status = answer.get("status", {})
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(render_status(status))
    level = status.get("health", {}).get("level")
    return EXIT_OK if level in ("healthy", "degraded") else EXIT_FAILURE


def _watch_status(args: argparse.Namespace) -> int:
    """``tradingd status --watch``: the status again every ``args.watch`` seconds.

    On a terminal the screen is redrawn; piped, each refresh is appended under
    a time line. A daemon that stops or restarts meanwhile is shown as not
    reachable and asked again at the next refresh. Ctrl-C ends it (exit 0).
    """
    redraw = sys.stdout.isatty()
    done = 0
    try:
        while args.count is None or done < args.count:
            if done:
                time.sleep(args.watch)
            stamp = time.strftime("%H:%M:%S")
            try:
                answer = control.request(
                    _socket_of(args), {"cmd": "status"}, timeout_s=args.timeout
                )
                body = (
                    (
                        json.dumps(answer.get("status", {}), indent=2, sort_keys=True)
                        if args.json
                        else render_status(answer.get("status", {}))
                    )
                    if isinstance(answer, dict)
                    else "unexpected answer from the daemon"
                )
            except ControlError as exc:
                body = f"not reachable: {exc}; asking again in {args.watch:g}s"
            if redraw:
                sys.stdout.write("\x1b[H\x1b[2J")
            print(f"--- {stamp}  every {args.watch:g}s (Ctrl-C to stop)")
            print(body, flush=True)
            done += 1
    except KeyboardInterrupt:
        print()
    return EXIT_OK


def cmd_dead_letters(args: argparse.Namespace) -> int:
    message: dict[str, Any] = {"cmd": "dead-letters", "action": args.action}
    if args.action == "list":
        message.update(source=args.source, after_id=args.after_id, limit=args.limit)
    elif args.action == "show":
        message["id"] = args.id
    elif args.action == "replay":
        if not args.ids and not args.source:
            print("tradingd: say which letters: ID... or --source", file=sys.stderr)
            return EXIT_CONFIG  # a usage error, as argparse exits
        message.update(ids=args.ids or None, source=args.source, dry_run=args.dry_run)
    else:
        before = None
        if args.older_than_days is not None:
            before = time.time() - args.older_than_days * 86_400
        message.update(ids=args.ids, source=args.source, failed_before=before, all=args.all)
    answer = _ask_ok(args, message, detail=False)
    if isinstance(answer, int):
        return answer
    if args.action == "list":
        letters = answer.get("letters", [])
        if args.json:
            print(json.dumps(letters, indent=2, sort_keys=True))
        elif not letters:
            print("no dead letters")
        for letter in [] if args.json else letters:
            print(
                f"{letter.get('letter_id'):>6}  {letter.get('source')}  "
                f"{letter.get('error_type')}: {letter.get('error_message')}  "
                f"(attempts {letter.get('attempts')})"
            )
    elif args.action == "show":
        print(json.dumps(answer.get("letter"), indent=2, sort_keys=True))
    elif args.action == "replay":
        print(render_replay(answer, as_json=args.json))
        if any(not r.get("ok") for r in answer.get("replayed", [])) or answer.get("missing"):
            return EXIT_FAILURE
    else:
        print(f"purged {answer.get('purged')} dead letter(s)")
    return EXIT_OK


def _print_failure(answer: dict[str, Any]) -> None:
    """The daemon's refusal on stderr, with every problem or risk reason it listed."""
    print(f"tradingd: {answer.get('error', 'failed')}", file=sys.stderr)
    for problem in answer.get("problems") or []:
        print(
            f"  {problem.get('field') or 'request'}: {problem.get('code')}: "
            f"{problem.get('message')}",
            file=sys.stderr,
        )
    for reason in answer.get("reasons") or []:
        print(f"  {reason.get('code')}: {reason.get('message')}", file=sys.stderr)
    retry = answer.get("retry_after_s")
    if retry is not None:
        print(f"  retry in {retry:g}s", file=sys.stderr)


def cmd_trading(args: argparse.Namespace) -> int:
    """``tradingd trading`` shows the switches; ``halt``/``reduce-only``/``resume`` flip one.

    Exit 0 when the switch is set (even if the store could not persist it:
    it holds until a restart, and the warning says so), 1 when refused.
    """
    message: dict[str, Any] = {"cmd": "trading", "action": "show"}
    if args.command in TRADING_COMMANDS:
        message.update(action=args.command, account=args.account, reason=args.reason)
    answer = _ask_ok(args, message)
    if isinstance(answer, int):
        return answer
    if args.json:
        raw = {k: v for k, v in answer.items() if k != "ok"}
        print(json.dumps(raw, indent=2, sort_keys=True))
    else:
        if args.command in TRADING_COMMANDS:
            scope = "all accounts" if args.account is None else f"account {args.account}"
            print(f"{args.command}: {scope}")
        print(render_trading(answer))
    if answer.get("warning"):
        print(f"tradingd: warning: {answer['warning']}", file=sys.stderr)
    return EXIT_OK


def cmd_orders(args: argparse.Namespace) -> int:
    """``tradingd orders list|show|cancel`` through the control socket."""
    message: dict[str, Any] = {"cmd": "orders", "action": args.action}
    if args.action == "list":
        message.update(account=args.account, states=args.states, limit=args.limit)
    else:
        message["client_order_id"] = args.client_order_id
    answer = _ask_ok(args, message)
    if isinstance(answer, int):
        return answer
    if args.json:
        raw = {k: v for k, v in answer.items() if k != "ok"}
        print(json.dumps(raw["orders"] if args.action == "list" else raw, indent=2, sort_keys=True))
    elif args.action == "list":
        print(render_orders(answer.get("orders", [])))
    elif args.action == "show":
        print(render_order(answer))
    elif answer.get("cancel_requested"):
        print(f"cancel requested: {answer.get('client_order_id')} (state {answer.get('state')})")
    else:
        print(
            f"{answer.get('client_order_id')} is already {answer.get('state')}; nothing to cancel"
        )
    return EXIT_OK


def cmd_positions(args: argparse.Namespace) -> int:
    """``tradingd positions [--account A]``: signed positions from the stored fills."""
    message: dict[str, Any] = {"cmd": "positions", "account": args.account}
    answer = _ask_ok(args, message)
    if isinstance(answer, int):
        return answer
    positions = answer.get("positions", [])
    if args.json:
        print(json.dumps(positions, indent=2, sort_keys=True))
    else:
        print(render_positions(positions))
    return EXIT_OK


def cmd_reconcile(args: argparse.Namespace) -> int:
    """``tradingd reconcile [--account A]``: one reconciliation pass now, and its findings."""
    answer = _ask_ok(args, {"cmd": "reconcile", "account": args.account})
    if isinstance(answer, int):
        return answer
    raw = {k: v for k, v in answer.items() if k != "ok"}
    print(json.dumps(raw, indent=2, sort_keys=True) if args.json else render_reconcile(raw))
    return EXIT_OK if answer.get("reconciled") else EXIT_FAILURE


def cmd_fault(args: argparse.Namespace) -> int:
    answer = _ask(args, {"cmd": "fault", "kind": args.kind, "seconds": args.seconds})
    if answer is None:
        return EXIT_UNREACHABLE
    if not answer.get("ok"):
        print(f"tradingd: {answer.get('error')}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"fault armed: {args.kind}")
    return EXIT_OK
