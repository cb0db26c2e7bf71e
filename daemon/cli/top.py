"""``tradingd top``: a live, full-screen view of a running daemon, like ``htop``.

Every ``--interval`` seconds :class:`Reader` asks the daemon over the control
socket for its status, the latest orders, the positions, the trading switches
and (every :data:`DEAD_LETTERS_EVERY_S`) its dead letters; the view
(:mod:`daemon.cli.top_view`, :mod:`daemon.cli.top_screen`) is a pure function
of those answers, the loop-lag history kept here, the filter and the terminal
size.

On a terminal the screen is drawn with ``rich`` (``Live`` on the alternate
screen) and keys are read in cbreak mode, one ``select`` loop for the keys and
for a worker thread that does the (blocking) reading, so that a daemon slow to
answer never delays a key. The keys go through a pure state machine
(:func:`on_key`): ``q`` quits, ``h`` asks which account, then whether to halt
(or resume) it, and only a ``y`` sends the ``trading`` command; ``/`` edits the
filter. Not on a terminal (piped, under ``watch``, in a test) one plain-text
rendering is printed per interval, as ``tradingd status --watch`` does, until
``--count`` renderings or Ctrl-C.

A daemon that stops or restarts meanwhile is shown as "NOT REACHABLE" (on a
terminal, above the last data read, with its time) and asked again at every
refresh; a new pid is pointed out when it answers again. Nothing the daemon
answers can end the view: the renderers take any document (see
:mod:`daemon.cli.top_view`).
"""

from __future__ import annotations

import argparse
import enum
import os
import queue
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from daemon import control
from daemon.cli.client import _socket_of
from daemon.cli.common import DEFAULT_CONFIG, EXIT_OK
from daemon.cli.top_view import History, Snapshot, cell, render_text
from daemon.errors import ControlError

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

__all__ = [
    "Mode",
    "Quit",
    "Reader",
    "SetTrading",
    "TopKeys",
    "add_top_arguments",
    "cmd_top",
    "on_key",
    "split_keys",
]

DEFAULT_INTERVAL_S: Final = 1.0
#: Default bound of one refresh (all its requests together), in seconds.
DEFAULT_TIMEOUT_S: Final = 5.0
#: Orders asked for (newest first) at each refresh.
ORDERS_SHOWN: Final = 20
#: Dead letters are listed at most this often (a page carries their payloads).
DEAD_LETTERS_EVERY_S: Final = 10.0
#: Dead letters read per listing (the count shows ``1000+`` beyond).
DEAD_LETTER_PAGE: Final = 1000
#: Longest filter or account name typed.
INPUT_CHARS: Final = 64
#: How often the screen checks for a new terminal size without other events.
RESIZE_POLL_S: Final = 0.5
KEY_HELP: Final = "q quit   h halt/resume an account   / filter   (Ctrl-C quits too)"
ENTER: Final = ("\r", "\n")
ESCAPE: Final = "\x1b"
BACKSPACE: Final = ("\x7f", "\x08")
TAB: Final = "\t"


