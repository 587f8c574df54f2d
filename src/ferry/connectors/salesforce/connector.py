"""Salesforce's declaration to the connector registry: its ``target:`` block and how a sink is opened."""

from __future__ import annotations

from typing import Any, cast

from ferry.connectors.salesforce.budget import pipeline_guard
from ferry.connectors.salesforce.config import SalesforceConfig
from ferry.connectors.salesforce.sink import SalesforceSink
from ferry.core.contracts import Sink, SinkContext
from ferry.core.registry import Connector


def open_sink(config: SalesforceConfig, ctx: SinkContext) -> Sink:
    """A SalesforceSink for one pipeline: its API budget guard kept in the pipeline's ledger (when the context
    gives one), and ``ctx.extras["on_bulk_job"]``, if set, told of each Bulk job the moment it exists."""
    guard = None
    if ctx.ledger is not None:
        kw: dict[str, Any] = {} if ctx.clock is None else {"clock": ctx.clock}
        guard = pipeline_guard(config.api_budget, cast(Any, ctx.ledger), ctx.pipeline, **kw)
    sink = SalesforceSink(config, on_bulk_job=ctx.extras.get("on_bulk_job"), budget=guard)
    # The sink's methods are being brought onto the Sink contract on their own; until then it is one by duck type.
    return cast(Sink, sink)


CONNECTOR = Connector(
    system="salesforce",
    sink_config=SalesforceConfig,
    open_sink=open_sink,
    description="Salesforce REST, sObject Collections and Bulk API 2.0 (upsert by external id)",
)
