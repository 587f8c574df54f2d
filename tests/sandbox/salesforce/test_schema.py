"""User schema files: merged over the built-in schema, validated with clear errors, and served like an org."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest
from typer.testing import CliRunner

from ferry.cli.main import app
from ferry.sandbox.salesforce.ids import normalize_id
from ferry.sandbox.salesforce.schema import SchemaError, load_schema

from .conftest import Org, start_org

USER_SCHEMA = """
objects:
  Account:
    fields:
      - {name: Loyalty_Tier__c, type: picklist, restricted: true, picklist: [Gold, Silver]}
      - {name: Rating, type: picklist, picklist: [Hot, Warm, Cold]}
  Invoice__c:
    labelPlural: Invoices
    fields:
      - {name: Account__c, type: reference, referenceTo: [Account]}
      - {name: Invoice_Number__c, type: string, length: 40, externalId: true, unique: true}
      - {name: Amount__c, type: currency, precision: 16, scale: 2, nillable: false}
      - name: Stage__c
        type: picklist
        defaultValue: Draft
        picklist: [Draft, {value: Sent, label: Sent to customer}, {value: Old, active: false}]
  Invoice_Line__c:
    keyPrefix: a0Z
    fields:
      - {name: Invoice__c, type: reference, referenceTo: [Invoice__c], relationshipName: Invoice__r,
         childRelationshipName: Lines__r, cascadeDelete: true}
      - {name: Sku__c, type: string, length: 20}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "my.yaml"
    path.write_text(text)
    return path


def test_user_schema_merges_objects_and_fields(tmp_path: Path) -> None:
    schema = load_schema(_write(tmp_path, USER_SCHEMA))
    account = schema.objects["Account"]
    assert account.field("Loyalty_Tier__c") is not None and account.field("Name") is not None
    invoice = schema.objects["Invoice__c"]
    assert invoice.key_prefix == "a01" and invoice.custom and invoice.owned
    assert invoice.field("Name") is not None and invoice.field("OwnerId") is not None
    lookup = invoice.field("Account__c")
    assert lookup is not None and lookup.relationship_name == "Account__r"
    assert schema.objects["Invoice_Line__c"].key_prefix == "a0Z"
    children = {(c.child, c.relationship_name) for c in schema.children["Account"]}
    assert ("Invoice__c", "Invoices__r") in children
    assert ("Invoice_Line__c", "Lines__r") in {(c.child, c.relationship_name) for c in schema.children["Invoice__c"]}


@pytest.mark.parametrize(("text", "message"), [
    ("objects: {Invoice__c: {fields: [{name: Amount__c, type: money}]}}",
     "my.yaml: objects.Invoice__c.fields[0] (Amount__c): unknown type 'money'; choose one of boolean"),
    ("objects: {Account: {fields: [{name: Code__c, type: string}]}}",
     "my.yaml: objects.Account.fields[0] (Code__c): type string needs 'length' between 1 and 255, got None"),
    ("objects: {Account: {fields: [{name: Code__c, type: string, length: 300}]}}",
     "type string needs 'length' between 1 and 255, got 300"),
    ("objects: {Account: {fields: [{name: X__c, type: string, length: 5, lenght: 3}]}}",
     "objects.Account.fields[0] (X__c): unknown key(s) lenght; allowed:"),
    ("objects: {Account: {fields: [{name: X__c, type: reference, referenceTo: [Nope__c]}]}}",
     "objects.Account.fields[0] (X__c): referenceTo 'Nope__c' is not an object of the schema"),
    ("objects: {Account: {fields: [{name: X__c, type: reference, referenceTo: [Account], relationshipName: X}]}}",
     "the relationshipName of custom lookup X__c must end in __r, got 'X'"),
    ("objects: {Account: {fields: [{name: X__c, type: boolean, externalId: true}]}}",
     "only double, email, int, string fields can be external ids, not boolean"),
    ("objects: {Account: {fields: [{name: X__c, type: picklist, defaultValue: C, picklist: [A, B]}]}}",
     "defaultValue 'C' is not one of the picklist values"),
    ("objects: {Account: {fields: [{name: X__c, type: int, picklist: [A]}]}}",
     "picklist values only apply to picklist types, not int"),
    ("objects: {Account: {fields: [{name: Id, type: string, length: 18}]}}",
     "Id is a system field; the sandbox adds it to every object"),
    ("objects: {Account: {keyPrefix: '002'}}", "Account already has keyPrefix 001; it cannot change"),
    ("objects: {Thing: {fields: []}}", "objects.Thing: keyPrefix must be 3 letters or digits, got ''"),
    ("objects: {Thing__c: {keyPrefix: '003'}}", "keyPrefix 003 is already used by Contact"),
    ("objects: {Thing__c: {colour: red}}", "objects.Thing__c: unknown key(s) colour"),
    ("objects: {Account: {fields: [{name: A__c, type: date}, {name: a__c, type: date}]}}",
     "objects.Account.fields[1] (a__c): field a__c is declared twice"),
    ("objects: {Account: {fields: [{name: Other__c, type: reference, referenceTo: [Account], "
     "childRelationshipName: Contacts}]}}",
     "child relationship 'Contacts' on Account is already used by Contact.AccountId; set childRelationshipName"),
    ("objcts: {}", "my.yaml: a schema file is a mapping with one key, 'objects'"),
    ("objects: [", "my.yaml: not valid YAML"),
])
def test_schema_errors_name_file_object_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SchemaError) as exc:
        load_schema(_write(tmp_path, text))
    assert message in str(exc.value)
    assert str(exc.value).startswith(str(tmp_path / "my.yaml"))


