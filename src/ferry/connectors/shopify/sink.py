"""The Shopify sink (``ferry.core.contracts.Sink``): customers over the GraphQL Admin API, idempotent without an
upsert by an external id.

Why not ``customerSet`` (2025-04+, upsert by ``identifier: {email}``)? It keys a customer on its email, and an
email changes: a Salesforce contact whose email changed would become a second Shopify customer. ferry keys a
customer on the *source* record instead, through its id map (``target_ids``: source key -> customer gid):

* the gid is known: ``customerUpdate(input: {id, ...})``; the mapped fields are ferry's, so its values win.
  A gid Shopify no longer has (the customer was deleted there) is a dead letter, not created again.
* the gid is not known: ``customerCreate``. Shopify keeps ``email`` (and ``phone``) unique per shop, so a create
  whose answer was lost (a reset, a timeout, a crash before the id map was saved) is refused on its next attempt
  with ``userErrors [{field: ["email"], message: "Email has already been taken"}]``. The sink then looks the
  customer up by that email (``customers(query: "email:...")``) and, when exactly one customer has it, takes its
  gid and updates it instead: written once, latest wins. A record with neither email nor phone could not be
  found again that way, so it is not created (a dead letter saying so) unless its gid is already known.

A customer found by email that another record of this batch already wrote is not taken over (two source records
sharing an email would otherwise overwrite each other on every run): that record is a dead letter naming the
email. Other ``userErrors`` (an invalid email or phone, a phone another customer has) are dead letters with
Shopify's field and message.

Writes go ``batch_size`` mutations a request, each under its own alias (``m0: customerCreate(...)``), each
answered on its own. Each mutation costs 10 points; the shared client (``gql_client``) waits for the points
bucket (``throttleStatus``) before each request, so a run slows itself down instead of being THROTTLED. A batch
the API refuses as a whole (a value GraphQL cannot coerce, e.g. a country code that is not one) is sent again one
record a request, so only the record at fault fails.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from ferry.connectors.lifecycle import AsyncResource
from ferry.connectors.no_jobs import NoRemoteJobs
from ferry.connectors.shopify.dialect import SHOPIFY
from ferry.connectors.shopify.gql_client import CostPacer, GraphQLAnswer, ShopifyGraphQL
from ferry.connectors.shopify.schema import LOOKUP_FIELDS, SCHEMAS
from ferry.connectors.shopify.sink_config import ShopifySinkConfig
from ferry.core.contracts import SinkCapabilities, SinkContext
from ferry.core.dialect import Dialect
from ferry.core.records import MappedRecord
from ferry.core.results import RecordResult
from ferry.core.schema import ObjectSchema
from ferry.core.writes import WriteCost
from ferry.errors import AuthError, ConfigError, PermanentError, RecordError, TransientError

log = structlog.get_logger("ferry.connectors.shopify.sink")
SINGLE = "single"
BATCH = "batch"
MUTATION_COST = 10  # Shopify's price of a mutation's root field
_LOOKUP_COST = 4  # customers(first: 2) { nodes { id email phone } }: 2 + 2 x 1
_TAKEN = "has already been taken"
_GONE = "does not exist"
_SELECTION = "customer { id } userErrors { field message }"
_PLAIN_FIELDS = ("email", "phone", "firstName", "lastName", "note", "locale", "taxExempt")
_ADDRESS = "address."


@dataclass(slots=True)
class _Item:
    """One record on its way: its external key, the ``CustomerInput`` (without id), the gid when known."""

    key: str
    input: dict[str, Any]
    target_id: str | None
    result: RecordResult | None = None
    taken: str | None = None  # the lookup field Shopify said is taken on a create
    serial: int = 0  # tells records apart whose external keys are equal (two contacts sharing an email)


class ShopifySink(NoRemoteJobs, AsyncResource):
    system = "shopify"
    NO_JOBS = "Shopify has no remote write jobs for customers"
    capabilities = SinkCapabilities(native_upsert=False, remote_jobs=False)
    dialect: Dialect = SHOPIFY

    def __init__(
        self,
        config: ShopifySinkConfig,
        context: SinkContext | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        pacer: CostPacer | None = None,
    ) -> None:
        self.config = config
        self.pipeline = context.pipeline if context is not None else "shopify"
        self.client = ShopifyGraphQL(config.client_config(), transport=transport, pacer=pacer)
        self.adopted = 0  # creates found already done (email taken, the customer found by it)
        self.batches_split = 0  # batches refused as a whole and sent again record by record
        self._calls: Counter[str] = Counter()
        self._written: dict[str, int] = {}  # customer gid -> the serial of the item that wrote it (this sink's life)
        self._serials = itertools.count(1)
        self._pace = asyncio.Lock()

    async def aclose(self) -> None:
        await self.client.aclose()

    # ------------------------------------------------------------------ contract: observability, setup

    @property
    def api_calls(self) -> dict[str, int]:
        return dict(self._calls)

    def budget_left(self) -> int | None:
        return None

    def budget_status(self) -> dict[str, Any] | None:
        return None

    async def describe(self, objects: Sequence[str], queries: Sequence[str] = ()) -> dict[str, ObjectSchema]:
        unknown = [o for o in objects if o not in SCHEMAS]
        if unknown:
            raise ConfigError(f"Shopify objects ferry cannot write: {', '.join(unknown)}; known: {', '.join(SCHEMAS)}")
        if queries:
            raise ConfigError("a Shopify target has no constant queries; use a literal value in the mapping")
        return {o: SCHEMAS[o] for o in objects}

    async def constant(self, query: str) -> Any:
        raise ConfigError(f"constant query {query!r}: a Shopify target has no constant queries")

    def write_costs(self, obj: str, count: int) -> list[WriteCost]:
        if count <= 0:
            return [WriteCost(BATCH, 0, 0, note="nothing to write")]
        size = self.config.batch_size
        calls = math.ceil(count / size)
        records = f"{count:,} {obj} record{'' if count == 1 else 's'}"
        return [
            WriteCost(SINGLE, count, count, note=f"{records}: one mutation a request ({MUTATION_COST} points each)"),
            WriteCost(BATCH, calls, count,
                      note=f"{records}: <= {size} aliased mutations a request, each answered on its own "
                      f"({calls:,} request{'' if calls == 1 else 's'}, {size * MUTATION_COST} points each)"),
        ]

    def missing_key_result(self, payload: MappedRecord, external_id: str) -> RecordResult | None:
        if any(payload.get(f) not in (None, "") for f in (external_id, *LOOKUP_FIELDS)):
            return None
        return RecordResult("", False, errors=[RecordError(
            "MISSING_LOOKUP_KEY", f"{external_id} is empty (and no phone): the customer could not be found again "
            "after a lost answer, so it is not created", [external_id])])

    # ------------------------------------------------------------------ contract: writes

    async def upsert(
        self,
        obj: str,
        external_id: str,
        records: Sequence[MappedRecord],
        strategy: str,
        *,
        target_ids: Sequence[str | None] | None = None,
    ) -> list[RecordResult]:
        if obj not in SCHEMAS:
            raise ConfigError(f"Shopify objects ferry cannot write: {obj}")
        ids = list(target_ids) if target_ids is not None else [None] * len(records)
        items = [self._item(external_id, record, rid) for record, rid in zip(records, ids, strict=True)]
        size = 1 if strategy == SINGLE else self.config.batch_size
        for start in range(0, len(items), size):
            await self._write_group(items[start : start + size])
        return [i.result or _failure(i.key, "UNKNOWN", "no answer for the record", transient=True) for i in items]

    def _item(self, external_id: str, record: MappedRecord, target_id: str | None) -> _Item:
        key = str(record.get(external_id) or "")
        target_id = customer_gid(target_id)
        item = _Item(key, customer_input(record, update=target_id is not None), target_id, serial=next(self._serials))
        if target_id is None:
            item.result = self.missing_key_result(record, external_id)
        return item

    async def _write_group(self, group: list[_Item]) -> None:
        pending = [i for i in group if i.result is None]
        try:
            await self._send(pending)
            taken = [i for i in pending if i.result is None and i.taken]
            if taken:
                await self._adopt(taken)
                await self._send([i for i in taken if i.result is None])
        except (AuthError, ConfigError):
            raise
        except (TransientError, PermanentError) as exc:
            for item in pending:
                if item.result is None:
                    item.result = _failure(item.key, getattr(exc, "code", None) or "HTTP", str(exc),
                                           transient=exc.transient)

    async def _send(self, items: list[_Item]) -> None:
        """One request of aliased mutations for ``items``; each gets its result or, a create meeting a taken
        email/phone, ``taken`` (its result left unset for ``_adopt``)."""
        if not items:
            return
        document, variables = mutation_document(items)
        try:
            self._calls["Customer"] += 1
            answer = await self._query(document, variables, MUTATION_COST * len(items), "Customer")
        except PermanentError:
            if len(items) == 1:
                raise
            # Refused as a whole (one value GraphQL cannot take): each alone, so only the bad one fails.
            self.batches_split += 1
            for item in items:
                await self._send_alone(item)
            return
        for n, item in enumerate(items):
            self._settle(item, answer.data.get(f"m{n}"))

    async def _send_alone(self, item: _Item) -> None:
        try:
            await self._send([item])
        except PermanentError as exc:
            item.result = _failure(item.key, getattr(exc, "code", None) or "GRAPHQL", str(exc))

    async def _query(self, document: str, variables: dict[str, Any], cost: int, label: str) -> GraphQLAnswer:
        """One request at a time (the client waits for its points first). Requests in flight together would each
        see the bucket as the last answer left it and together overdraw it (THROTTLED); the bucket's restore
        rate, not the round trip, is what bounds a write's pace (10 mutations/s on the Standard plan)."""
        async with self._pace:
            return await self.client.query(document, variables, cost=cost, label=label)

    def _settle(self, item: _Item, payload: Any) -> None:
        created = item.target_id is None
        customer = payload.get("customer") if isinstance(payload, dict) else None
        if isinstance(customer, dict) and customer.get("id"):
            item.result = RecordResult(item.key, True, str(customer["id"]), created=created)
            self._written.setdefault(str(customer["id"]), item.serial)
            return
        errors = payload.get("userErrors") if isinstance(payload, dict) else None
        if not errors:
            item.result = _failure(item.key, "NO_ANSWER", "Shopify answered neither a customer nor userErrors",
                                   transient=True)
            return
        taken = [f for f in (_field(e) for e in errors if _TAKEN in str(e.get("message", ""))) if f in LOOKUP_FIELDS]
        # Maybe ours, from an attempt whose answer was lost: found by _adopt. Only by the record's own identity,
        # its email (its phone when it has none): a phone taken by a record with an email is someone else's.
        identity = "email" if item.input.get("email") else "phone"
        if created and taken and len(taken) == len(errors) and identity in taken:
            item.taken = identity
            return
        item.result = RecordResult(item.key, False, errors=[_user_error(e, item) for e in errors])

    async def _adopt(self, items: list[_Item]) -> None:
        """Give each create that met a taken email/phone the gid of the one customer holding that value (one
        request of aliased lookups), when that customer is ours to take: same email (or, without one, phone)."""
        parts = []
        for n, item in enumerate(items):
            assert item.taken is not None
            value = _search_value(str(item.input[item.taken]))
            search = f'{item.taken}:\\"{value}\\"'
            parts.append(f'l{n}: customers(first: 2, query: "{search}") {{ nodes {{ id email phone }} }}')
        self._calls["lookup"] += 1
        answer = await self._query("query ferryLookup {\n" + "\n".join(parts) + "\n}", {},
                                   _LOOKUP_COST * len(items), "lookup")
        for n, item in enumerate(items):
            found = (answer.data.get(f"l{n}") or {}).get("nodes") or []
            match = _same_customer(item, found)
            if match is None:
                item.result = _failure(item.key, "TAKEN", f"{_label(item.taken)} has already been taken (by a "
                                       "customer ferry cannot tell is this record's)", [item.taken or ""])
                continue
            other = self._written.get(str(match))
            if other is not None and other != item.serial:
                # Two source records sharing one email would overwrite each other on every run: the first keeps it.
                taken = item.taken or ""
                item.result = _failure(item.key, "TAKEN", f"{_label(taken)} {item.input.get(taken)!r} belongs to "
                                       f"the customer {match}, which another record of this run wrote", [taken])
                continue
            self.adopted += 1
            log.info("shopify.create_found_done", id=match, field=item.taken)
            item.target_id = match
            item.input = {**item.input, "id": match}


