"""SOQL beyond the basics through simple-salesforce: aggregates, GROUP BY [ROLLUP|CUBE], HAVING, date functions,
semi-join rules, FIELDS(), TYPEOF, FOR clauses, and the org's error codes and caret messages."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from .conftest import Org, start_org

AGG = {"type": "AggregateResult"}


def _opportunities(sf: Salesforce) -> dict[str, str]:
    acme = sf.Account.create({"Name": "Acme"})["id"]
    globex = sf.Account.create({"Name": "Globex"})["id"]
    sf.Account.create({"Name": "Initech"})
    rows = [("a", "Web", "Prospecting", "2024-01-15", 100, acme), ("b", "Web", "Closed Won", "2024-02-20", 300, acme),
            ("c", "Other", "Closed Won", "2024-02-03", 50, globex), ("d", None, "Closed Lost", "2023-12-31", None,
                                                                      globex),
            ("e", "web", "Prospecting", "2024-05-05", 25.5, None)]
    for name, source, stage, close, amount, account in rows:
        body: dict[str, Any] = {"Name": name, "StageName": stage, "CloseDate": close}
        if source is not None:
            body["LeadSource"] = source
        if amount is not None:
            body["Amount"] = amount
        if account is not None:
            body["AccountId"] = account
        sf.Opportunity.create(body)
    return {"acme": acme, "globex": globex}


def _error(sf: Salesforce, soql: str) -> dict[str, Any]:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query(soql)
    (error,) = exc.value.content
    return error


def _caret(soql: str, column: int, text: str) -> str:
    return f"\n{soql}\n{' ' * (column - 1)}^\nERROR at Row:1:Column:{column}\n{text}"


def test_aggregates_without_group_by_answer_one_aggregate_result(sf: Salesforce) -> None:
    _opportunities(sf)
    result = sf.query("SELECT COUNT(Id), COUNT(Amount) withAmount, COUNT_DISTINCT(LeadSource), SUM(Amount), "
                      "AVG(Amount), MIN(CloseDate), MAX(Amount) FROM Opportunity")
    assert result == {"totalSize": 1, "done": True, "records": [{
        "attributes": AGG, "expr0": 5, "withAmount": 4, "expr1": 2, "expr2": 475.5, "expr3": 118.875,
        "expr4": "2023-12-31", "expr5": 300.0}]}
    # Over no rows the org still answers one row: counts are 0, the others null.
    empty = sf.query("SELECT COUNT(Id), SUM(Amount) FROM Opportunity WHERE Name = 'zzz'")["records"]
    assert empty == [{"attributes": AGG, "expr0": 0, "expr1": None}]


def test_group_by_having_order_limit(sf: Salesforce) -> None:
    _opportunities(sf)
    rows = sf.query("SELECT LeadSource, COUNT(Name) cnt, SUM(Amount) FROM Opportunity GROUP BY LeadSource "
                    "ORDER BY LeadSource NULLS LAST")["records"]
    # Text groups case-insensitively ("Web" and "web" are one group), as the org does.
    assert rows == [{"attributes": AGG, "LeadSource": "Other", "cnt": 1, "expr0": 50.0},
                    {"attributes": AGG, "LeadSource": "Web", "cnt": 3, "expr0": 425.5},
                    {"attributes": AGG, "LeadSource": None, "cnt": 1, "expr0": None}]
    having = sf.query("SELECT StageName, COUNT(Id) FROM Opportunity GROUP BY StageName HAVING COUNT(Id) > 1 "
                      "ORDER BY COUNT(Id) DESC, StageName")["records"]
    assert [(r["StageName"], r["expr0"]) for r in having] == [("Closed Won", 2), ("Prospecting", 2)]
    limited = sf.query("SELECT StageName s FROM Opportunity GROUP BY StageName ORDER BY StageName LIMIT 1 OFFSET 1")
    assert limited["records"] == [{"attributes": AGG, "s": "Closed Won"}]
    by_parent = sf.query("SELECT Account.Name, MAX(Amount) top FROM Opportunity WHERE AccountId != null "
                         "GROUP BY Account.Name HAVING MAX(Amount) >= 50 ORDER BY Account.Name")["records"]
    assert by_parent == [{"attributes": AGG, "Name": "Acme", "top": 300.0},
                         {"attributes": AGG, "Name": "Globex", "top": 50.0}]
    # COUNT() takes neither GROUP BY nor ORDER BY ("COUNT() and COUNT(fieldName)" in the reference).
    assert _error(sf, "SELECT COUNT() FROM Opportunity GROUP BY StageName")["errorCode"] == "MALFORMED_QUERY"
    assert _error(sf, "SELECT COUNT() FROM Opportunity ORDER BY Name")["errorCode"] == "MALFORMED_QUERY"
    assert sf.query("SELECT COUNT() FROM Opportunity WHERE StageName = 'Closed Won' LIMIT 1")["totalSize"] == 1


def test_group_by_rollup_and_cube_add_subtotals(sf: Salesforce) -> None:
    _opportunities(sf)
    rollup = sf.query("SELECT StageName, LeadSource, GROUPING(StageName) gs, GROUPING(LeadSource) gl, COUNT(Id) n "
                      "FROM Opportunity WHERE LeadSource != null GROUP BY ROLLUP(StageName, LeadSource)")["records"]
    assert [(r["StageName"], r["LeadSource"], r["gs"], r["gl"], r["n"]) for r in rollup] == [
        ("Closed Won", "Other", 0, 0, 1), ("Closed Won", "Web", 0, 0, 1), ("Closed Won", None, 0, 1, 2),
        ("Prospecting", "Web", 0, 0, 2), ("Prospecting", None, 0, 1, 2),
        (None, None, 1, 1, 4)]
    cube = sf.query("SELECT StageName, LeadSource, COUNT(Id) FROM Opportunity WHERE LeadSource != null "
                    "GROUP BY CUBE(StageName, LeadSource)")["records"]
    assert len(cube) == 3 + 2 + 2 + 1  # 3 stage/source pairs, 2 stage and 2 source subtotals, 1 total
    assert cube[-1] == {"attributes": AGG, "StageName": None, "LeadSource": None, "expr0": 4}
    assert {"attributes": AGG, "StageName": None, "LeadSource": "Web", "expr0": 3} in cube
    error = _error(sf, "SELECT GROUPING(StageName) FROM Opportunity GROUP BY StageName")
    assert error["errorCode"] == "MALFORMED_QUERY"


def test_date_functions_in_where_group_by_and_select(sf: Salesforce) -> None:
    _opportunities(sf)
    by_month = sf.query("SELECT CALENDAR_YEAR(CloseDate) y, CALENDAR_MONTH(CloseDate) m, COUNT(Id) FROM Opportunity "
                        "GROUP BY CALENDAR_YEAR(CloseDate), CALENDAR_MONTH(CloseDate) "
                        "ORDER BY CALENDAR_YEAR(CloseDate), CALENDAR_MONTH(CloseDate)")["records"]
    assert [(r["y"], r["m"], r["expr0"]) for r in by_month] == [(2023, 12, 1), (2024, 1, 1), (2024, 2, 2),
                                                                 (2024, 5, 1)]

    def names(where: str) -> list[str]:
        return [r["Name"] for r in sf.query(f"SELECT Name FROM Opportunity WHERE {where} ORDER BY Name")["records"]]

    assert names("CALENDAR_YEAR(CloseDate) = 2024 AND CALENDAR_QUARTER(CloseDate) = 1") == ["a", "b", "c"]
    assert names("DAY_IN_WEEK(CloseDate) = 1") == ["d", "e"]  # 2023-12-31 and 2024-05-05 are Sundays
    assert names("DAY_IN_MONTH(CloseDate) IN (3, 5) AND WEEK_IN_YEAR(CloseDate) > 4") == ["c", "e"]
    assert names("DAY_IN_YEAR(CloseDate) = 365 OR FISCAL_MONTH(CloseDate) = 5") == ["d", "e"]
    assert names("WEEK_IN_MONTH(CloseDate) = 3") == ["a", "b"]
    today = dt.datetime.now(dt.UTC)
    assert names(f"DAY_ONLY(CreatedDate) = {today.date().isoformat()} AND HOUR_IN_DAY(CreatedDate) = "
                 f"{today.hour}") in (["a", "b", "c", "d", "e"], [])  # [] only if the hour turned meanwhile
    assert names("DAY_ONLY(CreatedDate) = TODAY") == ["a", "b", "c", "d", "e"]
    day_only = sf.query("SELECT DAY_ONLY(CreatedDate) d, COUNT(Id) FROM Opportunity GROUP BY DAY_ONLY(CreatedDate)")
    assert day_only["records"] == [{"attributes": AGG, "d": today.date().isoformat(), "expr0": 5}]


def test_aggregate_errors(sf: Salesforce) -> None:
    soql = "SELECT Name, COUNT(Id) FROM Opportunity"
    assert _error(sf, soql) == {"errorCode": "MALFORMED_QUERY",
                                "message": _caret(soql, 8, "Field must be grouped or aggregated: Name")}
    soql = "SELECT SUM(Name) FROM Opportunity"
    assert _error(sf, soql) == {"errorCode": "MALFORMED_QUERY",
                                "message": _caret(soql, 8, "field Name does not support aggregate operator SUM")}
    soql = "SELECT COUNT(IsWon) FROM Opportunity"
    assert _error(sf, soql)["message"].endswith("field IsWon does not support aggregate operator COUNT")
    soql = "SELECT Name n FROM Opportunity"
    assert _error(sf, soql) == {"errorCode": "MALFORMED_QUERY",
                                "message": _caret(soql, 13, "only aggregate expressions use field aliasing")}
    soql = "SELECT Description, COUNT(Id) FROM Opportunity GROUP BY Description"
    assert _error(sf, soql) == {"errorCode": "INVALID_FIELD", "message": _caret(
        soql, 57, "field 'Description' can not be grouped in a query call")}
    soql = "SELECT StageName FROM Opportunity GROUP BY StageName ORDER BY Name"
    assert _error(sf, soql)["message"].endswith("Ordered field must be grouped or aggregated: Name")
    soql = "SELECT CreatedDate, COUNT(Id) FROM Opportunity GROUP BY CreatedDate"
    assert _error(sf, soql)["message"].endswith("field 'CreatedDate' can not be grouped in a query call")
    soql = "SELECT Name, (SELECT COUNT(Id) FROM OpportunityLineItems) FROM Opportunity"
    assert _error(sf, soql)["message"].endswith("only root queries support aggregate expressions")
    soql = "SELECT StageName x, COUNT(Id) x FROM Opportunity GROUP BY StageName"
    assert _error(sf, soql)["message"].endswith("duplicate alias: x")


def test_aggregate_query_has_no_query_more(sf: Salesforce) -> None:
    records = [{"attributes": {"type": "Product2"}, "Name": f"P{i:04d}", "Shopify_Product_Id__c": str(i)}
               for i in range(2001)]
    for start in range(0, len(records), 200):
        sf.restful("composite/sobjects/Product2/Shopify_Product_Id__c", method="PATCH",
                   json={"allOrNone": True, "records": records[start:start + 200]})
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Name, COUNT(Id) FROM Product2 GROUP BY Name")
    assert exc.value.content == [{"errorCode": "MALFORMED_QUERY", "message": (
        "Aggregate query does not support queryMore(), use LIMIT to restrict the results to a single batch")}]
    assert len(sf.query("SELECT Name, COUNT(Id) FROM Product2 GROUP BY Name LIMIT 2000")["records"]) == 2000


def test_query_all_reaches_aggregates_over_deleted_rows(sf: Salesforce) -> None:
    keep = sf.Lead.create({"LastName": "Keep", "Company": "c"})["id"]
    gone = sf.Lead.create({"LastName": "Gone", "Company": "c"})["id"]
    sf.Lead.delete(gone)
    assert keep
    assert sf.query("SELECT COUNT(Id) FROM Lead")["records"][0]["expr0"] == 1
    assert sf.query_all("SELECT IsDeleted, COUNT(Id) FROM Lead GROUP BY IsDeleted ORDER BY IsDeleted",
                        include_deleted=True)["records"] == [{"attributes": AGG, "IsDeleted": False, "expr0": 1},
                                                             {"attributes": AGG, "IsDeleted": True, "expr0": 1}]


def test_semi_join_rules(sf: Salesforce) -> None:
    ids = _opportunities(sf)
    rows = sf.query("SELECT Name FROM Account WHERE Id IN (SELECT AccountId FROM Opportunity WHERE Amount > 60) "
                    "AND Id NOT IN (SELECT AccountId FROM Contact) ORDER BY Name")["records"]
    assert [r["Name"] for r in rows] == ["Acme"]
    assert [r["Name"] for r in sf.query(
        f"SELECT Name FROM Opportunity WHERE AccountId IN (SELECT Id FROM Account WHERE Name = 'Globex') "
        f"AND AccountId = '{ids['globex']}' ORDER BY Name")["records"]] == ["c", "d"]
    soql = ("SELECT Name FROM Account WHERE Name = 'x' OR Id IN (SELECT AccountId FROM Contact)")
    assert _error(sf, soql) == {"errorCode": "MALFORMED_QUERY", "message": _caret(
        soql, 53, "Semi join sub-selects are not allowed with the 'OR' operator")}
    soql = ("SELECT Name FROM Account WHERE Name = 'x' AND (Name = 'y' OR Id IN (SELECT AccountId FROM Contact))")
    assert _error(sf, soql)["message"].endswith("Semi join sub-selects are only allowed at the top level WHERE "
                                                "expressions and not in nested WHERE expressions.")
    soql = ("SELECT Name FROM Account WHERE Id IN (SELECT AccountId FROM Contact WHERE AccountId IN "
            "(SELECT AccountId FROM Opportunity))")
    assert _error(sf, soql)["message"].endswith("Nesting of semi join sub-selects is not supported")
    soql = ("SELECT Name FROM Account WHERE Id IN (SELECT AccountId FROM Contact) AND Id IN (SELECT AccountId FROM "
            "Opportunity) AND Id IN (SELECT AccountId FROM Case)")
    assert _error(sf, soql)["message"].endswith("Maximum 2 semi join sub-selects are allowed")
    soql = "SELECT Name FROM Account WHERE Id IN (SELECT OwnerId FROM Contact)"
    assert _error(sf, soql) == {"errorCode": "INVALID_FIELD", "message": _caret(
        soql, 46, "The selected field 'OwnerId' in the subquery and the left operand field in the where expression "
                  "in the outer query 'Id' should point to the same object type")}
    soql = "SELECT Name FROM Account WHERE ParentId IN (SELECT Id FROM Account)"
    assert _error(sf, soql)["message"].endswith("The inner and outer selects should not be on the same object type")


def test_fields_function_rules(sf: Salesforce) -> None:
    sf.Contact.create({"LastName": "F"})
    assert len(sf.query("SELECT FIELDS(ALL) FROM Contact LIMIT 200")["records"]) == 1
    soql = "SELECT FIELDS(CUSTOM) FROM Contact LIMIT 201"
    assert _error(sf, soql) == {"errorCode": "MALFORMED_QUERY", "message": _caret(
        soql, 8, "The SOQL FIELDS function must have a LIMIT of at most 200")}
    # As the org's FIELDS() page shows: a field also named beside FIELDS() is a duplicate, without a caret block.
    assert _error(sf, "SELECT Id, FIELDS(ALL) FROM Contact LIMIT 200") == {
        "errorCode": "INVALID_FIELD", "message": "duplicate field selected: Id"}
    (row,) = sf.query("SELECT LastName, (SELECT FIELDS(STANDARD) FROM Cases) FROM Contact")["records"]
    assert row["Cases"] is None


POLYMORPHIC = """
objects:
  Task:
    keyPrefix: 00T
    labelPlural: Tasks
    fields:
      - {name: Subject, type: string, length: 255}
      - {name: WhatId, type: reference, referenceTo: [Account, Opportunity], relationshipName: What}
