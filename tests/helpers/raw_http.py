"""A raw HTTP/1.1 client on a Trio socket: it parses exactly what the server sends.

For the wire-level tests of :mod:`daemon.http` and of the admin API (keep-alive,
pipelining, malformed input, limits, timeouts), where a real client would hide
what arrived.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio


@attrs.frozen
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RawClient:
    """A raw socket plus a response reader that parses exactly what arrives."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        self.buffer += data
        return bool(data)

    async def read_response(self, *, head: bool = False) -> RawResponse:
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill():
                raise EOFError(f"connection closed; got {bytes(self.buffer)!r}")
        raw_head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
        version, status, _ = status_line.split(" ", 2)
        assert version == "HTTP/1.1"
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"duplicate header {name}"
            headers[name.lower()] = value.strip()
        length = 0 if head or int(status) in (204, 304) else int(headers["content-length"])
        self.buffer = bytearray(rest)
        while len(self.buffer) < length:
            if not await self._fill():
                raise EOFError("connection closed in the body")
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return RawResponse(int(status), headers, body)

    async def at_eof(self) -> bool:
        """True when the server closed the connection (and sent nothing more)."""
        if self.buffer:
            return False
        try:
            return not await self._fill()
        except trio.BrokenResourceError:  # reset counts as closed
            return True


@asynccontextmanager
async def raw_connection(address: tuple[str, int]) -> AsyncIterator[RawClient]:
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        yield RawClient(stream)
