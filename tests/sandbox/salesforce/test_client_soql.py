"""SOQL relationship queries, child subqueries, dates, paging and errors through simple-salesforce."""

from __future__ import annotations

import datetime as dt

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from ferry.sandbox.salesforce.query import _relative_range


def _seed(sf: Salesforce) -> dict[str, str]:
    acme = sf.Account.create({"Name": "Acme", "Industry": "Retail"})["id"]
    globex = sf.Account.create({"Name": "Globex"})["id"]
    sf.Account.create({"Name": "Lonely"})
    for last, first in (("Zed", "Ann"), ("Abe", None), ("Moe", "Bo")):
        sf.Contact.create({"LastName": last, "FirstName": first, "AccountId": acme})
    sf.Contact.create({"LastName": "Solo", "AccountId": globex})
    sf.Contact.create({"LastName": "Orphan"})
    return {"acme": acme, "globex": globex}


def test_parent_fields_two_levels_deep(sf: Salesforce) -> None:
    ids = _seed(sf)
    rows = sf.query("SELECT LastName, Account.Name, Account.Owner.Username FROM Contact "
                    "WHERE Account.Name = 'Acme' ORDER BY LastName")["records"]
    assert [r["LastName"] for r in rows] == ["Abe", "Moe", "Zed"]
    first = rows[0]
    assert first["Account"]["attributes"] == {"type": "Account",
                                              "url": f"/services/data/v62.0/sobjects/Account/{ids['acme']}"}
    assert first["Account"]["Name"] == "Acme"
    assert first["Account"]["Owner"]["attributes"]["type"] == "User"
    assert first["Account"]["Owner"]["Username"] == "integration@ferry.sandbox"
    orphan = sf.query("SELECT LastName, Account.Name FROM Contact WHERE LastName = 'Orphan'")["records"][0]
    assert orphan["Account"] is None


def test_child_subquery_has_the_nested_result_shape(sf: Salesforce) -> None:
    ids = _seed(sf)
    result = sf.query("SELECT Name, (SELECT LastName FROM Contacts ORDER BY LastName) FROM Account ORDER BY Name")
    by_name = {r["Name"]: r for r in result["records"]}
    acme = by_name["Acme"]
    assert list(acme) == ["attributes", "Name", "Contacts"]
    assert acme["Contacts"]["totalSize"] == 3 and acme["Contacts"]["done"] is True
    assert [c["LastName"] for c in acme["Contacts"]["records"]] == ["Abe", "Moe", "Zed"]
    assert acme["Contacts"]["records"][0]["attributes"]["type"] == "Contact"
    assert by_name["Lonely"]["Contacts"] is None  # the org answers null, not an empty result
    filtered = sf.query(f"SELECT Id, (SELECT FirstName, LastName FROM contacts WHERE FirstName != null "
                        f"ORDER BY LastName DESC LIMIT 1) FROM Account WHERE Id = '{ids['acme']}'")["records"][0]
    assert [c["LastName"] for c in filtered["Contacts"]["records"]] == ["Zed"]
    both = sf.query("SELECT Name, (SELECT Subject FROM Cases), (SELECT LastName FROM Contacts) FROM Account "
                    "WHERE Name = 'Globex'")["records"][0]
    assert both["Cases"] is None and both["Contacts"]["records"][0]["LastName"] == "Solo"