"""


@pytest.fixture(scope="module")
def polymorphic_org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Org]:
    tmp = tmp_path_factory.mktemp("sf-typeof")
    path = tmp / "schema.yaml"
    path.write_text(POLYMORPHIC)
    yield from start_org(tmp, extra_schema=path)


def test_typeof_on_a_polymorphic_lookup(polymorphic_org: Org) -> None:
    sf = polymorphic_org.client()
    account = sf.Account.create({"Name": "Acme", "Phone": "555"})["id"]
    opportunity = sf.Opportunity.create({"Name": "Big", "StageName": "Prospecting", "CloseDate": "2024-01-01",
                                         "Amount": 10, "AccountId": account})["id"]
    for subject, what in (("a", account), ("b", opportunity), ("c", None)):
        sf.Task.create({"Subject": subject, "WhatId": what})
    rows = sf.query("SELECT Subject, TYPEOF What WHEN Account THEN Name, Phone WHEN Opportunity THEN Amount, "
                    "Account.Name END FROM Task ORDER BY Subject")["records"]

    def url(kind: str, rid: str) -> dict[str, str]:
        return {"type": kind, "url": f"/services/data/v62.0/sobjects/{kind}/{rid}"}

    assert [(r["Subject"], r["What"]) for r in rows] == [
        ("a", {"attributes": url("Account", account), "Name": "Acme", "Phone": "555"}),
        ("b", {"attributes": url("Opportunity", opportunity), "Amount": 10.0,
               "Account": {"attributes": url("Account", account), "Name": "Acme"}}),
        ("c", None)]
    other = sf.query("SELECT TYPEOF What WHEN Account THEN Phone ELSE Name END FROM Task WHERE Subject = 'b'")
    assert other["records"][0]["What"] == {"attributes": url("Opportunity", opportunity), "Name": "Big"}
    soql = "SELECT TYPEOF What WHEN Contact THEN Name END FROM Task"
    assert _error(sf, soql)["errorCode"] == "INVALID_FIELD"


def test_typeof_is_refused_without_a_polymorphic_lookup(sf: Salesforce) -> None:
    soql = "SELECT Id, TYPEOF Owner WHEN User THEN Username END FROM Account"
    assert _error(sf, soql) == {"errorCode": "MALFORMED_QUERY", "message": _caret(
        soql, 12, "TYPEOF can only be used with a polymorphic relationship field: Owner")}
    assert _error(sf, "SELECT TYPEOF What WHEN Account THEN Name END FROM Account")["errorCode"] == "INVALID_FIELD"


def test_for_with_and_using_clauses_are_accepted(sf: Salesforce) -> None:
    sf.Account.create({"Name": "Acme"})
    for tail in ("FOR VIEW", "FOR REFERENCE", "LIMIT 1 FOR UPDATE"):
        assert sf.query(f"SELECT Name FROM Account {tail}")["records"][0]["Name"] == "Acme"
    assert sf.query("SELECT Name FROM Account USING SCOPE Everything WHERE Name != null WITH SECURITY_ENFORCED")[
        "totalSize"] == 1
    assert _error(sf, "SELECT Name FROM Account FOR LUNCH")["errorCode"] == "MALFORMED_QUERY"


def test_filter_errors_have_the_orgs_codes_and_messages(sf: Salesforce) -> None:
    soql = "SELECT Id FROM Account WHERE CreatedDate > '2020-01-01'"
    assert _error(sf, soql) == {"errorCode": "INVALID_FIELD", "message": _caret(
        soql, 44, "value of filter criterion for field 'CreatedDate' must be of type dateTime and should not be "
                  "enclosed in quotes")}
    soql = "SELECT Id FROM Account WHERE Id = 'xyz'"
    assert _error(sf, soql) == {"errorCode": "INVALID_QUERY_FILTER_OPERATOR",
                                "message": _caret(soql, 35, "invalid ID field: xyz")}
    soql = "SELECT Id FROM Account WHERE Id IN ('001000000000000AAA', 'nope')"
    assert _error(sf, soql)["errorCode"] == "INVALID_QUERY_FILTER_OPERATOR"
    soql = "SELECT Id FROM Account WHERE Id LIKE '001%'"
    assert _error(sf, soql) == {"errorCode": "INVALID_QUERY_FILTER_OPERATOR",
                                "message": _caret(soql, 38, "invalid operator on id field")}
    soql = "SELECT Id FROM Account WHERE Name = 5"
    assert _error(sf, soql) == {"errorCode": "INVALID_FIELD", "message": _caret(
        soql, 37, "value of filter criterion for field 'Name' must be of type string and should be enclosed in "
                  "quotes")}
    soql = "SELECT Id FROM Account WHERE Description = 'x'"
    assert _error(sf, soql) == {"errorCode": "INVALID_FIELD", "message": _caret(
        soql, 30, "field 'Description' can not be filtered in a query call")}
    soql = "SELECT Id FROM Account ORDER BY Description"
    assert _error(sf, soql)["message"].endswith("field 'Description' can not be sorted in a query call")
    soql = "SELECT Id FROM Opportunity WHERE CALENDAR_YEAR(CloseDate) = '2024'"
    assert _error(sf, soql)["errorCode"] == "INVALID_FIELD"
    soql = "SELECT Id FROM Account WHERE HOUR_IN_DAY(Name) = 1"
    assert _error(sf, soql)["errorCode"] == "MALFORMED_QUERY"
    soql = "SELECT Id FROM Account WHERE COUNT(Id) > 1"
    assert _error(sf, soql)["errorCode"] == "MALFORMED_QUERY"
    soql = "SELECT Id FROM Account WHERE Name LIKE 'A%' GROUP BY"
    assert _error(sf, soql) == {"errorCode": "MALFORMED_QUERY",
                                "message": _caret(soql, 53, "unexpected token: '<EOF>'")}
