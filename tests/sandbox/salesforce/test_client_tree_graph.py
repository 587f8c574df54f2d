"""sObject Tree and Composite Graph through simple-salesforce's restful(), against the running sandbox."""

from __future__ import annotations

from typing import Any

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

HALTED = [{"errorCode": "PROCESSING_HALTED",
           "message": "The transaction was rolled back since another operation in the same transaction failed."}]


def _account(ref: str, name: str, contacts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {"attributes": {"type": "Account", "referenceId": ref}, "Name": name}
    if contacts is not None:
        rec["Contacts"] = {"records": contacts}
    return rec


def _contact(ref: str, last: str, **extra: Any) -> dict[str, Any]:
    return {"attributes": {"type": "Contact", "referenceId": ref}, "LastName": last, **extra}


def test_tree_creates_nested_records_level_by_level(sf: Salesforce) -> None:
    body = {"records": [_account("ref1", "Tree A", [_contact("ref2", "Smith"), _contact("ref3", "Evans")]),
                        _account("ref4", "Tree B")]}
    answer = sf.restful("composite/tree/Account", method="POST", json=body)
    assert answer["hasErrors"] is False
    # Roots of every tree first, then the second level: the order of the guide's example.
    assert [r["referenceId"] for r in answer["results"]] == ["ref1", "ref4", "ref2", "ref3"]
    ids = {r["referenceId"]: r["id"] for r in answer["results"]}
    assert ids["ref1"].startswith("001") and ids["ref2"].startswith("003")
    contact = sf.Contact.get(ids["ref3"])
    assert contact["AccountId"] == ids["ref1"] and contact["LastName"] == "Evans"


def test_tree_is_all_or_nothing_and_reports_the_failing_record(sf: Salesforce) -> None:
    before = sf.query("SELECT COUNT() FROM Account")["totalSize"]
    body = {"records": [_account("ok", "Kept?", [_contact("bad", "X", Email="not-an-email")])]}
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("composite/tree/Account", method="POST", json=body)
    assert exc.value.content == {"hasErrors": True, "results": [{"referenceId": "bad", "errors": [
        {"statusCode": "INVALID_EMAIL_ADDRESS", "message": "Email: invalid email address: not-an-email",
         "fields": ["Email"]}]}]}
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == before


def test_tree_limits_and_reference_ids(sf: Salesforce) -> None:
    too_many = {"records": [_account(f"r{i}", f"A{i}") for i in range(201)]}
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("composite/tree/Account", method="POST", json=too_many)
    assert exc.value.content["results"][0]["errors"][0]["statusCode"] == "EXCEEDED_ID_LIMIT"
    dupes = {"records": [_account("same", "A"), _account("same", "B")]}
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("composite/tree/Account", method="POST", json=dupes)
    assert [r["referenceId"] for r in exc.value.content["results"]] == ["same", "same"]
    wrong_root = {"records": [_contact("c1", "Root")]}
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("composite/tree/Account", method="POST", json=wrong_root)
    assert exc.value.content["results"][0]["errors"][0]["statusCode"] == "INVALID_INPUT"
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == 0
    assert len(sf.restful("composite/tree/Account", method="POST",
                          json={"records": [_account(f"r{i}", f"A{i}") for i in range(200)]})["results"]) == 200


def _node(ref: str, url: str, body: dict[str, Any] | None = None, method: str = "POST") -> dict[str, Any]:
    node: dict[str, Any] = {"method": method, "url": f"/services/data/v62.0/{url}", "referenceId": ref}
    if body is not None:
        node["body"] = body
    return node


def test_graph_each_graph_all_or_nothing(sf: Salesforce) -> None:
    good = {"graphId": "g1", "compositeRequest": [
        _node("acct", "sobjects/Account/", {"Name": "Cloudy Consulting"}),
        _node("con", "sobjects/Contact/", {"LastName": "Cashman", "AccountId": "@{acct.id}"})]}
    bad = {"graphId": "g2", "compositeRequest": [
        _node("acct2", "sobjects/Account/", {"Name": "Easy Spaces"}),
        _node("con2", "sobjects/Contact/", {"FirstName": "No last name", "AccountId": "@{acct2.id}"})]}
    answer = sf.restful("composite/graph", method="POST", json={"graphs": [good, bad]})
    first, second = answer["graphs"]
    assert first["graphId"] == "g1" and first["isSuccessful"] is True
    statuses = [r["httpStatusCode"] for r in first["graphResponse"]["compositeResponse"]]
    assert statuses == [201, 201]
    assert second["isSuccessful"] is False
    halted, failed = second["graphResponse"]["compositeResponse"]
    assert halted == {"body": HALTED, "httpHeaders": {}, "httpStatusCode": 400, "referenceId": "acct2"}
    assert failed["body"] == [{"message": "Required fields are missing: [LastName]",
                               "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["LastName"]}]
    names = {r["Name"] for r in sf.query("SELECT Name FROM Account")["records"]}
    assert names == {"Cloudy Consulting"}  # the failed graph's account was rolled back, the other kept


def test_graph_limits_and_unsupported_nodes(sf: Salesforce) -> None:
    def graph(gid: str, n: int) -> dict[str, Any]:
        return {"graphId": gid, "compositeRequest": [
            _node(f"{gid}_{i}", "sobjects/Account/", {"Name": f"{gid}-{i}"}) for i in range(n)]}

    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("composite/graph", method="POST", json={"graphs": [graph("a", 300), graph("b", 201)]})
    assert exc.value.content[0]["errorCode"] == "LIMIT_EXCEEDED"
    assert "at most 500 nodes" in exc.value.content[0]["message"]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("composite/graph", method="POST", json={"graphs": [graph(f"g{i}", 1) for i in range(76)]})
    assert exc.value.content[0]["message"] == "A composite graph request can contain at most 75 graphs"
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("composite/graph", method="POST", json={"graphs": [graph("same", 1), graph("same", 1)]})
    assert exc.value.content[0]["errorCode"] == "INVALID_INPUT"
    chain = [_node("n0", "sobjects/Account/", {"Name": "root"})]
    chain += [_node(f"n{i}", f"sobjects/Account/@{{n{i - 1}.id}}", {"Name": f"x{i}"}, "PATCH") for i in range(1, 16)]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("composite/graph", method="POST", json={"graphs": [{"graphId": "deep", "compositeRequest": chain}]})
    assert "maximum depth of a graph is 15" in exc.value.content[0]["message"]
    query = {"graphId": "q", "compositeRequest": [
        _node("acct", "sobjects/Account/", {"Name": "kept?"}),
        _node("q", "query/?q=SELECT+Id+FROM+Account", None, "GET")]}
    answer = sf.restful("composite/graph", method="POST", json={"graphs": [query]})
    assert answer["graphs"][0]["isSuccessful"] is False
    assert answer["graphs"][0]["graphResponse"]["compositeResponse"][1]["body"][0]["errorCode"] == "INVALID_INPUT"
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == 0


def test_graph_past_14_failed_graphs_the_rest_are_halted(sf: Salesforce) -> None:
    failing = [{"graphId": f"f{i}", "compositeRequest": [_node(f"c{i}", "sobjects/Contact/", {"FirstName": "x"})]}
               for i in range(15)]
    last = {"graphId": "last", "compositeRequest": [_node("ok", "sobjects/Account/", {"Name": "never"})]}
    answer = sf.restful("composite/graph", method="POST", json={"graphs": [*failing, last]})
    tail = answer["graphs"][-1]
    assert tail["isSuccessful"] is False
    assert tail["graphResponse"]["compositeResponse"][0]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == 0


def test_collections_retrieve_takes_up_to_2000_ids(sf: Salesforce) -> None:
    acct = sf.Account.create({"Name": "one"})["id"]
    got = sf.restful("composite/sobjects/Account", method="POST", json={"ids": [acct] * 2000, "fields": ["Name"]})
    assert len(got) == 2000 and got[-1]["Name"] == "one"
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("composite/sobjects/Account", method="POST", json={"ids": [acct] * 2001, "fields": ["Name"]})
    assert exc.value.content == [{"message": "record limit reached. cannot submit more than 2000 records into this "
                                             "call", "errorCode": "EXCEEDED_ID_LIMIT"}]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("composite/sobjects", method="DELETE", params={"ids": ",".join([acct] * 201)})
    assert exc.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


def test_tree_accepts_the_guides_nested_example(sf: Salesforce) -> None:
    """The guide's "Create Nested Records" body: lower-case names, a number as a string, child accounts."""
    body = {"records": [
        {"attributes": {"type": "Account", "referenceId": "ref1"}, "name": "SampleAccount1", "phone": "1234567890",
         "website": "www.salesforce.com", "numberOfEmployees": "100", "industry": "Banking",
         "Contacts": {"records": [
             {"attributes": {"type": "Contact", "referenceId": "ref2"}, "lastname": "Smith", "Title": "President",
              "email": "sample@salesforce.com"},
             {"attributes": {"type": "Contact", "referenceId": "ref3"}, "lastname": "Evans",
              "title": "Vice President", "email": "sample@salesforce.com"}]}},
        {"attributes": {"type": "Account", "referenceId": "ref4"}, "name": "SampleAccount2",
         "ChildAccounts": {"records": [
             {"attributes": {"type": "Account", "referenceId": "ref5"}, "name": "SampleChildAccount1",
              "Contacts": {"records": [
                  {"attributes": {"type": "Contact", "referenceId": "ref6"}, "lastname": "Jones"}]}}]}}]}
    answer = sf.restful("composite/tree/Account/", method="POST", json=body)
    assert [r["referenceId"] for r in answer["results"]] == ["ref1", "ref4", "ref2", "ref3", "ref5", "ref6"]
    ids = {r["referenceId"]: r["id"] for r in answer["results"]}
    child = sf.Account.get(ids["ref5"])
    assert child["ParentId"] == ids["ref4"] and sf.Account.get(ids["ref1"])["NumberOfEmployees"] == 100
    assert sf.Contact.get(ids["ref6"])["AccountId"] == ids["ref5"]
