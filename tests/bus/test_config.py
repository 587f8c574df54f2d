"""FERRY_BUS_URL and FERRY_BUS_* settings."""

from __future__ import annotations

import pytest

from ferry.bus.config import bus_settings
from ferry.core.bus import BusConfigError


def test_no_url_means_no_bus() -> None:
    assert bus_settings({}) is None
    assert bus_settings({"FERRY_BUS_URL": "  "}) is None


def test_settings_come_from_the_environment() -> None:
    s = bus_settings({"FERRY_BUS_URL": "nats://127.0.0.1:4222", "FERRY_BUS_PARTITIONS": "16",
                      "FERRY_BUS_ACK_WAIT": "60", "FERRY_BUS_MAX_DELIVER": "8"})
    assert s is not None and (s.partitions, s.ack_wait, s.max_deliver) == (16, 60.0, 8)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"FERRY_BUS_URL": "http://u:pw@host:4222"}, "nats://"),
        ({"FERRY_BUS_URL": "nats://h:4222", "FERRY_BUS_MAX_DELIVER": "0"}, "FERRY_BUS_MAX_DELIVER"),
        ({"FERRY_BUS_URL": "nats://h:4222", "FERRY_BUS_FETCH_TIMEOUT": "40"}, "fetch_timeout must be below"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_problem_without_secrets(env: dict[str, str], named: str) -> None:
    with pytest.raises(BusConfigError, match=named) as caught:
        bus_settings(env)
    assert "pw" not in str(caught.value)
