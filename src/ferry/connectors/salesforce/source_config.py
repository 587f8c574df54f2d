"""The ``source:`` block of a pipeline that reads a Salesforce org (``system: salesforce`` under ``source:``).

It is the ``target:`` block's connection settings (``SalesforceConfig``: login, auth flow, secrets from the
environment, API budget) plus what to read::

    source:
      system: salesforce
      login_url: ${SALESFORCE_LOGIN_URL}
      client_id: ${SALESFORCE_CLIENT_ID}
      username: ${SALESFORCE_USERNAME}
      private_key_file: ${SALESFORCE_PRIVATE_KEY_FILE}
      streams: [Account, Product2, Order]
      link_back: {Account: QuickBooks_Id__c, Product2: QuickBooks_Id__c, Order: QuickBooks_Id__c}
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ferry.connectors.salesforce.config import SalesforceConfig
from ferry.connectors.salesforce.soql import soql_identifier

SalesforceStream = Literal["Account", "Product2", "Order"]
ALL_STREAMS: tuple[SalesforceStream, ...] = ("Account", "Product2", "Order")


class SalesforceSourceConfig(SalesforceConfig):
    # sObjects read, in this order (parents first). Each carries what its canonical record needs from its
    # children: an Account its primary Contact, a Product2 its standard PricebookEntry, an Order its OrderItems.
    streams: list[SalesforceStream] = Field(default_factory=lambda: list(ALL_STREAMS))
    # A read expected to return at least this many records goes through a Bulk API 2.0 query (one COUNT()
    # call decides); below it, REST query pages (2,000 records a call, no job to wait for).
    bulk_read_threshold: int = Field(50_000, ge=1)
    # How far behind the org's clock a run's cursor stays: a transaction that commits late carries a
    # SystemModstamp from before it became visible, and the next run must still see it. Records inside the
    # margin are read again next run and found unchanged (latest wins by version).
    clock_margin_seconds: float = Field(60.0, ge=0)
    # Orders in these statuses are read (None: all). Activation bumps SystemModstamp, so a Draft order is read
    # the moment it is activated.
    order_statuses: list[str] | None = Field(default_factory=lambda: ["Activated"])
    # sObject -> a text field ferry writes the target's id into once the target holds the record (the CRM
    # then shows the accounting system's id). The write is read back and recognised as ferry's own, so it is
    # never synced again (docs/connectors/salesforce-reads.md).
    link_back: dict[SalesforceStream, str] = Field(default_factory=dict)
    # Records a REST query page carries (Sforce-Query-Options batchSize, 200 to 2,000): smaller pages are
    # staged (and resumed after a crash) at a finer grain, for more API calls.
    query_batch_size: int = Field(2000, ge=200, le=2000)
    # Ids per "... IN (...)" query of children (and of re-reads by id): keeps each SOQL well under its length cap.
    rest_page_ids: int = Field(200, ge=1, le=800)
    # `cdc`: `ferry serve` follows the streams' Change Data Capture events (CometD) instead of waiting for a
    # schedule; a batch `ferry run` of the same pipeline reads as before (docs/serve.md, "Salesforce CDC").
    events: Literal["cdc"] | None = None
    # After a change event arrives, gather this long before reading the records back (one SOQL per micro-batch).
    event_linger_seconds: float = Field(0.1, ge=0, le=10)

    @field_validator("link_back")
    @classmethod
    def _fields_are_names(cls, value: dict[SalesforceStream, str]) -> dict[SalesforceStream, str]:
        for obj, name in value.items():
            try:
                soql_identifier(name)
            except ValueError as exc:
                raise ValueError(f"link_back {obj}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _link_back_streams_are_read(self) -> SalesforceSourceConfig:
        unread = [obj for obj in self.link_back if obj not in self.streams]
        if unread:
            raise ValueError(f"link_back names {', '.join(unread)}, which streams does not read")
        return self
