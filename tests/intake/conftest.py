"""Fixtures of the intake tests: a real Redis, and per-test streams that are deleted after.

Redis runs at 127.0.0.1:6379 on the developers' machines and in CI
(``TRADINGD_TEST_REDIS_URL`` names another). Where it is unreachable the
tests that need it skip with the reason — except under
``TRADINGD_REQUIRE_SERVICES=1`` (CI), where they fail: a missing service
must not pass as a green run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.intake.support import Streams

REDIS_URL = os.environ.get("TRADINGD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _require_services() -> bool:
    return os.environ.get("TRADINGD_REQUIRE_SERVICES") == "1"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis's URL, once it answered PING; skips (or fails in CI) otherwise."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = f"Redis is not reachable at {REDIS_URL}: {exc}"
        if _require_services():
            pytest.fail(f"TRADINGD_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(f"{reason} (start redis-server, or set TRADINGD_TEST_REDIS_URL)")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def streams(redis_url: str) -> Iterator[Streams]:
    """A uuid-named stream, group and dead-letter stream of this test; deleted after it."""
    tag = uuid.uuid4().hex[:12]
    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    names = Streams(
        client,
        url=redis_url,
        stream=f"td-test:{tag}:intents",
        group=f"td-test-{tag}",
        dead=f"td-test:{tag}:dead",
    )
    try:
        yield names
    finally:
        # Deleting a stream deletes its consumer groups.
        client.delete(names.stream, names.dead)
        client.close()
