"""A state DB an older ferry wrote (a `cursors` table, and `reads` for a read under way) opens with each row
turned into the stream's read state, the old tables gone, nothing else touched."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ferry.store import Store

# The two tables as ferry created them before read states (ferry.store.sqlite at b368456), and its staging.
OLD_SCHEMA = """
CREATE TABLE cursors (
    pipeline TEXT NOT NULL,
    stream TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (pipeline, stream)
);
CREATE TABLE staging (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline TEXT NOT NULL,
    stream TEXT NOT NULL,
    key TEXT NOT NULL,
    version TEXT NOT NULL,
    payload BLOB NOT NULL,
    run_id INTEGER NOT NULL,
    UNIQUE (pipeline, stream, key, version)
);
CREATE TABLE reads (
    pipeline TEXT NOT NULL,
    stream TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    since TEXT,
    next_url TEXT,
    newest TEXT,
    started_at TEXT NOT NULL,
    phase TEXT NOT NULL,
    pages INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (pipeline, stream)
);
"""
V1, V2, V3 = "2026-03-01T00:00:00.000000Z", "2026-03-02T00:00:00.000000Z", "2026-03-03T00:00:00.000000Z"


def old_database(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
        db.executemany(
            "INSERT INTO cursors VALUES (?, ?, ?, ?)",
            [("p", "orders", V1, V1), ("p", "customers", V1, V1), ("q", "orders", V2, V2)],
        )
        db.executemany(
            "INSERT INTO reads VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                ("p", "customers", 4, V1, "https://shop/customers.json?page_info=abc", V3, V2, "ordered", 3),
                ("p", "products", 4, None, "https://shop/products.json?page_info=x", V2, V1, "pages", 1),
            ],
        )
        db.execute("INSERT INTO staging (pipeline, stream, key, version, payload, run_id) "
                   "VALUES ('p', 'customers', '7', ?, '{\"id\": 7}', 4)", (V3,))


def test_cursors_and_reads_become_read_states(tmp_path: Path) -> None:
    old_database(tmp_path / "ferry.db")
    store = Store(tmp_path / "ferry.db")
    assert store.read_state("p", "orders") == {"cursor": V1}
    assert store.read_state("q", "orders") == {"cursor": V2}
    assert store.read_state("p", "customers") == {
        "cursor": V1,
        "read": {"since": V1, "next_url": "https://shop/customers.json?page_info=abc", "newest": V3,
                 "started_at": V2, "phase": "ordered", "pages": 3},
    }
    assert store.read_state("p", "products") == {
        "cursor": None,
        "read": {"since": None, "next_url": "https://shop/products.json?page_info=x", "newest": V2,
                 "started_at": V1, "phase": "pages", "pages": 1},
    }
    assert [(r.key, r.version) for chunk in store.staged("p", ["customers"]) for r in chunk] == [("7", V3)]
    store.close()
    with sqlite3.connect(tmp_path / "ferry.db") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not tables & {"cursors", "reads"}


def test_the_migration_runs_once(tmp_path: Path) -> None:
    old_database(tmp_path / "ferry.db")
    Store(tmp_path / "ferry.db").close()
    store = Store(tmp_path / "ferry.db")
    store.stage("p", "orders", 5, [], {"cursor": V3})
    store.close()
    assert Store(tmp_path / "ferry.db").read_state("p", "orders") == {"cursor": V3}
