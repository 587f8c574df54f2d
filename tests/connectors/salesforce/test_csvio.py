from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ferry.connectors.salesforce.csvio import cell, columns_of, csv_chunks, parse_sf_error, read_results


def _rows(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))


def test_cells() -> None:
    assert cell(None) == "#N/A"
    assert cell(True) == "true" and cell(False) == "false"
    assert cell(3) == "3" and cell(0.1) == "0.1" and cell("x") == "x"


def test_csv_round_trips_quotes_newlines_commas_and_unicode() -> None:
    records: list[dict[str, Any]] = [
        {"Ext__c": "1", "Name": 'He said "hi", then left', "Description": "line1\nline2", "City": "Zürich 🚢"},
        {"Ext__c": "2", "Name": None, "Account.Ext__c": "A1"},
    ]
    columns = columns_of(records)
    assert columns == ["Ext__c", "Name", "Description", "City", "Account.Ext__c"]
    [(body, rows)] = list(csv_chunks(records, columns, 10_000))
    assert rows == range(0, 2)
    assert b"\r\n" not in body  # the job says lineEnding LF; CRLF would fail the whole job
    parsed = _rows(body)
    assert parsed[0] == columns
    assert parsed[1] == ["1", 'He said "hi", then left', "line1\nline2", "Zürich 🚢", ""]
    # None → #N/A (set null); a key the record lacks → empty cell (leave the field as it is)
    assert parsed[2] == ["2", "#N/A", "", "", "A1"]


def test_chunks_split_by_size_and_repeat_the_header() -> None:
    records = [{"Ext__c": str(i), "Name": "x" * 50} for i in range(100)]
    chunks = list(csv_chunks(records, ["Ext__c", "Name"], 1_000))
    assert len(chunks) > 1
    assert all(len(body) <= 1_000 for body, _ in chunks)
    assert [i for _, rows in chunks for i in rows] == list(range(100))
    assert all(body.startswith(b"Ext__c,Name\n") for body, _ in chunks)


def test_a_record_larger_than_the_limit_is_refused() -> None:
    with pytest.raises(ValueError):
        list(csv_chunks([{"A": "x" * 100}], ["A"], 50))


def test_read_results_handles_quoted_headers() -> None:
    text = '"sf__Id","sf__Created","Ext__c","LastName"\n"003A","true","1","O\'Brien, Jr"\n'
    assert read_results(text) == [{"sf__Id": "003A", "sf__Created": "true", "Ext__c": "1", "LastName": "O'Brien, Jr"}]
    assert read_results("") == []


@pytest.mark.parametrize(
    ("text", "code", "message", "fields", "transient"),
    [
        ("REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --",
         "REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]", ["LastName"], False),
        ("INVALID_CROSS_REFERENCE_KEY:invalid cross reference id:--", "INVALID_CROSS_REFERENCE_KEY",
         "invalid cross reference id", [], False),
        ("UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record or 200 records: 001x,001y:--",
         "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record or 200 records: 001x,001y", [], True),
        ("STRING_TOO_LONG:Last Name: data value too large: abc (max length=80):LastName,FirstName --",
         "STRING_TOO_LONG", "Last Name: data value too large: abc (max length=80)", ["LastName", "FirstName"], False),
        ("something odd", "UNKNOWN", "something odd", [], False),
    ],
)
def test_sf_error_parsing(text: str, code: str, message: str, fields: list[str], transient: bool) -> None:
    err = parse_sf_error(text)
    assert (err.code, err.message, err.fields, err.transient) == (code, message, fields, transient)


async def test_stream_csv_rows_survives_any_split_of_quoted_multiline_fields() -> None:
    from ferry.connectors.salesforce.csvio import stream_csv_rows

    rows = [["Id", "Description"], ["1", 'a "quoted"\nsecond, line'], ["2", ""], ["3", "\n\n"], ["4", 'x""y']]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    text = buf.getvalue()
    for size in (1, 2, 3, 7, len(text)):
        async def pieces(size: int = size) -> AsyncIterator[str]:
            for i in range(0, len(text), size):
                yield text[i : i + size]

        assert [r async for r in stream_csv_rows(pieces())] == rows, size
