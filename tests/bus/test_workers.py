"""Three worker processes on one bus, one SIGKILLed mid-run: every item done, none lost, repeats bounded."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ferry.bus.work import LoadBatch, encode, msg_id, subject_for
from tests.bus.helpers import open_bus, stream_messages
from tests.bus.natsserver import NatsServer

ROOT = Path(__file__).resolve().parents[2]
ITEMS = 300


def _effects(db: Path) -> dict[str, int]:
    with sqlite3.connect(db, timeout=30) as c:
        return dict(c.execute("SELECT msg_id, runs FROM effects").fetchall())


@pytest.mark.timeout(120)
async def test_a_killed_worker_loses_nothing(nats_server: NatsServer, tmp_path: Path) -> None:
    effects_db, dedup_db = tmp_path / "effects.db", tmp_path / "dedup.db"
    with sqlite3.connect(effects_db) as c:
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE effects (msg_id TEXT PRIMARY KEY, runs INTEGER NOT NULL)")
    bus = await open_bus(nats_server.url, ack_wait=2.0, max_ack_pending=4, max_in_flight=8)
    items = [LoadBatch("shop-to-sf", 1, "Order", ((f"gid-{i}", "1"),)) for i in range(ITEMS)]
    for item in items:
        await bus.publish(subject_for(item, 4), encode(item), msg_id(item))
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    workers = [
        subprocess.Popen([sys.executable, "-m", "tests.bus.worker_proc", nats_server.url, str(effects_db),
                          str(dedup_db)], cwd=ROOT, env=env, stdout=subprocess.PIPE)
        for _ in range(3)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(_effects(effects_db)) < ITEMS // 3:
            assert time.monotonic() < deadline, "no progress"
            await asyncio.sleep(0.05)
        workers[0].send_signal(signal.SIGKILL)  # mid-run, with items in hand
        while len(_effects(effects_db)) < ITEMS:
            assert time.monotonic() < deadline, f"only {len(_effects(effects_db))} of {ITEMS} done"
            assert all(w.poll() is None for w in workers[1:]), "a surviving worker died"
            await asyncio.sleep(0.1)
        for _ in range(50):
            if await stream_messages(bus) == 0:
                break
            await asyncio.sleep(0.1)
        assert await stream_messages(bus) == 0  # every item acknowledged
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
            w.wait(10)
        await bus.close()
    done = _effects(effects_db)
    assert set(done) == {msg_id(i) for i in items}  # nothing lost
    repeats = sum(done.values()) - ITEMS
    assert repeats <= 8  # only what the killed worker held (its in-flight bound) can have run twice
