"""ShopifySink against the Shopify sandbox over HTTPS (GraphQL Admin API): customers created and updated by
ferry's id map, aliased batches, a lost create found by its email instead of made twice (also when the answer is
really lost on the wire), userErrors as per-record failures with field and reason, a batch GraphQL refuses as a
whole split so only the bad record fails, and writes paced by the points bucket (no THROTTLED)."""

from __future__ import annotations

import itertools
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.connectors.shopify import ShopifySink, ShopifySinkConfig
from ferry.connectors.shopify.sink import BATCH, SINGLE
from ferry.sandbox.serve import RunningSandbox, start_in_thread
from ferry.sandbox.shopify import ShopifySandbox


class Shop:
    def __init__(self, sandbox: ShopifySandbox, running: RunningSandbox) -> None:
        self.sandbox = sandbox
        self.running = running

    def config(self, **overrides: Any) -> ShopifySinkConfig:
        creds = self.sandbox.credentials(self.running.url)
        base = {"system": "shopify", "url": creds["url"], "access_token": creds["access_token"],
                "ca_file": str(self.running.ca_file)}
        return ShopifySinkConfig.model_validate(base | overrides)

    def customers(self) -> list[dict[str, Any]]:
        return list(self.sandbox.state.table("customers").records)

    def customer(self, gid: str) -> dict[str, Any]:
        rec = self.sandbox.state.table("customers").get(int(gid.rsplit("/", 1)[1]))
        assert rec is not None, gid
        return rec

    def graphql_settings(self, body: dict[str, Any]) -> None:
        verify = ssl.create_default_context(cafile=str(self.running.ca_file))
        r = httpx.patch(f"{self.running.url}/__sandbox/graphql", json=body, verify=verify)
        r.raise_for_status()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    path: Path = tmp_path_factory.mktemp("shopsink")
    sandbox = ShopifySandbox(path, customers=20, products=3, orders=5)
    s = Shop(sandbox, start_in_thread(sandbox.app, path))
    yield s
    s.running.stop()


def _record(n: int, tag: str, **extra: Any) -> dict[str, Any]:
    return {
        "email": f"{tag}-{n}@example.com", "firstName": f"First{n}", "lastName": f"Last{n}",
        "phone": f"+1 555 {next(_PHONES):07d}", "note": f"from test {tag}", "tags": "ferry,crm",
        "address.address1": f"{n} Main St", "address.city": "Springfield", "address.zip": "12345",
        "address.countryCode": "US", "address.provinceCode": "IL",
    } | extra


_PHONES = itertools.count(1000)  # a fresh phone per record: Shopify keeps phones unique per shop


async def test_creates_then_updates_by_id_map_in_aliased_batches(shop: Shop) -> None:
    before = len(shop.customers())
    records = [_record(n, "batch") for n in range(7)]
    async with ShopifySink(shop.config(batch_size=3)) as sink:
        results = await sink.upsert("Customer", "email", records, BATCH)
        assert [r.success for r in results] == [True] * 7, [r.errors for r in results]
        assert all(r.created and r.id and r.id.startswith("gid://shopify/Customer/") for r in results)
        assert sink.api_calls == {"Customer": 3}  # 7 records, 3 a request
        assert len(shop.customers()) == before + 7
        first = shop.customer(results[0].id or "")
        assert (first["email"], first["first_name"], first["last_name"]) == ("batch-0@example.com", "First0", "Last0")
        assert first["tags"] == "ferry, crm" and first["note"] == "from test batch"
        assert first["default_address"]["city"] == "Springfield" and first["default_address"]["zip"] == "12345"

        edited = [r | {"lastName": f"Renamed{n}", "note": None} for n, r in enumerate(records)]
        again = await sink.upsert("Customer", "email", edited, BATCH, target_ids=[r.id for r in results])
    assert [(r.success, r.created, r.id) for r in again] == [(True, False, r.id) for r in results]
    assert len(shop.customers()) == before + 7  # updated, not created
    assert shop.customer(results[3].id or "")["last_name"] == "Renamed3"
    assert shop.customer(results[3].id or "")["note"] is None  # cleared at the source: cleared in the shop


async def test_lost_create_is_found_by_email_not_made_twice(shop: Shop) -> None:
    records = [_record(n, "lost") for n in range(3)]
    async with ShopifySink(shop.config()) as sink:
        first = await sink.upsert("Customer", "email", records, BATCH)
    count = len(shop.customers())
    # The id map never learned these gids (the answer was lost, or the run died before saving it): created again,
    # Shopify refuses the taken email, the sink finds the customer by it and updates it instead.
    changed = [r | {"firstName": "Again"} for r in records]
    async with ShopifySink(shop.config()) as sink:
        second = await sink.upsert("Customer", "email", changed, SINGLE)
        assert sink.adopted == 3
    assert [(r.success, r.created, r.id) for r in second] == [(True, False, r.id) for r in first]
    assert len(shop.customers()) == count
    assert shop.customer(first[1].id or "")["first_name"] == "Again"


