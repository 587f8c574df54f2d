"""Salesforce's declaration to the connector registry: its ``source:`` and ``target:`` blocks and how each opens."""

from __future__ import annotations

from ferry.connectors.salesforce.config import SalesforceConfig
from ferry.connectors.salesforce.read_source import SalesforceReadSource
from ferry.connectors.salesforce.sink import SalesforceSink
from ferry.connectors.salesforce.source_config import SalesforceSourceConfig
from ferry.core.contracts import Sink, SinkContext, Source
from ferry.core.events import EventSource
from ferry.core.registry import Connector


def open_sink(config: SalesforceConfig, ctx: SinkContext) -> Sink:
    """A SalesforceSink for one pipeline: its API budget guard kept in the context's ledger (``SinkContext``)."""
    return SalesforceSink(config, ctx)


def open_source(config: SalesforceSourceConfig) -> Source:
    """A SalesforceReadSource: Accounts, Products and Orders, incrementally by (SystemModstamp, Id)."""
    return SalesforceReadSource(config)


def open_events(config: SalesforceSourceConfig) -> EventSource | None:
    """Change Data Capture of the source's streams when the block says ``events: cdc``."""
    if config.events != "cdc":
        return None
    from ferry.connectors.salesforce.events import SalesforceEventSource  # CometD only when asked for

    return SalesforceEventSource(config)


CONNECTOR = Connector(
    system="salesforce",
    source_config=SalesforceSourceConfig,
    open_source=open_source,
    sink_config=SalesforceConfig,
    open_sink=open_sink,
    events=open_events,
    description="Salesforce REST, sObject Collections and Bulk API 2.0: upsert by external id; reads Accounts, "
    "Products and Orders by (SystemModstamp, Id)",
)
