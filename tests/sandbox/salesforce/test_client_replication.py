"""Record change feeds (getUpdated/getDeleted), queryAll and the recycle bin's 15 days, through simple-salesforce."""

from __future__ import annotations

import datetime as dt

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from ferry.sandbox.salesforce.validate import format_datetime
from tests.sandbox.salesforce.conftest import Org


def _age_deletion(org: Org, sobject: str, record_id: str, days: float) -> None:
    """Make a recycle-bin entry look ``days`` old (the sandbox's clock is the wall clock; no waiting 15 days)."""
    stamp = format_datetime(dt.datetime.now(dt.UTC) - dt.timedelta(days=days))
    org.sandbox.state.store.table(sobject).deleted[record_id]["SystemModstamp"] = stamp


def test_updated_window_rules(sf: Salesforce) -> None:
    now = dt.datetime.now(dt.UTC).replace(second=30)
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.updated(now, now.replace(second=50))  # the same minute once seconds are dropped
    assert exc.value.content == [{"message": "startDate must chronologically precede endDate",
                                  "errorCode": "INVALID_REPLICATION_DATE"}]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.deleted(now - dt.timedelta(days=16), now)
    assert exc.value.content == [{"message": "startDate cannot be more than 15 days ago",
                                  "errorCode": "INVALID_REPLICATION_DATE"}]
    window = sf.Contact.updated(now - dt.timedelta(days=29), now + dt.timedelta(days=1))
    # The end is capped at the time of the call.
    assert window["latestDateCovered"] <= format_datetime(dt.datetime.now(dt.UTC))
    edited = sf.Account.create({"Name": "Edited"})["id"]
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)
    sf.Account.update(edited, {"Name": "Edited again"})
    assert sf.Account.updated(start, start + dt.timedelta(minutes=5))["ids"] == [edited]


def test_query_all_and_get_deleted_keep_deletions_for_15_days(org: Org, sf: Salesforce) -> None:
    live, recent, old = (sf.Contact.create({"LastName": n})["id"] for n in ("Live", "Recent", "Old"))
    sf.Contact.delete(recent)
    sf.Contact.delete(old)
    _age_deletion(org, "Contact", old, days=14)
    rows = sf.query_all("SELECT Id, IsDeleted FROM Contact ORDER BY LastName", include_deleted=True)["records"]
    assert [(r["Id"], r["IsDeleted"]) for r in rows] == [(live, False), (old, True), (recent, True)]
    assert [r["Id"] for r in sf.query_all("SELECT Id FROM Contact")["records"]] == [live]
    _age_deletion(org, "Contact", old, days=15.5)  # past the recycle bin's retention: purged
    rows = sf.query_all("SELECT Id FROM Contact WHERE IsDeleted = true", include_deleted=True)["records"]
    assert [r["Id"] for r in rows] == [recent]
    now = dt.datetime.now(dt.UTC)
    deleted = sf.Contact.deleted(now - dt.timedelta(days=15) + dt.timedelta(minutes=1), now + dt.timedelta(minutes=1))
    assert [d["id"] for d in deleted["deletedRecords"]] == [recent]
    assert set(deleted) == {"deletedRecords", "earliestDateAvailable", "latestDateCovered"}


def test_query_all_pages_through_query_all_locators(sf: Salesforce) -> None:
    ids = [r["id"] for r in sf.restful("composite/sobjects", method="POST", json={"records": [
        {"attributes": {"type": "Account"}, "Name": f"A{i:03d}"} for i in range(200)]})]
    more = [r["id"] for r in sf.restful("composite/sobjects", method="POST", json={"records": [
        {"attributes": {"type": "Account"}, "Name": f"B{i:03d}"} for i in range(50)]})]
    sf.restful("composite/sobjects", method="DELETE", params={"ids": ",".join(more)})
    first = sf.query("SELECT Id FROM Account", include_deleted=True,
                     headers={"Sforce-Query-Options": "batchSize=200"})
    assert first["totalSize"] == 250 and first["done"] is False
    assert "/queryAll/" in first["nextRecordsUrl"]
    rows = sf.query_all("SELECT Id, IsDeleted FROM Account", include_deleted=True,
                        headers={"Sforce-Query-Options": "batchSize=200"})["records"]
    assert len(rows) == 250 and sum(r["IsDeleted"] for r in rows) == 50
    assert {r["Id"] for r in rows} == set(ids) | set(more)