# ---------------------------------------------------------------------- wire


def customer_input(record: MappedRecord, *, update: bool) -> dict[str, Any]:
    """A mapped record as a ``CustomerInput``: tags as a list, ``address.*`` as the one address.

    On a create, empty fields are left out; on an update they are sent as null (ferry owns the fields it maps:
    a value cleared at the source is cleared in the shop), except email and phone, the fields a lost create is
    found by, which are never cleared.
    """
    out: dict[str, Any] = {}
    address: dict[str, Any] = {}
    for name, value in record.items():
        if name.startswith(_ADDRESS):
            if value not in (None, ""):
                address[name[len(_ADDRESS):]] = value
        elif name == "tags":
            tags = _tags(value)
            if tags or update:
                out["tags"] = tags
        elif name in _PLAIN_FIELDS:
            if value not in (None, ""):
                out[name] = value
            elif update and name not in LOOKUP_FIELDS:
                out[name] = None
    if address:
        out["addresses"] = [address]
    return out


def customer_gid(target_id: str | None) -> str | None:
    """A target id as a customer gid: a REST id (``7104000010847``, how a webhook or the other direction of a
    two-way sync names the customer) becomes ``gid://shopify/Customer/7104000010847``; a gid stays."""
    if target_id is None or target_id.startswith("gid://"):
        return target_id
    return f"gid://shopify/Customer/{target_id}" if target_id.isdigit() else target_id


