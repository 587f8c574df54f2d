"""The connectors ferry knows, by their ``system:`` name: how the engine opens a source or a sink it does not name.

Each ``ferry.connectors.<system>`` package exposes ``CONNECTOR`` (``ferry.core.registry.Connector``).
"""

from __future__ import annotations

import importlib
from typing import Any

from ferry.core.contracts import Sink, SinkContext
from ferry.core.registry import Connector
from ferry.errors import ConfigError


def connector(system: str) -> Connector:
    """The connector of ``system`` (its package ``ferry.connectors.<system>``)."""
    try:
        module = importlib.import_module(f"ferry.connectors.{system}")
    except ModuleNotFoundError:
        raise ConfigError(f"no connector for system {system!r}") from None
    found = getattr(module, "CONNECTOR", None)
    if not isinstance(found, Connector):
        raise ConfigError(f"ferry.connectors.{system} declares no CONNECTOR")
    return found


def open_sink(config: Any, context: SinkContext) -> Sink:
    """The sink a pipeline's ``target:`` block describes (entered with ``async with``)."""
    system = str(getattr(config, "system", ""))
    factory = connector(system).open_sink
    if factory is None:
        raise ConfigError(f"{system} cannot be a target")
    return factory(config, context)
