"""The connectors ferry knows: each built-in package's ``CONNECTOR``, and those other packages register.

A built-in connector is a subpackage of ``ferry.connectors`` exposing ``CONNECTOR = Connector(...)``
(``ferry.core.registry``); a third-party one declares an entry point in the ``ferry.connectors`` group that
loads its ``Connector``. The engine reaches connectors only through here: it opens a pipeline's source and
sink by the ``system:`` of their blocks, and the pipeline loader builds its ``source:``/``target:`` unions
from the config models collected here.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from importlib.metadata import entry_points
from typing import Any

import structlog
from pydantic import BaseModel

import ferry.connectors
from ferry.core.contracts import Sink, SinkContext, Source
from ferry.core.events import EventSource
from ferry.core.registry import Connector
from ferry.core.webhooks import WebhookReceiver
from ferry.errors import ConfigError

log = structlog.get_logger("ferry.connectors.registry")

ENTRY_POINT_GROUP = "ferry.connectors"


@functools.cache
def connectors() -> dict[str, Connector]:
    """Every connector by system: built-in ones first (a third-party package cannot replace one)."""
    found: dict[str, Connector] = {}
    for info in sorted(pkgutil.iter_modules(ferry.connectors.__path__), key=lambda i: i.name):
        if not info.ispkg:
            continue
        declared = getattr(importlib.import_module(f"ferry.connectors.{info.name}"), "CONNECTOR", None)
        if isinstance(declared, Connector):
            found[declared.system] = declared
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            declared = ep.load()
        except Exception as exc:  # a broken plug-in must not stop pipelines that do not use it
            log.warning("connector.load_failed", entry_point=ep.name, error=f"{type(exc).__name__}: {exc}")
            continue
        if not isinstance(declared, Connector):
            log.warning("connector.not_a_connector", entry_point=ep.name)
        elif declared.system in found:
            log.warning("connector.duplicate", entry_point=ep.name, system=declared.system)
        else:
            found[declared.system] = declared
    return found


def connector(system: str) -> Connector:
    try:
        return connectors()[system]
    except KeyError:
        known = ", ".join(sorted(connectors())) or "none"
        raise ConfigError(f"no connector for system {system!r}; known: {known}") from None


def source_systems() -> list[str]:
    return sorted(s for s, c in connectors().items() if c.source_config is not None and c.open_source is not None)


def sink_systems() -> list[str]:
    return sorted(s for s, c in connectors().items() if c.sink_config is not None and c.open_sink is not None)


def source_configs() -> list[type[BaseModel]]:
    """The config model of every source's ``source:`` block (each with its ``system`` literal)."""
    return [c.source_config for s in source_systems() if (c := connectors()[s]).source_config is not None]


def sink_configs() -> list[type[BaseModel]]:
    """The config model of every sink's ``target:`` block."""
    return [c.sink_config for s in sink_systems() if (c := connectors()[s]).sink_config is not None]


def open_source(config: Any) -> Source:
    """The Source a ``source:`` block describes (not yet entered: ``async with open_source(cfg) as source``)."""
    c = connector(_system_of(config))
    if c.open_source is None:
        raise ConfigError(f"{c.system} cannot be a source; sources: {', '.join(source_systems())}")
    return c.open_source(config)


def open_sink(config: Any, ctx: SinkContext) -> Sink:
    """The Sink a ``target:`` block describes, for the pipeline in ``ctx``."""
    c = connector(_system_of(config))
    if c.open_sink is None:
        raise ConfigError(f"{c.system} cannot be a target; targets: {', '.join(sink_systems())}")
    return c.open_sink(config, ctx)


def open_webhooks(config: Any, secret: str, origin: str | None = None) -> WebhookReceiver:
    """The webhook receiver of the system a ``source:`` block reads (``ferry serve``)."""
    c = connector(_system_of(config))
    if c.webhooks is None:
        with_hooks = ", ".join(s for s, k in connectors().items() if k.webhooks is not None)
        raise ConfigError(f"{c.system} sends no webhooks ferry can take in; those that do: {with_hooks}")
    return c.webhooks(config, secret, origin)


def open_events(config: Any) -> EventSource | None:
    """The change stream a ``source:`` block asks for (``ferry serve``), or None when it asks for none."""
    c = connector(_system_of(config))
    return c.events(config) if c.events is not None else None


def _system_of(config: Any) -> str:
    system = getattr(config, "system", None)
    if not isinstance(system, str):
        raise ConfigError(f"a connector config needs a `system:`; got {type(config).__name__}")
    return system
