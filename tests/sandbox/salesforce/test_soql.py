from __future__ import annotations

from pathlib import Path

import pytest

from ferry.sandbox.salesforce import SalesforceSandbox
from ferry.sandbox.salesforce.soql import BoolOp, Comparison, CountExpr, FieldPath, Not, SoqlError, parse, tokenize
from ferry.sandbox.salesforce.validate import parse_body


def test_tokenizer_handles_escapes_dates_and_operators() -> None:
    soql = r"Name = 'O\'Brien \\ x' AND D >= 2024-01-31 AND T < 2024-01-31T10:00:00Z"
    kinds = [(t.kind, t.value) for t in tokenize(soql)]
    assert ("STRING", "O'Brien \\ x") in kinds
    assert ("DATE", "2024-01-31") in kinds
    assert ("DATETIME", "2024-01-31T10:00:00Z") in kinds
    assert ("OP", ">=") in kinds


def test_parser_builds_precedence_tree() -> None:
    q = parse("SELECT Id, Account.Name FROM Contact WHERE A = 1 OR B = 2 AND NOT (C != null) "
              "ORDER BY Name DESC NULLS LAST, Id LIMIT 10 OFFSET 5")
    assert [p.text for p in q.select if isinstance(p, FieldPath)] == ["Id", "Account.Name"]
    assert isinstance(q.where, BoolOp) and q.where.op == "OR"
    right = q.where.items[1]
    assert isinstance(right, BoolOp) and right.op == "AND" and isinstance(right.items[1], Not)
    assert q.order_by[0].descending and q.order_by[0].nulls_last is True
    assert (q.limit, q.offset) == (10, 5)


def test_order_and_group_are_objects_after_from_and_keywords_elsewhere() -> None:
    q = parse("SELECT Id FROM Order WHERE Status IN ('Activated') ORDER BY SystemModstamp, Id")
    assert q.sobject == "Order" and [getattr(o.path, "text", None) for o in q.order_by] == ["SystemModstamp", "Id"]
    assert parse("SELECT COUNT() FROM Group").sobject == "Group"
    with pytest.raises(SoqlError):
        parse("SELECT Id FROM Where")


def test_parser_in_not_in_like_count() -> None:
    q = parse("SELECT COUNT() FROM Account WHERE Name LIKE 'A%' AND Id NOT IN ('a', 'b') AND Type IN ('x')")
    assert isinstance(q.select[0], CountExpr)
    assert isinstance(q.where, BoolOp)
    ops = [c.op for c in q.where.items if isinstance(c, Comparison)]
    assert ops == ["LIKE", "NOTIN", "IN"]


@pytest.mark.parametrize("soql", ["SELECT Id FORM Account", "SELECT FROM Account", "SELECT Id FROM Account WHERE",
                                  "SELECT Id FROM Account WHERE Name = 'open", "SELECT Id FROM Account LIMIT -1",
                                  "SELECT Id FROM Account WHERE Name = 'a' junk"])
def test_malformed_queries_have_the_orgs_error(soql: str) -> None:
    with pytest.raises(SoqlError) as exc:
        parse(soql)
    assert exc.value.error_code == "MALFORMED_QUERY"
    assert "ERROR at Row:1:Column:" in exc.value.message


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> SalesforceSandbox:
    sb = SalesforceSandbox(tmp_path_factory.mktemp("soql"))
    obj = sb.state.schema.objects["Account"]
    for i, (name, rev) in enumerate([("Acme", 100), ("beta", None), ("Gamma", 300), ("O'Hara", 50)]):
        body = {"Name": name, "Shopify_Customer_Id__c": str(i)}
        if rev is not None:
            body["AnnualRevenue"] = rev
        assert sb.state.org.create(obj, parse_body(sb.state.schema, obj, body)).success
    contact = sb.state.schema.objects["Contact"]
    assert sb.state.org.create(contact, parse_body(sb.state.schema, contact, {
        "LastName": "Smith", "Account": {"Shopify_Customer_Id__c": "0"}})).success
    return sb


def run(sb: SalesforceSandbox, soql: str, include_deleted: bool = False) -> list[dict]:
    ex = sb.state.executor
    plan = ex.plan(parse(soql))
    return [ex.project(plan, r, "62.0") for r in ex.rows(plan, include_deleted)]