def test_child_subquery_errors(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Name, (SELECT LastName FROM Contactz) FROM Account")
    error = exc.value.content[0]
    assert error["errorCode"] == "INVALID_TYPE"
    assert "Didn't understand relationship 'Contactz' in FROM part of query call" in error["message"]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Name, (SELECT Nope FROM Contacts) FROM Account")
    assert exc.value.content[0]["errorCode"] == "INVALID_FIELD"
    assert "No such column 'Nope' on entity 'Contact'" in exc.value.content[0]["message"]


def test_query_all_includes_deleted_rows(sf: Salesforce) -> None:
    keep = sf.Lead.create({"LastName": "Keep", "Company": "c"})["id"]
    gone = sf.Lead.create({"LastName": "Gone", "Company": "c"})["id"]
    sf.Lead.delete(gone)
    assert [r["Id"] for r in sf.query("SELECT Id FROM Lead")["records"]] == [keep]
    rows = sf.query_all("SELECT Id, IsDeleted FROM Lead ORDER BY LastName", include_deleted=True)["records"]
    assert [(r["Id"], r["IsDeleted"]) for r in rows] == [(gone, True), (keep, False)]
    assert rows[0]["attributes"]["url"].endswith(f"/Lead/{gone}")


def test_where_operators_dates_and_aggregates(sf: Salesforce) -> None:
    today = dt.datetime.now(dt.UTC).date()
    day = dt.timedelta(days=1)
    for name, stage, close, amount in (("a", "Prospecting", today, 100), ("b", "Closed Won", today - 3 * day, None),
                                       ("c", "Closed Lost", today + 40 * day, 250.5),
                                       ("d", "Qualification", dt.date(2001, 5, 1), 10)):
        body = {"Name": name, "StageName": stage, "CloseDate": close.isoformat()}
        if amount is not None:
            body["Amount"] = amount
        sf.Opportunity.create(body)

    def names(where: str) -> list[str]:
        return [r["Name"] for r in sf.query(f"SELECT Name FROM Opportunity WHERE {where} ORDER BY Name")["records"]]

    assert names("CloseDate = TODAY") == ["a"]
    assert names("CloseDate = LAST_N_DAYS:5") == ["a", "b"]
    assert names("CloseDate = NEXT_N_DAYS:60") == ["c"]
    assert names("CloseDate < 2010-01-01") == ["d"]
    assert names("CreatedDate = THIS_YEAR AND CreatedDate = THIS_WEEK") == ["a", "b", "c", "d"]
    assert names("CreatedDate = LAST_YEAR OR CreatedDate = LAST_N_MONTHS:3") == []
    assert names("CreatedDate > 2020-01-01T00:00:00Z AND CreatedDate < TOMORROW") == ["a", "b", "c", "d"]
    assert names("StageName IN ('Closed Won', 'Closed Lost') AND NOT Name = 'c'") == ["b"]
    assert names("StageName NOT IN ('Closed Won', 'Closed Lost') AND (Amount > 50 OR Amount = null)") == ["a"]
    assert names("Name LIKE 'A%' OR Name LIKE '_'") == ["a", "b", "c", "d"]
    assert names("IsWon = true") == ["b"]
    ordered = sf.query("SELECT Name FROM Opportunity ORDER BY Amount DESC NULLS LAST, Name")["records"]
    assert [r["Name"] for r in ordered] == ["c", "a", "d", "b"]
    ordered = sf.query("SELECT Name FROM Opportunity ORDER BY Amount NULLS FIRST LIMIT 2 OFFSET 1")["records"]
    assert [r["Name"] for r in ordered] == ["d", "a"]
    assert sf.query("SELECT COUNT() FROM Opportunity WHERE IsClosed = true") == {
        "totalSize": 2, "done": True, "records": []}
    assert sf.query("SELECT COUNT(Amount) FROM Opportunity")["records"] == [
        {"attributes": {"type": "AggregateResult"}, "expr0": 3}]
    assert sf.query("SELECT COUNT(Id) total FROM Opportunity")["records"][0]["total"] == 4


def test_query_errors_carry_the_orgs_caret_block(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Foo FROM Account")
    assert exc.value.content == [{
        "message": "\nSELECT Foo FROM Account\n       ^\nERROR at Row:1:Column:8\nNo such column 'Foo' on entity "
                   "'Account'. If you are attempting to use a custom field, be sure to append the '__c' after the "
                   "custom field name. Please reference your WSDL or the describe call for the appropriate names.",
        "errorCode": "INVALID_FIELD"}]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Id FROM Acount")
    assert exc.value.content[0]["errorCode"] == "INVALID_TYPE"
    assert "sObject type 'Acount' is not supported." in exc.value.content[0]["message"]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Id FROM Account WHERE Name = 'x' LIMT 5")
    assert exc.value.content[0]["errorCode"] == "MALFORMED_QUERY"
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Id, Name, name FROM Account")
    assert exc.value.content[0]["errorCode"] == "MALFORMED_QUERY"
    assert exc.value.content[0]["message"].endswith("ERROR at Row:1:Column:18\nduplicate field selected: name")
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Id FROM Account OFFSET 2001")
    assert exc.value.content == [{"message": "Maximum SOQL offset allowed is 2000",
                                  "errorCode": "NUMBER_OUTSIDE_VALID_RANGE"}]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Id FROM Opportunity WHERE CloseDate = '2024-01-01'")
    assert exc.value.content[0]["errorCode"] == "INVALID_FIELD"
    assert "must be of type date and should not be enclosed in quotes" in exc.value.content[0]["message"]


def test_query_all_iter_with_batch_size_header(sf: Salesforce) -> None:
    records = [{"attributes": {"type": "Product2"}, "Shopify_Product_Id__c": str(i), "Name": f"P{i:04d}"}
               for i in range(2100)]
    for start in range(0, len(records), 200):
        sf.restful("composite/sobjects/Product2/Shopify_Product_Id__c", method="PATCH",
                   json={"allOrNone": True, "records": records[start:start + 200]})
    options = {"Sforce-Query-Options": "batchSize=700"}
    first = sf.query("SELECT Name FROM Product2", headers=options)
    assert (first["totalSize"], len(first["records"]), first["done"]) == (2100, 700, False)
    names = [r["Name"] for r in sf.query_all_iter("SELECT Name FROM Product2 ORDER BY Name DESC", headers=options)]
    assert names == [f"P{i:04d}" for i in reversed(range(2100))]
    # Out-of-range batch sizes are clamped to 200..2000, as the org does.
    assert len(sf.query("SELECT Id FROM Product2", headers={"Sforce-Query-Options": "batchSize=5"})["records"]) == 200


@pytest.mark.parametrize(("literal", "n", "start", "end"), [
    ("THIS_WEEK", None, "2024-03-10", "2024-03-17"),  # 2024-03-15 is a Friday; weeks start on Sunday
    ("LAST_WEEK", None, "2024-03-03", "2024-03-10"),
    ("NEXT_WEEK", None, "2024-03-17", "2024-03-24"),
    ("THIS_MONTH", None, "2024-03-01", "2024-04-01"),
    ("LAST_MONTH", None, "2024-02-01", "2024-03-01"),
    ("NEXT_MONTH", None, "2024-04-01", "2024-05-01"),
    ("THIS_QUARTER", None, "2024-01-01", "2024-04-01"),
    ("LAST_QUARTER", None, "2023-10-01", "2024-01-01"),
    ("THIS_YEAR", None, "2024-01-01", "2025-01-01"),
    ("LAST_FISCAL_YEAR", None, "2023-01-01", "2024-01-01"),
    ("LAST_90_DAYS", None, "2023-12-16", "2024-03-16"),
    ("LAST_N_DAYS", 7, "2024-03-08", "2024-03-16"),
    ("NEXT_N_DAYS", 2, "2024-03-16", "2024-03-18"),
    ("N_DAYS_AGO", 3, "2024-03-12", "2024-03-13"),
    ("LAST_N_WEEKS", 2, "2024-02-25", "2024-03-10"),
    ("NEXT_N_MONTHS", 2, "2024-04-01", "2024-06-01"),
    ("LAST_N_MONTHS", 2, "2024-01-01", "2024-03-01"),
    ("LAST_N_YEARS", 1, "2023-01-01", "2024-01-01"),
    ("N_MONTHS_AGO", 1, "2024-02-01", "2024-03-01"),
    ("LAST_N_QUARTERS", 1, "2023-10-01", "2024-01-01"),
])
def test_relative_date_ranges(literal: str, n: int | None, start: str, end: str) -> None:
    assert _relative_range(dt.date(2024, 3, 15), literal, n) == (dt.date.fromisoformat(start),
                                                                 dt.date.fromisoformat(end))


def test_unknown_relative_literal_is_malformed(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Id FROM Account WHERE CreatedDate = LAST_FORTNIGHT")
    assert exc.value.content[0]["errorCode"] == "MALFORMED_QUERY"


def test_semi_join_and_anti_join(sf: Salesforce) -> None:
    ids = _seed(sf)
    with_contacts = sf.query("SELECT Name FROM Account WHERE Id IN (SELECT AccountId FROM Contact "
                             "WHERE LastName != 'Solo') ORDER BY Name")["records"]
    assert [r["Name"] for r in with_contacts] == ["Acme"]
    without = sf.query("SELECT Name FROM Account WHERE Id NOT IN (SELECT AccountId FROM Contact) ORDER BY Name")
    assert [r["Name"] for r in without["records"]] == ["Lonely"]
    contacts = sf.query(f"SELECT LastName FROM Contact WHERE AccountId IN (SELECT Id FROM Account WHERE Id = "
                        f"'{ids['globex']}')")["records"]
    assert [r["LastName"] for r in contacts] == ["Solo"]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Name FROM Account WHERE Id IN (SELECT AccountId, LastName FROM Contact)")
    assert "only allowed to select a single field" in exc.value.content[0]["message"]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Name FROM Account WHERE Id IN (SELECT LastName FROM Contact)")
    assert exc.value.content[0]["errorCode"] == "INVALID_FIELD"


def test_fields_function(sf: Salesforce) -> None:
    sf.Account.create({"Name": "F", "Shopify_Customer_Id__c": "f1"})
    (row,) = sf.query("SELECT FIELDS(STANDARD) FROM Account")["records"]
    assert row["Name"] == "F" and "Shopify_Customer_Id__c" not in row and "SystemModstamp" in row
    assert list(row)[:2] == ["attributes", "Id"]
    (row,) = sf.query("SELECT Name, FIELDS(CUSTOM) FROM Account LIMIT 10")["records"]
    assert list(row) == [
        "attributes", "Name", "Shopify_Customer_Id__c", "WooCommerce_Customer_Id__c", "QuickBooks_Id__c",
    ]
    assert len(sf.query("SELECT FIELDS(ALL) FROM Account LIMIT 200")["records"][0]) == len(
        sf.Account.describe()["fields"]) + 1
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT FIELDS(ALL) FROM Account")
    assert exc.value.content[0]["errorCode"] == "MALFORMED_QUERY"
    assert "The SOQL FIELDS function must have a LIMIT of at most 200" in exc.value.content[0]["message"]


def test_child_rows_count_toward_the_batch_size(sf: Salesforce) -> None:
    accounts = [{"attributes": {"type": "Account"}, "Name": f"A{i:03d}"} for i in range(150)]
    ids = [r["id"] for r in sf.restful("composite/sobjects", method="POST", json={"records": accounts})]
    contacts = [{"attributes": {"type": "Contact"}, "LastName": f"C{i}", "AccountId": ids[0]} for i in range(150)]
    sf.restful("composite/sobjects", method="POST", json={"records": contacts})
    soql = "SELECT Name, (SELECT LastName FROM Contacts) FROM Account ORDER BY Name"
    options = {"Sforce-Query-Options": "batchSize=200"}
    first = sf.query(soql, headers=options)
    # A000 carries 150 contacts: 151 rows, so the first 200-row page holds 50 accounts, not 150.
    assert (first["totalSize"], len(first["records"]), first["done"]) == (150, 50, False)
    assert first["records"][0]["Contacts"]["totalSize"] == 150
    names = [r["Name"] for r in sf.query_all_iter(soql, headers=options)]
    assert names == [f"A{i:03d}" for i in range(150)]
