"""A `ferry worker` started while PostgreSQL is away (restarting, or started after the workers) waits for it instead
of exiting 6 at once (a service manager restarting it would only spin); past its wait it still exits 6."""

from __future__ import annotations

import threading
import time

import pytest

from ferry.cli.worker import shared_store
from ferry.errors import StateError
from ferry.store.postgres import migrate
from tests.store.postgres_server import start_server


# ~15 s: the store's own connect already waits 10 s, so only a longer outage shows the worker's wait.
@pytest.mark.slow
def test_a_worker_waits_for_a_state_database_that_is_away(monkeypatch: pytest.MonkeyPatch) -> None:
    server = start_server()
    try:
        url = server.fresh_database()
        migrate(url)
        monkeypatch.setenv("FERRY_STATE_URL", url)
        server.crash()
        back = threading.Timer(12.0, server.start)
        back.start()
        started = time.monotonic()
        store = shared_store(wait=60)
        try:
            assert time.monotonic() - started >= 11.0
            assert store.outbox_count("p") == 0
        finally:
            store.close()
        back.join()
        server.crash()
        with pytest.raises(StateError):
            shared_store(wait=0.0)  # stays away past the wait: the worker exits 6 as before
    finally:
        server.cleanup()
