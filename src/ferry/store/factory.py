"""One place that opens the state store a process uses, chosen by ``FERRY_STATE_URL``.

Unset (or ``sqlite:///...``): the embedded SQLite file (today's behaviour: ``$FERRY_HOME/ferry.db``).
``postgresql://...``: the PostgreSQL adapter (imported only then: the embedded mode never loads psycopg).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs, urlsplit

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

        options: dict[str, Any] = {}
        if connections is not None:
            options["max_size"] = max(1, connections)
        timeout = _connect_timeout(url.url)
        if timeout is not None:
            options["connect_timeout"] = timeout
        return PostgresStore(url.url, lock_dir=ferry_home(), **options)
    from ferry.store.sqlite import Store

    assert url.path is not None
    return Store(url.path)


def _connect_timeout(url: str) -> float | None:
    """libpq's ``?connect_timeout=N`` of the URL, also as the longest wait for the pool's first connection (else
    the pool keeps retrying a refused server for its default 10 s, whatever the URL said)."""
    values = parse_qs(urlsplit(url).query).get("connect_timeout")
    try:
        seconds = float(values[-1]) if values else 0.0
    except ValueError:
        return None  # libpq reports a malformed value itself, naming it
    return max(1.0, seconds) if seconds > 0 else None  # 0 (libpq: wait forever) keeps the pool's default