def test_where_is_case_insensitive_for_text_and_handles_null(sandbox: SalesforceSandbox) -> None:
    assert [r["Name"] for r in run(sandbox, "SELECT Name FROM Account WHERE Name = 'ACME'")] == ["Acme"]
    assert [r["Name"] for r in run(sandbox, "SELECT Name FROM Account WHERE AnnualRevenue = null")] == ["beta"]
    assert len(run(sandbox, "SELECT Name FROM Account WHERE AnnualRevenue != null")) == 3
    assert [r["Name"] for r in run(sandbox, r"SELECT Name FROM Account WHERE Name = 'O\'Hara'")] == ["O'Hara"]


def test_like_in_ranges_and_boolean_logic(sandbox: SalesforceSandbox) -> None:
    names = lambda q: sorted(r["Name"] for r in run(sandbox, q))  # noqa: E731
    assert names("SELECT Name FROM Account WHERE Name LIKE '%a'") == ["Gamma", "O'Hara", "beta"]
    assert names("SELECT Name FROM Account WHERE Name IN ('acme', 'gamma')") == ["Acme", "Gamma"]
    assert names("SELECT Name FROM Account WHERE AnnualRevenue >= 100 AND NOT Name = 'Gamma'") == ["Acme"]
    assert names("SELECT Name FROM Account WHERE (AnnualRevenue < 60 OR Name = 'beta') AND Name != 'x'") == [
        "O'Hara", "beta"]


def test_order_by_nulls_limit_offset(sandbox: SalesforceSandbox) -> None:
    rows = run(sandbox, "SELECT Name FROM Account ORDER BY AnnualRevenue DESC NULLS FIRST")
    assert [r["Name"] for r in rows] == ["beta", "Gamma", "Acme", "O'Hara"]
    rows = run(sandbox, "SELECT Name FROM Account ORDER BY Name LIMIT 2 OFFSET 1")
    assert [r["Name"] for r in rows] == ["beta", "Gamma"]


def test_parent_relationship_fields_are_nested(sandbox: SalesforceSandbox) -> None:
    (row,) = run(sandbox, "SELECT Id, Account.Name, Account.Shopify_Customer_Id__c FROM Contact")
    assert row["Account"]["Name"] == "Acme"
    assert row["Account"]["attributes"]["type"] == "Account"
    assert list(row) == ["attributes", "Id", "Account"]


def test_semantic_errors(sandbox: SalesforceSandbox) -> None:
    with pytest.raises(SoqlError) as exc:
        run(sandbox, "SELECT Id, Foo FROM Account")
    assert exc.value.error_code == "INVALID_FIELD" and "No such column 'Foo' on entity 'Account'" in exc.value.message
    with pytest.raises(SoqlError) as exc:
        run(sandbox, "SELECT Id FROM Xyzzy")
    assert exc.value.error_code == "INVALID_TYPE"
    with pytest.raises(SoqlError) as exc:
        run(sandbox, "SELECT Id FROM Account WHERE Name = 5")
    assert exc.value.error_code == "INVALID_FIELD" and "enclosed in quotes" in exc.value.message
    with pytest.raises(SoqlError) as exc:
        run(sandbox, "SELECT Id FROM Account WHERE Id = 'nope'")
    assert exc.value.error_code == "INVALID_QUERY_FILTER_OPERATOR"


def test_date_literals(sandbox: SalesforceSandbox) -> None:
    assert len(run(sandbox, "SELECT Id FROM Account WHERE CreatedDate > 2020-01-01T00:00:00Z")) == 4
    assert len(run(sandbox, "SELECT Id FROM Account WHERE CreatedDate = TODAY")) == 4
    assert len(run(sandbox, "SELECT Id FROM Account WHERE CreatedDate = LAST_N_DAYS:3")) == 4
    assert run(sandbox, "SELECT Id FROM Account WHERE CreatedDate < YESTERDAY") == []


def test_deleted_rows_only_in_query_all(tmp_path: Path) -> None:
    sb = SalesforceSandbox(tmp_path)
    obj = sb.state.schema.objects["Account"]
    rid = sb.state.org.create(obj, parse_body(sb.state.schema, obj, {"Name": "gone"})).id
    assert rid is not None and sb.state.org.delete(rid).success
    assert run(sb, "SELECT Id FROM Account") == []
    assert [r["Id"] for r in run(sb, "SELECT Id, IsDeleted FROM Account", include_deleted=True)] == [rid]
