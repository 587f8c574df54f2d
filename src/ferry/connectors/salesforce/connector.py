"""Salesforce's declaration to the connector registry: its ``target:`` block and how a sink is opened."""

from __future__ import annotations

from ferry.connectors.salesforce.config import SalesforceConfig
from ferry.connectors.salesforce.sink import SalesforceSink
from ferry.core.contracts import Sink, SinkContext
from ferry.core.registry import Connector


def open_sink(config: SalesforceConfig, ctx: SinkContext) -> Sink:
    """A SalesforceSink for one pipeline: its API budget guard kept in the context's ledger (``SinkContext``)."""
    return SalesforceSink(config, ctx)


CONNECTOR = Connector(
    system="salesforce",
    sink_config=SalesforceConfig,
    open_sink=open_sink,
    description="Salesforce REST, sObject Collections and Bulk API 2.0 (upsert by external id)",
)
