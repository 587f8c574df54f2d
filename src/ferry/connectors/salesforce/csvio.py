"""Bulk API 2.0 CSV: writing ingest data and reading result files.

Ingest conventions (salesforce-api.md §4.6): a header row of field names (relationship columns
as ``Rel.ExtField``), LF line endings to match the job's ``lineEnding``, QUOTE_MINIMAL,
``#N/A`` to set a field to null (an empty cell means "leave as is"), booleans as true/false.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from itertools import chain
from operator import itemgetter
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
    return list(dict.fromkeys(chain.from_iterable(records)))  # one C loop over every record's keys


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
    """UTF-8 CSV bodies of at most ``max_bytes`` each (header repeated), with the input rows each covers.

    Rows are written and encoded a block at a time (one ``writerows`` and one ``encode`` per block,
    not per row); a block that would cross ``max_bytes`` is redone row by row, so the bodies and
    their split points are exactly those of writing one row at a time.
    """
    sink = _Sink()
    writer = csv.writer(sink, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    writer.writerow(columns)
    header = sink.take().encode("utf-8")
    cells = row_cells(columns)
    body: list[bytes] = [header]
    size, start = len(header), 0
    width = len(columns)
    for first in range(0, len(records), _BLOCK):
        rows = [cells(record) for record in records[first : first + _BLOCK]]
        block = _block_text(rows, width, writer, sink).encode("utf-8")
        if size + len(block) <= max_bytes:  # then every row of it also fits alone after the header
            body.append(block)
            size += len(block)
            continue
        for index, cells_of_row in enumerate(rows, first):
            writer.writerow(cells_of_row)
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


_BLOCK = 1000  # rows written and encoded at a time


def _block_text(rows: list[Sequence[Any]], width: int, writer: Any, sink: _Sink) -> str:
    """The CSV text of ``rows``, exactly as ``writer.writerows(rows)`` writes it.

    csv.writer (QUOTE_MINIMAL, LF) quotes a cell only for a delimiter, a quote or a line break in
    it, and tests every character of every cell for that (most of its time). A row joined with
    commas answers for all its cells at once: no quote, no CR or LF and exactly ``width - 1``
    commas mean no cell held one, and the join is the row. Only the other rows go to csv.writer.
    Cells are str, int or float (``row_cells``), which csv.writer also writes by ``str()``; a lone
    cell is left to csv.writer (it writes an empty one as ``""``).
    """
    if width < 2:
        writer.writerows(rows)
        return sink.take()
    lines = [",".join(map(str, row)) for row in rows]
    text = "\n".join(lines) + "\n"
    commas = width - 1
    if '"' not in text and "\r" not in text and text.count("\n") == len(rows) and text.count(",") == commas * len(rows):
        return text  # the whole block at once: no row needs quoting
    parts = []
    for line, row in zip(lines, rows, strict=True):
        if '"' in line or "\r" in line or "\n" in line or line.count(",") != commas:
            writer.writerow(row)
            parts.append(sink.take())
        else:
            parts.append(line + "\n")
    return "".join(parts)
# Exact types csv.writer writes as cell() would (str as is, int by str(), float by repr()).
_PLAIN = frozenset({str, int, float})
_PLAIN_OR_NONE = _PLAIN | {type(None)}


def row_cells(columns: Sequence[str]) -> Callable[[dict[str, Any]], Sequence[Any]]:
    """A function giving one record's CSV cells for ``columns``, as ``cell()`` renders them.

    The common record (a plain dict holding every column) is read with one ``itemgetter`` call and
    handed to csv.writer as is when all its values are str, int or float, whose text csv.writer
    makes exactly as ``cell()`` does; otherwise only None (and, with a bool present, every
    non-str value) goes through the conversion. Anything else takes the general path.
    """
    names = list(columns)

    def general(record: dict[str, Any]) -> list[str]:
        return ["" if col not in record else cell(record[col]) for col in names]

    if not names:
        return general
    get = itemgetter(*names) if len(names) > 1 else lambda record: (record[names[0]],)

    def cells(record: dict[str, Any]) -> Sequence[Any]:
        if record.__class__ is not dict:
            return general(record)
        try:
            values = get(record)
        except KeyError:  # a column this record lacks: an empty cell (leave the field as it is)
            return general(record)
        kinds = set(map(type, values))
        if kinds <= _PLAIN:
            return values
        if kinds <= _PLAIN_OR_NONE:
            return [NULL if v is None else v for v in values]
        return [v if v.__class__ is str else cell(v) for v in values]

    return cells


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
        self._cells = row_cells(self.columns)

    def unknown_keys(self, record: dict[str, Any]) -> list[str]:
        return [k for k in record if k not in self._known]

    def row(self, record: dict[str, Any]) -> bytes:
        return _block_text([self._cells(record)], len(self.columns), self._writer, self._sink).encode("utf-8")


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