def mutation_document(items: Sequence[_Item]) -> tuple[str, dict[str, Any]]:
    """``mutation($i0: CustomerInput!, ...) { m0: customerCreate(input: $i0) {...} m1: customerUpdate(...) }``."""
    params, fields, variables = [], [], {}
    for n, item in enumerate(items):
        params.append(f"$i{n}: CustomerInput!")
        op = "customerCreate" if item.target_id is None else "customerUpdate"
        fields.append(f"  m{n}: {op}(input: $i{n}) {{ {_SELECTION} }}")
        variables[f"i{n}"] = item.input if item.target_id is None else {**item.input, "id": item.target_id}
    return f"mutation ferryCustomers({', '.join(params)}) {{\n" + "\n".join(fields) + "\n}", variables


def _tags(value: Any) -> list[str]:
    if value is None:
        return []
    parts = value if isinstance(value, list | tuple) else str(value).split(SHOPIFY.multi_value_separator)
    return [str(p).strip() for p in parts if str(p).strip()]


def _search_value(value: str) -> str:
    # Shopify's search syntax: a double-quoted value; quotes and backslashes would end it early.
    return value.replace("\\", "").replace('"', "").strip()


def _same_customer(item: _Item, found: list[dict[str, Any]]) -> str | None:
    """The gid of the one found customer that is this record's: it holds the record's email (when the record has
    one; else its phone). A phone taken by a customer with another email is someone else's."""
    if len(found) != 1 or not found[0].get("id"):
        return None
    mine = item.input.get("email") or item.input.get("phone")
    field = "email" if item.input.get("email") else "phone"
    theirs = found[0].get(field)
    if not isinstance(mine, str) or not isinstance(theirs, str):
        return None
    same = mine.strip().lower() == theirs.strip().lower() if field == "email" else _digits(mine) == _digits(theirs)
    return str(found[0]["id"]) if same else None


def _digits(phone: str) -> str:
    return "".join(c for c in phone if c.isdigit())


def _field(error: dict[str, Any]) -> str:
    """The CustomerInput field a userError names (``["input", "email"]`` or ``["email"]`` -> ``email``)."""
    path = [p for p in (error.get("field") or []) if p != "input"]
    return ".".join(str(p) for p in path)


def _label(field: str | None) -> str:
    return (field or "value").capitalize()


def _user_error(error: dict[str, Any], item: _Item) -> RecordError:
    message = str(error.get("message") or "refused")
    field = _field(error)
    code = str(error.get("code") or "")
    if not code:
        code = "TAKEN" if _TAKEN in message else "INVALID" if "is invalid" in message else \
            "NOT_FOUND" if _GONE in message else "USER_ERROR"
    if code == "NOT_FOUND" and item.target_id is not None:
        message = f"customer {item.target_id} (from ferry's id map) is not in the shop any more; not created again"
    return RecordError(code, message, [field] if field else [])


def _failure(key: str, code: str, message: str, fields: Sequence[str] = (), *, transient: bool = False) -> RecordResult:
    return RecordResult(key, False, errors=[RecordError(code, message, list(fields), transient=transient)])
