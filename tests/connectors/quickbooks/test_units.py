"""The QuickBooks connector's pure parts: dialect, wire bodies, Fault classification, pacing, config."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from ferry.connectors.http import SessionExpired
from ferry.connectors.quickbooks import QuickBooksConfig
from ferry.connectors.quickbooks.dialect import QUICKBOOKS
from ferry.connectors.quickbooks.errors import classify, parse_fault
from ferry.connectors.quickbooks.pace import MARGIN, MINUTE_MARGIN, SECOND_MARGIN, Pacer
from ferry.connectors.quickbooks.refs import references
from ferry.connectors.quickbooks.schema import SCHEMAS
from ferry.connectors.quickbooks.wire import nest
from ferry.core.records import Reference
from ferry.errors import PermanentError, TransientError


def test_the_dialect_keys_references_apart_from_nested_fields() -> None:
    ref = Reference("Customer", "CustomerRef", "DisplayName")
    key = QUICKBOOKS.reference_key(ref, SCHEMAS["Invoice"])
    assert key == "CustomerRef@DisplayName"
    assert QUICKBOOKS.reference_of(key, SCHEMAS["Invoice"]) == ref
    assert QUICKBOOKS.reference_of("SalesItemLineDetail.ItemRef@Name", None) == Reference(
        "Item", "SalesItemLineDetail.ItemRef", "Name")
    assert QUICKBOOKS.reference_of("BillAddr.City", SCHEMAS["Invoice"]) is None
    assert QUICKBOOKS.text_length("😀é") == 2 and QUICKBOOKS.truncate("abcdef", 3) == "abc"


def test_nest_builds_the_wire_body_and_computes_line_amounts() -> None:
    body = nest({
        "DisplayName": "A", "BillAddr.City": "Oslo", "BillAddr.Line1": None, "IncomeAccountRef": "79",
        "Line": [{"Description": "x", "SalesItemLineDetail.ItemRef": "7", "SalesItemLineDetail.Qty": "3",
                  "SalesItemLineDetail.UnitPrice": "19.99"}],
    })
    assert body == {
        "DisplayName": "A", "BillAddr": {"City": "Oslo"}, "IncomeAccountRef": {"value": "79"},
        "Line": [{"Description": "x", "SalesItemLineDetail": {"ItemRef": {"value": "7"}, "Qty": 3, "UnitPrice": 19.99},
                  "Amount": 59.97, "DetailType": "SalesItemLineDetail"}],
    }


def test_references_are_found_in_lines_too() -> None:
    record = {"CustomerRef@DisplayName": "c1", "Line": [{"SalesItemLineDetail.ItemRef@Name": "v1"},
                                                        {"SalesItemLineDetail.ItemRef@Name": None}]}
    assert list(references(record)) == [("CustomerRef", "DisplayName", "c1"),
                                        ("SalesItemLineDetail.ItemRef", "Name", "v1")]


def _response(status: int, body: bytes) -> httpx.Response:
    return httpx.Response(status, content=body, request=httpx.Request("POST", "https://qbo.test/v3/company/1/batch"))


def test_faults_are_classified_by_code() -> None:
    stale = b'{"Fault":{"Error":[{"Message":"Stale Object Error","code":"5010"}],"type":"ValidationFault"}}'
    assert classify(_response(400, stale)) is None  # an answer: the record's failure, read by the sink
    fault = parse_fault({"Fault": {"Error": [{"Message": "m", "Detail": "d", "code": "6000",
                                              "element": "IncomeAccountRef"}], "type": "ValidationFault"}})
    assert fault is not None and not fault.transient and fault.record_error().fields == ["IncomeAccountRef"]
    assert parse_fault({"Error": [{"code": "5010"}]}).transient  # type: ignore[union-attr]  # a batch item's Fault
    gateway = b'{"fault":{"error":[{"message":"AuthenticationFailed","detail":"Token expired","code":"3200"}]}}'
    assert isinstance(classify(_response(401, gateway)), SessionExpired)
    throttled = b'{"Fault":{"Error":[{"Message":"ThrottleExceeded","code":"3001"}],"type":"SERVICE"}}'
    assert isinstance(classify(_response(429, throttled)), TransientError)
    assert isinstance(classify(_response(404, b"<html/>")), PermanentError)


def test_the_pacer_waits_for_the_per_second_window() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    async def run() -> None:
        pacer = Pacer(3, 100, 2, clock=lambda: now[0], sleep=sleep)
        for _ in range(7):
            await pacer.acquire()
            pacer.release()

    asyncio.run(run())
    assert len(slept) == 2 and all(s == pytest.approx(1.0 + SECOND_MARGIN + 0.001) for s in slept)


def test_config_needs_its_credentials_and_a_url(tmp_path: Path) -> None:
    base = {"system": "quickbooks", "client_id": "c", "client_secret": "topsecret-xyz", "realm_id": "1",
            "token_file": str(tmp_path / "t")}
    config = QuickBooksConfig.model_validate({**base, "refresh_token": "", "ca_file": ""})
    assert config.refresh_token is None and config.ca_file is None
    assert config.company_path == "https://quickbooks.api.intuit.com/v3/company/1"
    with pytest.raises(ValidationError, match="must be a URL"):
        QuickBooksConfig.model_validate({**base, "api_url": "quickbooks.local"})
    with pytest.raises(ValidationError, match="is empty"):
        QuickBooksConfig.model_validate({**base, "realm_id": " "})
    assert "topsecret-xyz" not in repr(config) and "topsecret-xyz" not in str(config)


def test_processes_sharing_a_state_store_stay_under_the_companys_minute_together(tmp_path: Path) -> None:
    """Two pacers (two processes' sinks) over one SQLite store: 5 calls a minute for the company in all, the
    6th waits for the next calendar minute; another company's calls are counted apart."""
    from ferry.connectors.quickbooks.pace import SharedMinute
    from ferry.store import Store

    now = [600.0]  # minute 10, second 0 (minute 9 had no call)

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    stores = [Store(tmp_path / "ferry.db"), Store(tmp_path / "ferry.db")]  # two connections, as two processes
    pacers = [Pacer(100, 100, 4, clock=lambda: now[0], sleep=sleep,
                    shared=SharedMinute(store, "123", 5, clock=lambda: now[0])) for store in stores]
    other = Pacer(100, 100, 4, clock=lambda: now[0], sleep=sleep,
                  shared=SharedMinute(stores[0], "456", 5, clock=lambda: now[0]))

    async def calls() -> list[float]:
        at = []
        for n in range(6):
            pacer = pacers[n % 2]
            await pacer.acquire()
            pacer.release()
            at.append(now[0])
        await other.acquire()  # another company: its own minute
        other.release()
        return at

    at = asyncio.run(calls())
    assert at[:5] == [600.0] * 5
    # Minute 10's 5 calls still fill the window early in minute 11 (they slide out as it goes): one slot frees
    # once a fifth of the minute has passed.
    assert 660.0 + 12.0 <= at[5] <= 660.0 + 13.0 + MARGIN
    assert sum(p.shared_waited for p in pacers) > 71 and other.shared_waited == 0
    assert stores[0].api_call_buckets("quickbooks:123", "quickbooks", 0) == [(10, 5), (11, 1)]
    for store in stores:
        store.close()


def test_a_lost_create_is_recognised_by_its_source_key_in_the_same_place_only() -> None:
    from ferry.connectors.quickbooks.names import clean_name, same_place

    assert same_place("Ada Lovelace (123)", "123", "Ada King (123)")
    assert not same_place("Bob (1234)", "123", "Ada King (123)")  # inside a longer id
    assert not same_place("Ann 123 (77)", "123", "Ada King (123)")  # a whole word, but not where the key goes
    assert same_place("123 Cable", "123", "123 Cable v2")
    assert not same_place("456 Cable for model 123", "123", "123 Cable v2")
    # Names are compared cleaned, as written: a guest's key holds ':' which QuickBooks refuses.
    assert clean_name("Ada (guest:ada@example.com)") == "Ada (guest-ada@example.com)"
    assert same_place("Ada (guest-ada@example.com)", "guest:ada@example.com", "Ada L (guest-ada@example.com)")


def test_the_shared_batch_minute_says_how_long_until_a_slot_without_taking_one(tmp_path: Path) -> None:
    from ferry.connectors.quickbooks.pace import SharedMinute
    from ferry.store import Store

    now = [600.0]
    store = Store(tmp_path / "ferry.db")
    minute = SharedMinute(store, "123", 2, kind="batch", clock=lambda: now[0])
    assert minute.wait() == 0 and minute.take() == 0 and minute.wait() == 0 and minute.take() == 0
    assert minute.wait() == pytest.approx(60 + MARGIN)  # the minute's 2 are spent
    assert store.api_call_buckets("quickbooks:123:batch", "quickbooks", 0) == [(10, 2)]  # wait() counted nothing
    now[0] = 690.0  # minute 11, half gone: minute 10's 2 weigh 1, so one more fits
    assert minute.wait() == 0 and minute.take() == 0
    assert minute.wait() == pytest.approx(30 + MARGIN)  # the minute is full until it ends (1 of its own + 1 carried)
    store.close()


def test_the_pacer_compares_a_batch_slot_with_the_single_calls_that_could_replace_it() -> None:
    now = [100.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    async def batch_calls(pacer: Pacer, n: int) -> None:
        for _ in range(n):
            await pacer.acquire_batch()

    pacer = Pacer(10, 500, 4, batch_per_minute=2, clock=lambda: now[0], sleep=sleep)
    assert pacer.batch_wait() == 0
    asyncio.run(batch_calls(pacer, 2))
    assert pacer.batch_wait() == pytest.approx(60 + MARGIN + 0.001)
    assert pacer.seconds_for_calls(30) == pytest.approx(3 * (1 + SECOND_MARGIN))  # 10 a (held) second
    now[0] += 58.0
    assert pacer.batch_wait() == pytest.approx(2 + MARGIN + 0.001)  # now sooner than 30 single calls
    full = Pacer(10, 5, 4, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        asyncio.run(full.acquire())
        full.release()
    assert full.seconds_for_calls(1) == pytest.approx(60 + MINUTE_MARGIN)  # the minute's 5 calls are spent
