"""``[intake]``: defaults, and every bad value a clear config error."""

from __future__ import annotations

import pytest

from daemon import config as c
from daemon.errors import ConfigError

ACCOUNTS = '[venues.sim]\nrest_url = "http://127.0.0.1:1"\nws_url = "ws://127.0.0.1:1"\n'
ACCOUNTS += '[accounts.main]\nvenue = "sim"\n'


def test_defaults_are_off_and_valid() -> None:
    intake = c.defaults().intake
    assert not intake.enabled
    assert intake.block_ms <= 1000
    assert intake.problems(has_accounts=False) == []


def test_an_enabled_intake_with_a_password_reference_loads() -> None:
    loaded = c.loads(
        ACCOUNTS
        + '[intake]\nenabled = true\nredis_url = "redis://tradingd@10.0.0.5:6380/2"\n'
        + 'password = { env = "REDIS_PASSWORD" }\nconsumer = "host-a"\n',
        source="t.toml",
    )
    assert loaded.intake.enabled and loaded.intake.password is not None
    assert loaded.intake.consumer == "host-a"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('redis_url = "redis://:hunter2@127.0.0.1:6379/0"', "intake.redis_url: must not contain"),
        ('redis_url = "http://127.0.0.1:6379"', 'must start with "redis://"'),
        ('redis_url = "redis://127.0.0.1:99999"', "intake.redis_url: not a valid URL"),
        ('redis_url = "redis://127.0.0.1:6379/x"', "database number"),
        ('redis_url = "redis://127.0.0.1:6379/0?socket_timeout=1"', "query"),
        ('redis_url = "unix://"', "socket path"),
        ("block_ms = 5000", "intake.block_ms"),
        ("block_ms = 0", "intake.block_ms"),
        ("batch = 0", "intake.batch"),
        ("max_deliveries = 0", "intake.max_deliveries"),
        ("claim_idle_ms = 500\nblock_ms = 800", "must be greater than intake.block_ms"),
        ('stream = ""', "intake.stream: must be 1-200"),
        ('group = "a b"', "intake.group: must be 1-200"),
        ('consumer = "tab\\there"', "intake.consumer: must be 1-200"),
        ('dead_letter_stream = "tradingd:intents"', "must differ from intake.stream"),
        ('password = "inline"', "intake.password"),
        ("unknown = 1", "intake.unknown: unknown key"),
    ],
)
def test_bad_values_are_config_errors(body: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        c.loads(ACCOUNTS + "[intake]\n" + body + "\n", source="t.toml")
    assert message in str(refused.value)


def test_enabled_without_accounts_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"intake.enabled: the intake needs at least one"):
        c.loads("[intake]\nenabled = true\n", source="t.toml")
