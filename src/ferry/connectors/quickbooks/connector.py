"""QuickBooks Online's declaration to the connector registry: its ``target:`` block and how a sink is opened."""

from __future__ import annotations

from ferry.connectors.quickbooks.config import QuickBooksConfig
from ferry.connectors.quickbooks.sink import QuickBooksSink
from ferry.core.contracts import Sink, SinkContext
from ferry.core.registry import Connector


def open_sink(config: QuickBooksConfig, ctx: SinkContext) -> Sink:
    return QuickBooksSink(config, ctx)


CONNECTOR = Connector(
    system="quickbooks",
    sink_config=QuickBooksConfig,
    open_sink=open_sink,
    description="QuickBooks Online Accounting API v3 (create/sparse update by ferry's id map, requestid, batch)",
)
