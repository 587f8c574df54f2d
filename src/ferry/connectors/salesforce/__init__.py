"""Salesforce sink connector: OAuth, describe, SOQL, sObject Collections and Bulk API 2.0 upserts."""

from ferry.connectors.salesforce.config import SalesforceConfig
from ferry.connectors.salesforce.sink import SalesforceSink
from ferry.connectors.salesforce.soql import soql_quote

__all__ = ["SalesforceConfig", "SalesforceSink", "soql_quote"]
