"""One place that opens the state store a process uses, chosen by ``FERRY_STATE_URL``.

Unset (or ``sqlite:///...``): the embedded SQLite file (today's behaviour: ``$FERRY_HOME/ferry.db``).
``postgresql://...``: the PostgreSQL adapter (imported only then: the embedded mode never loads psycopg).
"""

from __future__ import annotations

import os
from typing import Any

from ferry.paths import ferry_home
from ferry.store.url import STATE_URL_ENV, StateUrl, parse_state_url


def configured_state_url() -> StateUrl:
    return parse_state_url(os.environ.get(STATE_URL_ENV, ""), ferry_home() / "ferry.db")


def open_store(url: StateUrl | None = None, *, connections: int | None = None) -> Any:
    """The configured store: a ``StateStore`` (typed Any: the engine and cli still use SQLite's ``Store`` as
    their annotation, and both adapters have the attributes they use, ``path`` among them).

    ``connections``: the PostgreSQL pool's size (default 4); a ``ferry worker`` sizes it to the items it holds
    at once, or its items queue for a connection (ignored by the embedded SQLite file)."""
    url = url or configured_state_url()
    if url.kind == "postgresql":
        from ferry.store.postgres import PostgresStore

        if connections is not None:
            return PostgresStore(url.url, lock_dir=ferry_home(), max_size=max(1, connections))
        return PostgresStore(url.url, lock_dir=ferry_home())
    from ferry.store.sqlite import Store

    assert url.path is not None
    return Store(url.path)
