"""Everything one sandbox org holds, shared by the API modules."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from ferry.sandbox.salesforce.auth import OAuthServer
from ferry.sandbox.salesforce.dml import Org
from ferry.sandbox.salesforce.errors import not_found
from ferry.sandbox.salesforce.ids import IdFactory
from ferry.sandbox.salesforce.limits import ApiBudget
from ferry.sandbox.salesforce.query import Executor
from ferry.sandbox.salesforce.schema import Schema, SObjectSchema
from ferry.sandbox.salesforce.store import Store


@dataclass
class OrgState:
    schema: Schema
    store: Store
    ids: IdFactory
    org: Org
    executor: Executor
    budget: ApiBudget
    oauth: OAuthServer
    org_id: str
    clock: Callable[[], dt.datetime]
    bulk_chunk_rows: int

    def sobject(self, name: str) -> SObjectSchema:
        """The object named in a URL; an unknown one is the org's 404 NOT_FOUND."""
        obj = self.schema.get(name)
        if obj is None:
            raise not_found()
        return obj
