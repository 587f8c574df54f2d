"""Which bus the configuration names: ``FERRY_BUS_URL`` (``nats://host:4222``), or none (embedded mode).

Tuning comes from ``FERRY_BUS_<FIELD>`` variables (``FERRY_BUS_PARTITIONS=16``, ``FERRY_BUS_ACK_WAIT=60``...),
each a field of ``JetStreamSettings``; a bad value is a ``BusConfigError`` naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import ValidationError

from ferry.bus.jetstream import JetStreamSettings, _safe_url
from ferry.core.bus import BusConfigError

BUS_URL_ENV = "FERRY_BUS_URL"
_PREFIX = "FERRY_BUS_"


def bus_settings(env: Mapping[str, str] | None = None) -> JetStreamSettings | None:
    """The configured bus, or None when ``FERRY_BUS_URL`` is unset (embedded mode keeps no bus)."""
    env = os.environ if env is None else env
    url = env.get(BUS_URL_ENV, "").strip()
    if not url:
        return None
    values: dict[str, str] = {"url": url}
    for name in JetStreamSettings.model_fields:
        key = _PREFIX + name.upper()
        if name != "url" and key in env:
            values[name] = env[key]
    try:
        return JetStreamSettings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_PREFIX + str(e['loc'][0]).upper() if e['loc'] else BUS_URL_ENV}: {e['msg']}" for e in exc.errors()
        )
        raise BusConfigError(f"bus configuration ({_safe_url(url)}): {problems}") from None
