"""Secrets never rendered: payload values under a key that names a secret are masked before any page shows them."""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
# Keys whose values are credentials in the payloads ferry stores (source records, mapped payloads, errors).
SECRET_KEY = re.compile(
    r"(token|secret|password|passwd|authorization|private_key|api_key|apikey|assertion|session|credential"
    r"|client_secret|signature|cookie)",
    re.I,
)


def mask_secrets(value: Any) -> Any:
    """A copy of a JSON-like value with every secret-named key's value replaced by ``***``, at any depth."""
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and SECRET_KEY.search(k) and v not in (None, "") else mask_secrets(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


def mask_known(text: str, secrets: set[str]) -> str:
    """``text`` with every occurrence of a known secret value (from the pipelines' environment) masked."""
    for s in sorted(secrets, key=len, reverse=True):
        if s:
            text = text.replace(s, MASK)
    return text
