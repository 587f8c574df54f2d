"""QuickBooks Online connector: OAuth 2.0 with a rotating refresh token, paced calls, an idempotent sink."""

from ferry.connectors.quickbooks.config import QuickBooksConfig
from ferry.connectors.quickbooks.connector import CONNECTOR
from ferry.connectors.quickbooks.sink import QuickBooksSink

__all__ = ["CONNECTOR", "QuickBooksConfig", "QuickBooksSink"]
