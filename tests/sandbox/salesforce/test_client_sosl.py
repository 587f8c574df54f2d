"""SOSL and parameterized search through simple-salesforce: sf.search, sf.quick_search and
sf.restful('parameterizedSearch', ...), with the org's result shape and errors."""

from __future__ import annotations

from typing import Any

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest


def _seed(sf: Salesforce) -> dict[str, str]:
    ids = {
        "acme": sf.Account.create({"Name": "Acme Corporation", "Phone": "(415) 555-0100",
                                   "Description": "Makers of anvils and rockets"})["id"],
        "acmex": sf.Account.create({"Name": "Acmex Ltd", "BillingCity": "Springfield"})["id"],
        "globex": sf.Account.create({"Name": "Globex", "Website": "https://globex.example"})["id"],
        "joe": sf.Contact.create({"FirstName": "Joe", "LastName": "Smith", "Email": "joe.smith@acme.example",
                                  "Phone": "415-555-0199"})["id"],
        "joan": sf.Contact.create({"FirstName": "Joan", "LastName": "Smythe", "Title": "Acme liaison"})["id"],
        "lead": sf.Lead.create({"LastName": "Rocket", "Company": "Acme Rockets", "Email": "wile@coyote.example"})[
            "id"],
    }
    return ids


def _ids(result: dict[str, Any]) -> list[str]:
    return [r["Id"] for r in result["searchRecords"]]


def _search_error(sf: Salesforce, sosl: str) -> dict[str, Any]:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.search(sosl)
    (error,) = exc.value.content
    return error


def test_search_returns_search_records_with_attributes(sf: Salesforce) -> None:
    ids = _seed(sf)
    result = sf.search("FIND {Acme} IN ALL FIELDS RETURNING Account(Id, Name ORDER BY Name), Contact, Lead(Company)")
    assert list(result) == ["searchRecords"]
    assert result["searchRecords"] == [
        {"attributes": {"type": "Account", "url": f"/services/data/v62.0/sobjects/Account/{ids['acme']}"},
         "Id": ids["acme"], "Name": "Acme Corporation"},
        {"attributes": {"type": "Contact", "url": f"/services/data/v62.0/sobjects/Contact/{ids['joe']}"},
         "Id": ids["joe"]},
        {"attributes": {"type": "Contact", "url": f"/services/data/v62.0/sobjects/Contact/{ids['joan']}"},
         "Id": ids["joan"]},
        {"attributes": {"type": "Lead", "url": f"/services/data/v62.0/sobjects/Lead/{ids['lead']}"},
         "Company": "Acme Rockets"},
    ]


def test_scopes_choose_the_searched_fields(sf: Salesforce) -> None:
    ids = _seed(sf)
    # NAME FIELDS also searches Lead.Company, as the reference lists; Joan's title is not a name field.
    assert _ids(sf.search("FIND {Acme} IN NAME FIELDS RETURNING Account, Contact, Lead")) == [ids["acme"],
                                                                                               ids["lead"]]
    # Account.Website is a name field for search; the contact's email (also "....example") is not.
    assert _ids(sf.search("FIND {example} IN NAME FIELDS RETURNING Account, Contact")) == [ids["globex"]]
    assert _ids(sf.search("FIND {acme} IN EMAIL FIELDS RETURNING Account, Contact")) == [ids["joe"]]
    assert _ids(sf.search("FIND {4155550100} IN PHONE FIELDS RETURNING Account, Contact")) == [ids["acme"]]
    assert _ids(sf.search("FIND {555-0199} IN PHONE FIELDS RETURNING Contact")) == [ids["joe"]]
    assert _ids(sf.search("FIND {anvils} IN ALL FIELDS RETURNING Account")) == [ids["acme"]]
    assert _ids(sf.search("FIND {anvils} IN NAME FIELDS RETURNING Account")) == []
    # Without RETURNING every searchable object answers, with Ids only.
    everything = sf.search("FIND {Springfield}")["searchRecords"]
    assert everything == [{"attributes": {"type": "Account",
                                          "url": f"/services/data/v62.0/sobjects/Account/{ids['acmex']}"},
                           "Id": ids["acmex"]}]


def test_search_term_syntax(sf: Salesforce) -> None:
    ids = _seed(sf)

    def found(term: str) -> set[str]:
        hits = sf.search(f"FIND {{{term}}} RETURNING Account, Contact, Lead")["searchRecords"]
        return {name for name, rid in ids.items() for r in hits if r["Id"] == rid}

    assert found("acme*") == {"acme", "acmex", "joe", "joan", "lead"}
    assert found("Acme?") == {"acmex"}
    assert found("Sm?th*") == {"joe", "joan"}
    assert found('"joe smith"') == {"joe"}
    assert found("Joe Smith") == {"joe"}  # words side by side must all match
    assert found("Smith OR Smythe") == {"joe", "joan"}
    assert found("Acme AND NOT Smythe AND NOT Rocket") == {"acme", "joe"}  # "rockets" is another word
    assert found("(Globex OR Rocket) AND NOT Corporation") == {"globex", "lead"}
    assert found(r"acme\-rockets") == {"lead"}  # an escaped hyphen is text, split into words like the index
    assert found("globex.example") == {"globex"}


