"""Salesforce connector: OAuth, describe, SOQL, streamed reads (REST and Bulk 2.0 query), planned upserts."""

from ferry.connectors.salesforce.config import SalesforceConfig
from ferry.connectors.salesforce.connector import CONNECTOR
from ferry.connectors.salesforce.read_source import SalesforceReadSource
from ferry.connectors.salesforce.select import Select, Watermark
from ferry.connectors.salesforce.sink import SalesforceSink
from ferry.connectors.salesforce.soql import soql_quote
from ferry.connectors.salesforce.source import SalesforceSource
from ferry.connectors.salesforce.source_config import SalesforceSourceConfig

__all__ = [
    "CONNECTOR", "SalesforceConfig", "SalesforceReadSource", "SalesforceSink", "SalesforceSource",
    "SalesforceSourceConfig", "Select", "Watermark", "soql_quote",
]
