"""``FERRY_STATE_URL``: which state store a process opens, and how its URL is shown (never with a password)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ferry.errors import ConfigError

STATE_URL_ENV = "FERRY_STATE_URL"
_POSTGRES_SCHEMES = ("postgresql", "postgres")
# user:password@ in any URL-looking text; password=... in a libpq key/value string.
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]*(?P<at>@)", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)


def mask_url(text: str) -> str:
    """``text`` with every password in it (URL userinfo or ``password=``) replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}***{m.group('at')}", text)
    return _KV_PASSWORD.sub(lambda m: f"{m.group('head')}***", text)


@dataclass(frozen=True, slots=True)
class StateUrl:
    kind: str  # "sqlite" | "postgresql"
    url: str  # as given (may hold a password: show ``safe``)
    path: Path | None = None  # sqlite: the database file

    @property
    def safe(self) -> str:
        return mask_url(self.url)


def parse_state_url(url: str, default_sqlite: Path) -> StateUrl:
    """``sqlite:///abs/path.db``, ``sqlite:///rel.db`` (relative to the working directory), ``postgresql://...``
    (libpq URL, ``?sslmode=`` and friends kept); empty: SQLite at ``default_sqlite``."""
    url = url.strip()
    if not url:
        return StateUrl("sqlite", f"sqlite:///{default_sqlite}", default_sqlite)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        # sqlite:///x.db -> "x.db" (relative); sqlite:////abs/x.db -> "/abs/x.db", as SQLAlchemy reads them.
        raw = unquote(url.split("://", 1)[1])
        raw = raw[1:] if raw.startswith("/") else raw
        if not raw:
            raise ConfigError(f"{STATE_URL_ENV}={mask_url(url)}: no database file after sqlite:///")
        return StateUrl("sqlite", url, Path(raw).expanduser().resolve())
    if scheme in _POSTGRES_SCHEMES:
        if not parts.hostname and "host=" not in parts.query:
            raise ConfigError(f"{STATE_URL_ENV}={mask_url(url)}: no host (postgresql://user@host:5432/dbname)")
        return StateUrl("postgresql", url)
    raise ConfigError(
        f"{STATE_URL_ENV}={mask_url(url)}: unknown scheme {scheme or '(none)'!r}; "
        "use sqlite:///path/to/ferry.db or postgresql://user@host:5432/dbname"
    )
