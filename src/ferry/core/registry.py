"""How a connector package declares itself: its ``system:`` name, config model and factories.

Each ``ferry.connectors.<system>`` package exposes ``CONNECTOR = Connector(...)``; ``ferry.connectors.registry``
collects the built-in ones (and those other packages register under the ``ferry.connectors`` entry point
group), and the pipeline loader builds its discriminated union of ``source:``/``target:`` blocks from them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ferry.core.contracts import Sink, SinkContext, Source
from ferry.core.events import EventSource
from ferry.core.webhooks import WebhookReceiver


@dataclass(frozen=True, slots=True)
class Connector:
    system: str  # the `system:` literal of its config blocks
    # The pydantic model of its `source:` block (a field `system: Literal["<system>"]`), if it is a source.
    source_config: type[BaseModel] | None = None
    open_source: Callable[[Any], Source] | None = None
    # The pydantic model of its `target:` block, if it is a sink.
    sink_config: type[BaseModel] | None = None
    open_sink: Callable[[Any, SinkContext], Sink] | None = None
    description: str = ""
    # Its webhooks in, if it sends any (``ferry serve``): built from the `source:` block, the signing secret and
    # the origin deliveries must name (a shop domain, a site URL; None: the connector's default).
    webhooks: Callable[[Any, str, str | None], WebhookReceiver] | None = None
    # Its change stream (``ferry serve``), built from the `source:` block; None when the block does not ask for
    # one (``events:`` unset) or the system has none.
    events: Callable[[Any], EventSource | None] | None = None
