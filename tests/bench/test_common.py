"""The benchmarks' shared helpers (:mod:`daemon.bench.common`)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import trio
import trio.testing

from daemon.bench.common import (
    BenchError,
    cpu_share,
    fmt,
    ms,
    process_cpu_s,
    ratio,
    read_line,
    self_cpu_s,
    write_private,
)


async def test_read_line_joins_chunks_and_keeps_what_follows() -> None:
    send, receive = trio.testing.memory_stream_one_way_pair()
    buffer = bytearray()
    with trio.fail_after(5):
        await send.send_all(b'{"a"')
        await send.send_all(b': 1}\n{"b": 2}\n{"c"')
        assert await read_line(receive, buffer) == b'{"a": 1}'
        assert await read_line(receive, buffer) == b'{"b": 2}'
        await send.send_all(b": 3}\n")
        await send.aclose()
        assert await read_line(receive, buffer) == b'{"c": 3}'
        assert await read_line(receive, buffer) is None


async def test_read_line_refuses_a_stream_that_ends_inside_a_line() -> None:
    send, receive = trio.testing.memory_stream_one_way_pair()
    with trio.fail_after(5):
        await send.send_all(b'{"half": ')
        await send.aclose()
        with pytest.raises(BenchError, match="inside a line"):
            await read_line(receive, bytearray())


def test_write_private_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = write_private(tmp_path / "secret", "first, longer text")
        write_private(path, "second")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text(encoding="utf-8") == "second"


def test_process_cpu_of_this_process_agrees_with_getrusage() -> None:
    deadline = sum(self_cpu_s()) + 0.2
    while sum(self_cpu_s()) < deadline:  # burn some CPU, so both clocks moved
        pass
    from_proc = process_cpu_s(os.getpid())
    assert from_proc is not None
    # /proc counts clock ticks (usually 10 ms); getrusage is finer.
    assert abs(from_proc - sum(self_cpu_s())) < 0.1


def test_formatting_helpers_pass_none_through() -> None:
    assert ms(0.0123456) == 12.346
    assert ms(None) is None
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None
    assert ratio(1.0, 0.0) is None
    assert cpu_share(1.0, 4.0) == 0.25
    assert cpu_share(None, 4.0) is None
    assert cpu_share(1.0, 0.0) is None
    assert fmt(None) == "-"
    assert fmt(1.23456, ".2f") == "1.23"