class _LoseFirstAnswer(httpx.AsyncBaseTransport):
    """The first GraphQL answer is lost after the shop processed the request (a reset while it was on the wire)."""

    def __init__(self, ca_file: Path) -> None:
        self.inner = httpx.AsyncHTTPTransport(verify=ssl.create_default_context(cafile=str(ca_file)))
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if self.lost == 0 and request.url.path.endswith("/graphql.json"):
            await response.aread()
            self.lost += 1
            raise httpx.ReadError("connection reset while reading the answer", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_answer_lost_on_the_wire_creates_each_customer_once(shop: Shop) -> None:
    records = [_record(n, "wire") for n in range(4)]
    before = len(shop.customers())
    transport = _LoseFirstAnswer(shop.running.ca_file)
    async with ShopifySink(shop.config(), transport=transport) as sink:
        results = await sink.upsert("Customer", "email", records, BATCH)
        assert transport.lost == 1 and sink.adopted == 4
    assert all(r.success for r in results), [r.errors for r in results]
    assert len(shop.customers()) == before + 4
    emails = [c["email"] for c in shop.customers()]
    assert all(emails.count(f"wire-{n}@example.com") == 1 for n in range(4))


async def test_user_errors_fail_only_their_record_with_field_and_reason(shop: Shop) -> None:
    async with ShopifySink(shop.config()) as sink:
        [owner] = await sink.upsert("Customer", "email", [_record(1, "owner")], BATCH)
        records = [
            _record(1, "bad", email="not-an-email"),
            _record(2, "bad", phone="12"),
            # Someone else's phone (another email): taken, and not taken over.
            _record(3, "bad", phone=shop.customer(owner.id or "")["phone"]),
            _record(4, "bad"),
            {"firstName": "Nobody", "lastName": "Reachable"},  # no email, no phone, no gid: cannot be found again
        ]
        results = await sink.upsert("Customer", "email", records, BATCH)
        gone = await sink.upsert("Customer", "email", [_record(5, "bad")], BATCH,
                                 target_ids=["gid://shopify/Customer/999999999"])
    assert [r.success for r in results] == [False, False, False, True, False]
    assert [(e.code, e.fields) for e in results[0].errors] == [("INVALID", ["email"])]
    assert results[0].errors[0].message == "Email is invalid"
    assert [(e.code, e.fields) for e in results[1].errors] == [("INVALID", ["phone"])]
    assert [(e.code, e.fields) for e in results[2].errors] == [("TAKEN", ["phone"])]
    assert results[4].errors[0].code == "MISSING_LOOKUP_KEY"
    assert not any(e.transient for r in results for e in r.errors)
    assert gone[0].errors[0].code == "NOT_FOUND" and "not created again" in gone[0].errors[0].message


async def test_two_records_with_one_email_do_not_share_a_customer(shop: Shop) -> None:
    twin = _record(1, "twin")
    async with ShopifySink(shop.config()) as sink:
        results = await sink.upsert("Customer", "email", [twin, twin | {"firstName": "Other", "phone": None}], BATCH)
    assert results[0].success and not results[1].success
    assert [(e.code, e.fields) for e in results[1].errors] == [("TAKEN", ["email"])]
    assert str(results[0].id) in results[1].errors[0].message
    assert shop.customer(results[0].id or "")["first_name"] == "First1"


async def test_a_batch_refused_as_a_whole_is_split_so_only_the_bad_record_fails(shop: Shop) -> None:
    records = [_record(n, "split") for n in range(4)]
    records[2] = records[2] | {"address.countryCode": "XX"}  # not a CountryCode: GraphQL refuses the variables
    async with ShopifySink(shop.config()) as sink:
        results = await sink.upsert("Customer", "email", records, BATCH)
        assert sink.batches_split == 1
    assert [r.success for r in results] == [True, True, False, True]
    assert not results[2].errors[0].transient and "XX" in results[2].errors[0].message


async def test_writes_are_paced_by_the_points_bucket(shop: Shop) -> None:
    shop.graphql_settings({"maximum_available": 300, "restore_rate": 500})
    try:
        records = [_record(n, "paced") for n in range(100)]
        async with ShopifySink(shop.config(batch_size=25)) as sink:
            results = await sink.upsert("Customer", "email", records, BATCH)
            assert all(r.success for r in results)
            assert sink.client.throttled_answers == 0  # waited for points instead of being THROTTLED
            assert sink.client.pacer.waited_seconds > 0.5
            assert sink.api_calls == {"Customer": 4}
    finally:
        shop.graphql_settings({"plan": "standard"})


async def test_describe_and_costs(shop: Shop) -> None:
    async with ShopifySink(shop.config(batch_size=25)) as sink:
        schemas = await sink.describe(["Customer"])
        assert schemas["Customer"].field("email") is not None
        costs = {c.strategy: c.calls for c in sink.write_costs("Customer", 60)}
        assert costs == {SINGLE: 60, BATCH: 3}
        with pytest.raises(Exception, match="cannot write: Order"):
            await sink.describe(["Order"])
