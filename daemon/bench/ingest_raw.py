"""The ingest bench's raw baseline: a bare trio-websocket client of the trade stream, as a process.

``tradingd bench ingest`` starts it as ``python -m daemon.bench.ingest_raw
URL COUNT`` (:class:`RawClientProcess`): it connects to the simulator's
stream URL (the one tradingd's feed uses: the combined endpoint with
BTCUSDT's trade and depth streams), says so on stdout, then receives frames
with ``get_message`` and ``json.loads`` each one — nothing else — until
``COUNT`` trade frames have arrived, and prints what it measured, one JSON
object a line::

    {"connected": true}
    {"frames": F, "trades": COUNT, "first_s": t0, "last_s": t1, "cpu_s": c}

``first_s``/``last_s`` are the wall clock (``time.time()``) at the first
and the last frame; ``cpu_s`` is this process's CPU from connected to done.
Any failure ends it with ``{"error": "..."}``. It runs alone in its own
process and Trio loop, so it pays for nothing but the receiving: the floor
tradingd's end-to-end rate is compared with.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Final

import trio
import trio_websocket

from daemon.bench.common import BenchError, kill, open_module_process, read_line, self_cpu_s
from daemon.venues.binance.codec import MAX_FRAME_BYTES

__all__ = ["RawClientProcess", "receive_trades"]

#: Messages trio-websocket may buffer (tradingd's ``stream_queue_size`` default).
QUEUE_SIZE: Final = 1024
#: Bound of connecting, and of receiving all frames (the bench passes its own).
CONNECT_TIMEOUT_S: Final = 10.0


async def receive_trades(
    url: str, count: int, *, timeout_s: float, queue_size: int = QUEUE_SIZE
) -> None:
    """Connect, report it, receive ``count`` trade frames, report them (this process's main)."""
    out = trio.lowlevel.FdStream(os.dup(sys.stdout.fileno()))

    async def say(answer: dict[str, Any]) -> None:
        await out.send_all(json.dumps(answer).encode() + b"\n")

    loads = json.loads
    frames = trades = 0
    first_s: float | None = None
    try:
        async with trio_websocket.open_websocket_url(
            url,
            message_queue_size=queue_size,
            max_message_size=MAX_FRAME_BYTES,
            connect_timeout=CONNECT_TIMEOUT_S,
            disconnect_timeout=CONNECT_TIMEOUT_S,
        ) as ws:
            await say({"connected": True})
            cpu_before = sum(self_cpu_s())
            with trio.fail_after(timeout_s):
                while trades < count:
                    message = await ws.get_message()
                    frame = loads(message)
                    if first_s is None:
                        first_s = time.time()
                    frames += 1
                    if frame["stream"].endswith("@trade"):
                        trades += 1
            last_s = time.time()
            cpu_s = sum(self_cpu_s()) - cpu_before
            await say(
                {
                    "frames": frames,
                    "trades": trades,
                    "first_s": first_s,
                    "last_s": last_s,
                    "cpu_s": cpu_s,
                }
            )
    except (OSError, trio.TooSlowError, trio_websocket.HandshakeError) as exc:
        await say({"error": f"{type(exc).__name__}: {exc}", "frames": frames, "trades": trades})
    except trio_websocket.ConnectionClosed as exc:
        await say({"error": f"connection closed: {exc}", "frames": frames, "trades": trades})
    finally:
        await out.aclose()


class RawClientProcess:
    """The bench's handle on one raw client subprocess (started by :meth:`start`)."""

    def __init__(self, proc: trio.Process, log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path
        self._buffer = bytearray()

    @classmethod
    async def start(
        cls, url: str, count: int, workdir: Path, *, timeout_s: float
    ) -> RawClientProcess:
        """Start it and wait until it is connected (bounded by :data:`CONNECT_TIMEOUT_S`)."""
        log_path = workdir / "raw-client.log"
        proc = await open_module_process(
            ["daemon.bench.ingest_raw", url, str(count), "--timeout", str(timeout_s)],
            log_path=log_path,
            cwd=workdir,
            pipes=True,
        )
        client = cls(proc, log_path)
        try:
            answer = await client.answer(CONNECT_TIMEOUT_S + 20)
            if not answer.get("connected"):
                raise BenchError(f"raw client: unexpected first line {answer}")
        except BaseException:
            await client.aclose()
            raise
        return client

    async def answer(self, timeout_s: float) -> dict[str, Any]:
        """Its next line (an error line raises :class:`BenchError`)."""
        stdout = self.proc.stdout
        assert stdout is not None
        line: bytes | None = None
        with trio.move_on_after(timeout_s):
            try:
                line = await read_line(stdout, self._buffer)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                line = None
            if line is None:
                raise BenchError(f"the raw client exited:\n{self._log_tail()}")
        if line is None:
            raise BenchError(f"the raw client did not answer within {timeout_s:g} s")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise BenchError(f"raw client: {answer['error']} (after {answer.get('trades')} trades)")
        return answer

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    async def aclose(self) -> None:
        """Reap it (it exits once done); killed when it does not within a few seconds."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(5):
                await self.proc.wait()
            if self.proc.returncode is None:
                await kill(self.proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m daemon.bench.ingest_raw")
    parser.add_argument("url", help="the stream URL")
    parser.add_argument("count", type=int, help="trade frames to receive")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound of receiving them")
    parser.add_argument("--queue-size", type=int, default=QUEUE_SIZE)
    args = parser.parse_args(argv)
    trio.run(
        lambda: receive_trades(
            args.url, args.count, timeout_s=args.timeout, queue_size=args.queue_size
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