# ---------------------------------------------------------------------------- arguments


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be in 0.1..3600 seconds, got {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def add_top_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``tradingd top`` (declared on the subcommand's parser)."""
    parser.add_argument(
        "--interval",
        type=_seconds,
        default=DEFAULT_INTERVAL_S,
        metavar="SECONDS",
        help=f"refresh every SECONDS (default {DEFAULT_INTERVAL_S:g})",
    )
    parser.add_argument(
        "--count", type=_count, metavar="N", help="stop after N refreshes (default: until q)"
    )
    parser.add_argument(
        "--filter",
        default="",
        metavar="TEXT",
        help="show only table rows containing TEXT (the / key changes it)",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="plain text, one rendering per refresh, even on a terminal",
    )
    parser.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    parser.add_argument("--socket", help="control socket path (overrides the config's)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds one refresh may take (default {DEFAULT_TIMEOUT_S:g})",
    )


# ---------------------------------------------------------------------------- reading


class Reader:
    """Reads one :class:`Snapshot` from the daemon (blocking; never raises).

    Args:
        args: ``--socket``/``--config`` (where the socket is) and ``--timeout``.
        keep_last: when the daemon is not reachable, carry the last data read
            (a terminal shows it under the "NOT REACHABLE" line); plain text
            prints the line alone.
    """

    def __init__(self, args: argparse.Namespace, *, keep_last: bool = False) -> None:
        self._args = args
        self._keep_last = keep_last
        self._last: Snapshot | None = None
        self._letters: Any = None
        self._letters_problem: str | None = None
        self._letters_at = -DEAD_LETTERS_EVERY_S

    def socket_path(self) -> Path:
        """The control socket (the config is read again each time: it may have been fixed)."""
        return _socket_of(self._args)

    def read(self) -> Snapshot:
        now = time.time()
        deadline = time.monotonic() + self._args.timeout
        try:
            path = self.socket_path()
            status_answer = self._ask(path, {"cmd": "status"}, deadline)
        except ControlError as exc:
            return self._unreachable(now, str(exc))
        except Exception as exc:  # a config that cannot even be read, say
            return self._unreachable(now, f"{type(exc).__name__}: {exc}")
        problems: dict[str, str] = {}
        if status_answer.get("ok") is False:
            problems["status"] = cell(status_answer.get("error"), 200)
        parts = {
            "orders": self._part(
                path,
                {"cmd": "orders", "action": "list", "limit": ORDERS_SHOWN},
                "orders",
                deadline,
                problems,
            ),
            "positions": self._part(path, {"cmd": "positions"}, "positions", deadline, problems),
            "trading": self._part(
                path, {"cmd": "trading", "action": "show"}, None, deadline, problems
            ),
        }
        if time.monotonic() - self._letters_at >= DEAD_LETTERS_EVERY_S:
            letters: dict[str, str] = {}
            self._letters = self._part(
                path,
                {"cmd": "dead-letters", "action": "list", "limit": DEAD_LETTER_PAGE},
                "letters",
                deadline,
                letters,
            )
            self._letters_problem = letters.get("letters")
            if self._letters_problem is None:  # a failed listing is asked again next time
                self._letters_at = time.monotonic()
        if self._letters_problem:
            problems["dead_letters"] = self._letters_problem
        snapshot = Snapshot(
            at=now,
            status=status_answer.get("status"),
            orders=parts["orders"],
            positions=parts["positions"],
            trading=parts["trading"],
            dead_letters=self._letters,
            problems=problems,
            data_at=now,
        )
        self._last = snapshot
        return snapshot

    def _unreachable(self, now: float, error: str) -> Snapshot:
        self._letters_at = -DEAD_LETTERS_EVERY_S  # ask again as soon as it is back
        if self._keep_last and self._last is not None:
            return attrs.evolve(self._last, at=now, error=error)
        return Snapshot(at=now, error=error)

    def _ask(self, path: Path, message: dict[str, Any], deadline: float) -> dict[str, Any]:
        remaining = max(0.05, deadline - time.monotonic())
        answer: dict[str, Any] = control.request(path, message, timeout_s=remaining)
        return answer

    def _part(
        self,
        path: Path,
        message: dict[str, Any],
        key: str | None,
        deadline: float,
        problems: dict[str, str],
    ) -> Any:
        """One answer (or its ``key``), or None with the reason in ``problems``."""
        name = key or str(message["cmd"])
        try:
            answer = self._ask(path, message, deadline)
        except ControlError as exc:
            problems[name] = str(exc)
            return None
        if answer.get("ok") is not True:
            problems[name] = cell(answer.get("error"), 200)
            return None
        return answer.get(key) if key else answer


def set_trading(reader: Reader, timeout_s: float, action: SetTrading) -> str:
    """Send a halt or resume; the outcome as one line for the footer (never raises)."""
    message = {
        "cmd": "trading",
        "action": action.action,
        "account": action.account,
        "reason": "tradingd top",
    }
    try:
        answer = control.request(reader.socket_path(), message, timeout_s=timeout_s)
    except ControlError as exc:
        return f"{action.action} {cell(action.account)} not sent: {cell(str(exc), 200)}"
    if answer.get("ok") is not True:
        return f"{action.action} {cell(action.account)} refused: {cell(answer.get('error'), 200)}"
    effective = answer.get("effective")
    state = effective.get(action.account) if isinstance(effective, dict) else None
    warning = answer.get("warning")
    return f"{action.action}: account {cell(action.account)} is now {cell(state)}" + (
        f" (warning: {cell(warning, 120)})" if warning else ""
    )


# ---------------------------------------------------------------------------- keys


class Mode(enum.Enum):
    """What the keys do now."""

    NORMAL = "normal"
    FILTER = "filter"  #: typing the filter
    ACCOUNT = "account"  #: typing the account to halt or resume
    CONFIRM = "confirm"  #: y sends the halt/resume, anything else cancels


@attrs.frozen
class Quit:
    """The view ends."""


@attrs.frozen
class SetTrading:
    """Send ``{"cmd": "trading", "action": action, "account": account}``."""

    action: str
    account: str


@attrs.frozen
class TopKeys:
    """The key state: the mode, the filter in force, what is being typed, the last message."""

    mode: Mode = Mode.NORMAL
    filter: str = ""
    buffer: str = ""
    account: str = ""
    action: str = ""
    message: str = ""

    def footer(self) -> str:
        """The bottom line: the prompt of the mode, else the last message or the key help."""
        if self.mode is Mode.FILTER:
            return f"filter: {self.buffer}_   (Enter applies, Esc cancels)"
        if self.mode is Mode.ACCOUNT:
            return f"halt or resume which account? {self.buffer}_   (Tab completes, Esc cancels)"
        if self.mode is Mode.CONFIRM:
            return f"{self.action} account {self.account}? [y/N]"
        return f"{self.message}   ({KEY_HELP})" if self.message else KEY_HELP


def split_keys(text: str) -> list[str]:
    """Keys from what the terminal sent: characters, with escape sequences (arrows,
    function keys) dropped and a lone Esc kept."""
    keys: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == ESCAPE and i + 1 < len(text) and text[i + 1] in "[O":
            i += 2
            while i < len(text) and not "@" <= text[i] <= "~":
                i += 1
            i += 1
            continue
        keys.append(ch)
        i += 1
    return keys


def _typed(buffer: str, key: str) -> str:
    """``buffer`` after ``key`` (Backspace deletes; other control keys are ignored)."""
    if key in BACKSPACE:
        return buffer[:-1]
    if key.isprintable() and len(buffer) < INPUT_CHARS:
        return buffer + key
    return buffer


def on_key(
    keys: TopKeys, key: str, accounts: Mapping[str, str]
) -> tuple[TopKeys, Quit | SetTrading | None]:
    """The next key state and what to do, for one key (a pure function).

    ``accounts`` is each account's effective trading state as the daemon last
    said (``trading``), empty when unknown: it decides between halt and
    resume, completes names (Tab), and rejects an unknown name before asking.
    """
    if keys.mode is Mode.NORMAL:
        if key in ("q", "Q"):
            return keys, Quit()
        if key == "/":
            return attrs.evolve(keys, mode=Mode.FILTER, buffer=keys.filter, message=""), None
        if key == "h":
            only = next(iter(accounts)) if len(accounts) == 1 else ""
            return attrs.evolve(keys, mode=Mode.ACCOUNT, buffer=only, message=""), None
        if key == ESCAPE and keys.filter:
            return attrs.evolve(keys, filter="", message="filter cleared"), None
        return keys, None
    if keys.mode is Mode.FILTER:
        if key in ENTER:
            return attrs.evolve(keys, mode=Mode.NORMAL, filter=keys.buffer, buffer=""), None
        if key == ESCAPE:
            return attrs.evolve(keys, mode=Mode.NORMAL, buffer=""), None
        return attrs.evolve(keys, buffer=_typed(keys.buffer, key)), None
    if keys.mode is Mode.ACCOUNT:
        if key == ESCAPE:
            return attrs.evolve(keys, mode=Mode.NORMAL, buffer="", message="cancelled"), None
        if key == TAB:
            matches = [a for a in accounts if a.startswith(keys.buffer)]
            if len(matches) == 1:
                return attrs.evolve(keys, buffer=matches[0]), None
            return keys, None
        if key not in ENTER:
            return attrs.evolve(keys, buffer=_typed(keys.buffer, key)), None
        account = keys.buffer.strip()
        if not account:
            return attrs.evolve(keys, mode=Mode.NORMAL, buffer="", message="cancelled"), None
        if accounts and account not in accounts:
            known = ", ".join(sorted(accounts)[:10])
            message = f"no account {account!r} (accounts: {known})"
            return attrs.evolve(keys, mode=Mode.NORMAL, buffer="", message=message), None
        action = "resume" if accounts.get(account) in ("HALTED", "REDUCING") else "halt"
        return attrs.evolve(
            keys, mode=Mode.CONFIRM, buffer="", account=account, action=action
        ), None
    # Mode.CONFIRM
    if key in ("y", "Y"):
        done = attrs.evolve(keys, mode=Mode.NORMAL, message=f"{keys.action} {keys.account}…")
        return done, SetTrading(keys.action, keys.account)
    return attrs.evolve(keys, mode=Mode.NORMAL, message="cancelled: nothing sent"), None


def accounts_of(snapshot: Snapshot | None) -> dict[str, str]:
    """Each account's effective trading state from the last ``trading`` answer (safe)."""
    trading = snapshot.trading if snapshot is not None else None
    effective = trading.get("effective") if isinstance(trading, dict) else None
    if not isinstance(effective, dict):
        return {}
    return {k: v for k, v in effective.items() if isinstance(k, str) and isinstance(v, str)}


# ---------------------------------------------------------------------------- plain text


def _run_plain(args: argparse.Namespace) -> int:
    reader = Reader(args)
    history = History()
    done = 0
    try:
        while args.count is None or done < args.count:
            if done:
                time.sleep(args.interval)
            snapshot = reader.read()
            history.record(snapshot)
            print(f"--- {time.strftime('%H:%M:%S')}  every {args.interval:g}s (Ctrl-C to stop)")
            print(render_text(snapshot, history, args.filter, interval_s=args.interval))
            print(flush=True)
            done += 1
    except KeyboardInterrupt:
        print()
    return EXIT_OK


# ---------------------------------------------------------------------------- terminal


class _Fetcher:
    """A worker thread reading a snapshot every interval (or at once when asked);
    each one is queued and announced by a byte on a pipe the screen selects on."""

    def __init__(self, reader: Reader, interval_s: float) -> None:
        self.reader = reader
        self.snapshots: queue.SimpleQueue[Snapshot] = queue.SimpleQueue()
        self.wake_r, self._wake_w = os.pipe()
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._now = threading.Event()
        self._thread = threading.Thread(target=self._run, name="top-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def refresh_now(self) -> None:
        self._now.set()

    def close(self) -> None:
        """Stop asking (a request under way is left to its timeout: the thread is a
        daemon). The thread closes its end of the pipe itself, so that it never
        writes to a descriptor number reused meanwhile."""
        self._stop.set()
        self._now.set()
        os.close(self.wake_r)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    snapshot = self.reader.read()
                except Exception as exc:  # a bug must show, not freeze the screen
                    snapshot = Snapshot(at=time.time(), error=f"{type(exc).__name__}: {exc}")
                if self._stop.is_set():
                    return
                self.snapshots.put(snapshot)
                os.write(self._wake_w, b".")
                self._now.wait(self._interval_s)
                self._now.clear()
        except OSError:  # the read end is closed: the view has ended
            pass
        finally:
            os.close(self._wake_w)


@contextmanager
def _cbreak(fd: int | None) -> Iterator[None]:
    """Keys one at a time, not echoed (Ctrl-C still interrupts); the terminal restored after."""
    if fd is None:
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class _Screen:
    """The terminal view: state between draws, and one step of the event loop."""

    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        self.keys = TopKeys(filter=args.filter)
        self.history = History()
        self.snapshot: Snapshot | None = None
        self.refreshes = 0

    def take(self, snapshot: Snapshot) -> None:
        self.history.record(snapshot)
        self.snapshot = snapshot
        self.refreshes += 1

    def render(self) -> RenderableType:
        from daemon.cli.top_screen import render_screen  # noqa: PLC0415 - rich: terminal only

        width, height = self.console.size
        snapshot = self.snapshot or Snapshot(
            at=time.time(), problems={"status": "asking the daemon…"}
        )
        return render_screen(
            snapshot,
            self.history,
            filter_text=self.keys.filter,
            footer=self.keys.footer(),
            width=width,
            height=height,
            interval_s=self.args.interval,
        )

    def key(self, key: str, fetcher: _Fetcher) -> bool:
        """Apply one key; False once the view is to end."""
        self.keys, action = on_key(self.keys, key, accounts_of(self.snapshot))
        if isinstance(action, Quit):
            return False
        if isinstance(action, SetTrading):
            outcome = set_trading(fetcher.reader, self.args.timeout, action)
            self.keys = attrs.evolve(self.keys, message=outcome)
            fetcher.refresh_now()
        return True


def _run_terminal(args: argparse.Namespace) -> int:
    from rich.console import Console  # noqa: PLC0415 - rich: terminal only
    from rich.live import Live  # noqa: PLC0415

    console = Console()
    screen = _Screen(args, console)
    keys_fd = sys.stdin.fileno() if sys.stdin.isatty() else None
    fetcher = _Fetcher(Reader(args, keep_last=True), args.interval)
    try:
        with (
            _cbreak(keys_fd),
            Live(
                console=console,
                screen=True,
                auto_refresh=False,
                redirect_stdout=False,
                redirect_stderr=False,
            ) as live,
        ):
            live.update(screen.render(), refresh=True)
            fetcher.start()
            size = console.size
            while args.count is None or screen.refreshes < args.count:
                watched = [fetcher.wake_r] + ([keys_fd] if keys_fd is not None else [])
                ready, _, _ = select.select(watched, [], [], RESIZE_POLL_S)
                changed = False
                if fetcher.wake_r in ready:
                    os.read(fetcher.wake_r, 4096)
                    while not fetcher.snapshots.empty():
                        screen.take(fetcher.snapshots.get_nowait())
                    changed = True
                if keys_fd is not None and keys_fd in ready:
                    data = os.read(keys_fd, 1024)
                    if not data:  # the terminal went away
                        return EXIT_OK
                    for key in split_keys(data.decode("utf-8", errors="replace")):
                        if not screen.key(key, fetcher):
                            return EXIT_OK
                    changed = True
                if console.size != size:
                    size, changed = console.size, True
                if changed:
                    live.update(screen.render(), refresh=True)
    finally:
        fetcher.close()
    return EXIT_OK


def cmd_top(args: argparse.Namespace) -> int:
    """``tradingd top``: the live view on a terminal, plain text otherwise. Exit 0."""
    try:
        if args.plain or not sys.stdout.isatty():
            return _run_plain(args)
        return _run_terminal(args)
    except KeyboardInterrupt:
        return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m daemon.cli.top [OPTIONS]``: the command without ``tradingd``'s dispatch."""
    parser = argparse.ArgumentParser(prog="tradingd top", description="a live view of the daemon")
    add_top_arguments(parser)
    return cmd_top(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
