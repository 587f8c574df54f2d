"""The test server finder: a missing nats-server fails the run under CI instead of skipping quietly."""

from __future__ import annotations

import pytest
from _pytest.outcomes import Failed, Skipped

from tests.bus import natsserver


def test_a_missing_server_fails_under_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(natsserver, "nats_server_binary", lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(Failed, match="nats-server not found"):
        natsserver.require_nats_server()
    monkeypatch.delenv("CI")
    with pytest.raises(Skipped):
        natsserver.require_nats_server()
