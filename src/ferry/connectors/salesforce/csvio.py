"""Bulk API 2.0 CSV: writing ingest data and reading result files.

Ingest conventions (salesforce-api.md §4.6): a header row of field names (relationship columns
as ``Rel.ExtField``), LF line endings to match the job's ``lineEnding``, QUOTE_MINIMAL,
``#N/A`` to set a field to null (an empty cell means "leave as is"), booleans as true/false.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from ferry.connectors.salesforce.errors import record_error
from ferry.errors import RecordError

NULL = "#N/A"


def cell(value: Any) -> str:
    """One value as Bulk expects it in a CSV cell."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # round-trips exactly; Bulk accepts scientific notation for doubles
    return str(value)


def key_text(value: Any) -> str:
    """The external id as text: how it goes into the CSV, comes back in results, and keys a RecordResult."""
    return "" if value is None else cell(value)


def columns_of(records: Sequence[dict[str, Any]]) -> list[str]:
    """Every key used by any record, in first-seen order (a missing key becomes an empty cell: untouched)."""
    seen: dict[str, None] = {}
    for record in records:
        for key in record:
            seen.setdefault(key, None)
    return list(seen)


class _Sink:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def take(self) -> str:
        text = "".join(self.parts)
        self.parts.clear()
        return text


def csv_chunks(
    records: Sequence[dict[str, Any]], columns: Sequence[str], max_bytes: int
) -> Iterator[tuple[bytes, range]]:
    """UTF-8 CSV bodies of at most ``max_bytes`` each (header repeated), with the input rows each covers."""
    sink = _Sink()
    writer = csv.writer(sink, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    writer.writerow(columns)
    header = sink.take().encode("utf-8")
    body: list[bytes] = [header]
    size, start = len(header), 0
    for index, record in enumerate(records):
        writer.writerow(["" if col not in record else cell(record[col]) for col in columns])
        row = sink.take().encode("utf-8")
        if len(header) + len(row) > max_bytes:
            raise ValueError(f"record {index} alone is larger than the {max_bytes}-byte upload limit")
        if size + len(row) > max_bytes:
            yield b"".join(body), range(start, index)
            body, size, start = [header], len(header), index
        body.append(row)
        size += len(row)
    if len(body) > 1:
        yield b"".join(body), range(start, len(records))


def read_results(text: str) -> list[dict[str, str]]:
    """Rows of a result CSV (successfulResults, failedResults, unprocessedrecords) as dicts."""
    if not text.strip():
        return []
    return list(csv.DictReader(io.StringIO(text, newline="")))


# `CODE:message:field1,field2 --`; the message itself may contain colons, so split from both ends.
_ERROR_TAIL = re.compile(r":(?P<fields>[^:]*?)\s*--\s*$")


def parse_sf_error(text: str) -> RecordError:
    """Parse ``sf__Error`` (``REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --``)."""
    raw = (text or "").strip()
    code, sep, rest = raw.partition(":")
    if not sep or not code or not re.fullmatch(r"[A-Z0-9_]+", code):
        return record_error("UNKNOWN", raw or "Bulk API reported a failure without a message")
    tail = _ERROR_TAIL.search(rest)
    if tail is None:
        return record_error(code, rest.strip())
    message = rest[: tail.start()].strip()
    fields = [f.strip() for f in tail.group("fields").split(",") if f.strip()]
    return record_error(code, message, fields)


class RowEncoder:
    """Encode records as CSV rows for a fixed header, one at a time (streamed uploads)."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        self._known = set(self.columns)
        self._sink = _Sink()
        self._writer = csv.writer(self._sink, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        self._writer.writerow(self.columns)
        self.header = self._sink.take().encode("utf-8")

    def unknown_keys(self, record: dict[str, Any]) -> list[str]:
        return [k for k in record if k not in self._known]

    def row(self, record: dict[str, Any]) -> bytes:
        self._writer.writerow(["" if col not in record else cell(record[col]) for col in self.columns])
        return self._sink.take().encode("utf-8")


async def stream_csv_rows(chunks: AsyncIterator[str]) -> AsyncIterator[list[str]]:
    """CSV rows (header first) from text arriving in pieces, holding at most one piece plus one record.

    Each piece is cut after its last line break that ends a whole record and that block is parsed
    by the C csv reader in one go. A quoted field may span lines (a Description with a newline):
    a block ends at a record boundary only if its quotes balance (an escaped quote is doubled, so
    an odd count means "still inside a field"), otherwise the text waits for the next piece.
    """
    pending = ""
    async for piece in chunks:
        pending += piece
        cut = _record_boundary(pending)
        if cut:
            for row in csv.reader(io.StringIO(pending[:cut], newline="")):
                yield row
            pending = pending[cut:]
    if pending.strip():
        for row in csv.reader(io.StringIO(pending, newline="")):
            yield row


def _record_boundary(text: str) -> int:
    """Length of the longest prefix of ``text`` that ends with a line break outside quotes (0: none)."""
    end = text.rfind("\n")
    if end < 0:
        return 0
    quotes = text.count('"', 0, end)
    while quotes % 2:
        previous = text.rfind("\n", 0, end)
        if previous < 0:
            return 0
        quotes -= text.count('"', previous, end)
        end = previous
    return end + 1