def test_returning_filters_limits_and_order(sf: Salesforce) -> None:
    ids = _seed(sf)
    rows = sf.search("FIND {acme*} RETURNING Account(Name WHERE Name LIKE 'Acme%' ORDER BY Name DESC LIMIT 1), "
                     "Contact(LastName WHERE FirstName = 'Joan')")["searchRecords"]
    assert [(r["attributes"]["type"], r.get("Name") or r.get("LastName")) for r in rows] == [
        ("Account", "Acmex Ltd"), ("Contact", "Smythe")]
    overall = sf.search("FIND {acme*} RETURNING Account(Id ORDER BY Name), Contact(Id) LIMIT 3")
    assert _ids(overall) == [ids["acme"], ids["acmex"], ids["joe"]]
    offset = sf.search("FIND {acme*} RETURNING Account(Name ORDER BY Name OFFSET 1)")
    assert [r["Name"] for r in offset["searchRecords"]] == ["Acmex Ltd"]
    assert sf.search("FIND {Nothing} RETURNING Account") == {"searchRecords": []}


def test_quick_search(sf: Salesforce) -> None:
    ids = _seed(sf)
    assert set(_ids(sf.quick_search("Smythe"))) == {ids["joan"]}


def test_search_errors(sf: Salesforce) -> None:
    assert _search_error(sf, "FIND 'Acme' IN ALL FIELDS") == {
        "errorCode": "MALFORMED_SEARCH", "message": "No search term found. The search term must be enclosed in braces."}
    assert _search_error(sf, "FIND {a}") == {"errorCode": "INVALID_SEARCH",
                                             "message": "search term must be longer than one character: a"}
    sosl = "FIND {Acme} RETURNING Acount"
    error = _search_error(sf, sosl)
    assert error["errorCode"] == "INVALID_TYPE"
    assert error["message"].startswith(f"\n{sosl}\n{' ' * 22}^\nERROR at Row:1:Column:23\nsObject type 'Acount' is "
                                       "not supported.")
    error = _search_error(sf, "FIND {Acme} RETURNING Account(Nope)")
    assert error["errorCode"] == "INVALID_FIELD"
    assert "No such column 'Nope' on entity 'Account'" in error["message"]
    sosl = "FIND {Acme} IN EVERY FIELDS"
    assert _search_error(sf, sosl) == {"errorCode": "MALFORMED_SEARCH", "message": (
        f"\n{sosl}\n{' ' * 15}^\nERROR at Row:1:Column:16\nunexpected token: 'EVERY'")}
    assert _search_error(sf, "FIND {Acme} RETURNING Account LIMIT x")["errorCode"] == "MALFORMED_SEARCH"
    assert _search_error(sf, "FIND {(Acme}")["errorCode"] == "MALFORMED_SEARCH"
    error = _search_error(sf, "FIND {Acme} RETURNING Opportunity(Id WHERE CloseDate > '2024-01-01')")
    assert error["errorCode"] == "INVALID_FIELD"
    assert error["message"].endswith("value of filter criterion for field 'CloseDate' must be of type date and "
                                     "should not be enclosed in quotes")


def test_parameterized_search_get(sf: Salesforce) -> None:
    ids = _seed(sf)
    result = sf.restful("parameterizedSearch", params={"q": "Acme", "sobject": ["Account", "Contact"],
                                                       "Account.fields": "id,name", "Account.limit": "1",
                                                       "Account.orderBy": "Name DESC", "Contact.fields": "LastName"})
    assert result == {"searchRecords": [
        {"attributes": {"type": "Account", "url": f"/services/data/v62.0/sobjects/Account/{ids['acme']}"},
         "Id": ids["acme"], "Name": "Acme Corporation"},
        {"attributes": {"type": "Contact", "url": f"/services/data/v62.0/sobjects/Contact/{ids['joe']}"},
         "LastName": "Smith"},
        {"attributes": {"type": "Contact", "url": f"/services/data/v62.0/sobjects/Contact/{ids['joan']}"},
         "LastName": "Smythe"},
    ]}
    scoped = sf.restful("parameterizedSearch", params={"q": "acme", "in": "EMAIL", "sobject": "Contact",
                                                       "fields": "Email"})
    assert [r["Email"] for r in scoped["searchRecords"]] == ["joe.smith@acme.example"]
    everywhere = sf.restful("parameterizedSearch", params={"q": "Globex"})
    assert _ids(everywhere) == [ids["globex"]]
    limited = sf.restful("parameterizedSearch", params={"q": "acme*", "sobject": ["Account", "Contact"],
                                                        "defaultLimit": "1", "overallLimit": "2"})
    assert [r["attributes"]["type"] for r in limited["searchRecords"]] == ["Account", "Contact"]


def test_parameterized_search_post(sf: Salesforce) -> None:
    ids = _seed(sf)
    body = {"q": "acme*", "fields": ["Id", "Name"], "in": "ALL",
            "sobjects": [{"name": "Account", "where": "BillingCity = 'Springfield'"},
                         {"name": "Lead", "fields": ["Company"], "orderBy": "Company DESC NULLS_LAST", "limit": "5"}]}
    result = sf.restful("parameterizedSearch", method="POST", json=body)
    assert result["searchRecords"] == [
        {"attributes": {"type": "Account", "url": f"/services/data/v62.0/sobjects/Account/{ids['acmex']}"},
         "Id": ids["acmex"], "Name": "Acmex Ltd"},
        {"attributes": {"type": "Lead", "url": f"/services/data/v62.0/sobjects/Lead/{ids['lead']}"},
         "Company": "Acme Rockets"},
    ]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("parameterizedSearch", method="POST", json={"q": "x"})
    assert exc.value.content == [{"errorCode": "INVALID_SEARCH",
                                  "message": "search term must be longer than one character: x"}]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("parameterizedSearch", method="POST",
                   json={"q": "acme", "sobjects": [{"name": "Account", "where": "Name = = 'x'"}]})
    assert exc.value.content[0]["errorCode"] == "MALFORMED_SEARCH"
