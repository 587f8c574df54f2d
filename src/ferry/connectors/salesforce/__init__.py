"""Salesforce connector: OAuth, describe, SOQL, streamed reads (REST and Bulk 2.0 query), planned upserts."""

from ferry.connectors.salesforce.config import SalesforceConfig
from ferry.connectors.salesforce.select import Select, Watermark
from ferry.connectors.salesforce.sink import SalesforceSink
from ferry.connectors.salesforce.soql import soql_quote
from ferry.connectors.salesforce.source import SalesforceSource
from ferry.core.contracts import Sink, SinkContext
from ferry.core.registry import Connector


def _open_sink(config: SalesforceConfig, context: SinkContext) -> Sink:
    return SalesforceSink(config, context)


CONNECTOR = Connector(
    "salesforce",
    sink_config=SalesforceConfig,
    open_sink=_open_sink,
    description="Salesforce: upserts by external id (REST, Composite, Bulk API 2.0), SOQL and CDC reads",
)

__all__ = ["CONNECTOR", "SalesforceConfig", "SalesforceSink", "SalesforceSource", "Select", "Watermark", "soql_quote"]