def test_missing_schema_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="cannot read the schema file"):
        load_schema(tmp_path / "absent.yaml")


def test_cli_rejects_a_bad_schema_file(tmp_path: Path) -> None:
    bad = _write(tmp_path, "objects: {Account: {fields: [{name: X__c, type: money}]}}")
    result = CliRunner().invoke(app, ["sandbox", "serve", "salesforce", "--schema", str(bad),
                                      "--state-dir", str(tmp_path / "state")])
    assert result.exit_code != 0
    assert "unknown type 'money'" in result.output


@pytest.fixture(scope="module")
def custom_org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Org]:
    tmp = tmp_path_factory.mktemp("sf-custom")
    path = tmp / "my.yaml"
    path.write_text(USER_SCHEMA)
    yield from start_org(tmp, extra_schema=path)


def test_custom_objects_through_simple_salesforce(custom_org: Org) -> None:
    custom_org.admin("reset", "POST")
    sf: Salesforce = custom_org.client()
    account = sf.Account.create({"Name": "Acme", "Loyalty_Tier__c": "Gold", "Rating": "Hot"})["id"]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Account.create({"Name": "x", "Loyalty_Tier__c": "Bronze"})
    assert exc.value.content[0]["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert exc.value.content[0]["fields"] == ["Loyalty_Tier__c"]
    created = sf.Invoice__c.upsert("Invoice_Number__c/INV-1", {"Name": "First", "Amount__c": 12.5,
                                                               "Account__r": {"Id": account}}, raw_response=True)
    assert created.status_code == 201
    invoice = created.json()["id"]
    assert invoice.startswith("a01") and normalize_id(invoice) == invoice
    assert sf.Invoice__c.get(invoice)["Stage__c"] == "Draft"
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Invoice__c.create({"Name": "no amount"})
    assert exc.value.content[0]["fields"] == ["Amount__c"]
    line = sf.Invoice_Line__c.create({"Sku__c": "W-1", "Invoice__r": {"Invoice_Number__c": "INV-1"}})["id"]
    assert line.startswith("a0Z")
    row = sf.query("SELECT Sku__c, Invoice__r.Name, Invoice__r.Account__r.Name FROM Invoice_Line__c")["records"][0]
    assert row["Invoice__r"]["Name"] == "First" and row["Invoice__r"]["Account__r"]["Name"] == "Acme"
    nested = sf.query("SELECT Name, (SELECT Sku__c FROM Lines__r) FROM Invoice__c")["records"][0]
    assert nested["Lines__r"]["totalSize"] == 1 and nested["Lines__r"]["records"][0]["Sku__c"] == "W-1"
    parent = sf.query("SELECT Name, (SELECT Name, Amount__c FROM Invoices__r) FROM Account")["records"][0]
    assert parent["Invoices__r"]["records"][0]["Amount__c"] == 12.5
    describe = sf.Invoice__c.describe()
    assert (describe["custom"], describe["keyPrefix"], describe["labelPlural"]) == (True, "a01", "Invoices")
    fields = {f["name"]: f for f in describe["fields"]}
    assert fields["Account__c"]["relationshipName"] == "Account__r" and fields["Account__c"]["custom"]
    assert fields["Invoice_Number__c"]["externalId"] and fields["Invoice_Number__c"]["idLookup"]
    assert [(p["value"], p["label"], p["active"], p["defaultValue"]) for p in fields["Stage__c"]["picklistValues"]] \
        == [("Draft", "Draft", True, True), ("Sent", "Sent to customer", True, False), ("Old", "Old", False, False)]
    assert {"Lines__r"} == {c["relationshipName"] for c in describe["childRelationships"] if c["relationshipName"]}
    assert "Invoice__c" in {o["name"] for o in sf.describe()["sobjects"]}
    sf.Invoice__c.delete(invoice)  # cascades to its lines, as a master-detail does
    assert sf.query("SELECT COUNT() FROM Invoice_Line__c")["totalSize"] == 0


def test_lookup_to_an_object_without_fields_of_its_own(tmp_path: Path) -> None:
    schema = load_schema(_write(tmp_path, "objects:\n  Tag__c: {}\n  Account:\n    fields:\n"
                                          "      - {name: Tag__c, type: reference, referenceTo: [Tag__c]}\n"))
    tag = schema.objects["Tag__c"]
    assert tag.field("Name") is not None and tag.key_prefix == "a01"
    assert [c.relationship_name for c in schema.children["Tag__c"]] == ["Accounts__r"]
