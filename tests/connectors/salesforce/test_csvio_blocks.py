"""The block-at-a-time CSV writer gives exactly the bytes and split points of writing one row at a time."""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson
import pytest

from ferry.connectors.salesforce.csvio import RowEncoder, cell, columns_of, csv_chunks
from ferry.connectors.salesforce.describe import parse_describe
from ferry.connectors.salesforce.dialect import SALESFORCE
from ferry.connectors.shopify import normalize as shopify
from ferry.engine.pipeline import load_pipeline
from ferry.engine.plan import build_plans
from ferry.mapping.spec import query_constants
from ferry.sandbox.salesforce.describe import describe_object
from ferry.sandbox.salesforce.schema import load_schema
from ferry.sandbox.shopify.generator import generate_store

EXAMPLE_PIPELINE = Path(__file__).resolve().parents[3] / "examples" / "shopify-to-salesforce.yml"


class _Text:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def take(self) -> str:
        text = "".join(self.parts)
        self.parts.clear()
        return text


def reference_chunks(
    records: Sequence[dict[str, Any]], columns: Sequence[str], max_bytes: int
) -> Iterator[tuple[bytes, range]]:
    """The previous writer, kept as the specification: one ``cell()`` per value, one row at a time."""
    sink = _Text()
    writer = csv.writer(sink, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    writer.writerow(columns)
    header = sink.take().encode("utf-8")
    body, size, start = [header], len(header), 0
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


def outcome(chunks: Iterator[tuple[bytes, range]]) -> tuple[list[tuple[bytes, range]], str | None]:
    got: list[tuple[bytes, range]] = []
    try:
        for chunk in chunks:
            got.append(chunk)
    except ValueError as err:
        return got, str(err)
    return got, None


def demo_records(orders: int = 600) -> dict[str, list[dict[str, Any]]]:
    """The example pipeline's valid mapped records for a generated store, per target object."""
    store = generate_store(seed=7, customers=orders // 2, products=orders // 10, orders=orders)
    env = dict.fromkeys(
        ("SHOPIFY_ACCESS_TOKEN", "SALESFORCE_CLIENT_ID", "SALESFORCE_USERNAME", "SALESFORCE_PRIVATE_KEY_FILE"), "x"
    )
    env |= {"SHOPIFY_URL": "https://shop.invalid", "SALESFORCE_LOGIN_URL": "https://org.invalid"}
    spec = load_pipeline(EXAMPLE_PIPELINE, env)
    org = load_schema()
    schemas = {}
    for m in spec.objects:
        described = org.get(m.name)
        assert described is not None
        schemas[m.name] = parse_describe(describe_object(org, described, "62.0"))
    constants = {q: "01sxx0000000001AAA" for m in spec.objects for q in query_constants(m)}
    plans = build_plans(spec.objects, schemas, constants, SALESFORCE)
    out: dict[str, list[dict[str, Any]]] = {p.name: [] for p in plans}
    for stream in ("customers", "products", "orders"):
        for raw in store.records(stream):
            # Through JSON, as the records reach the sink from the store.
            for entity, record in shopify.normalize(stream, orjson.loads(orjson.dumps(raw))):
                for plan in plans:
                    if plan.entity == entity:
                        mapped, errors = plan.map_and_validate(record)
                        if not errors:
                            out[plan.name].append(orjson.loads(orjson.dumps(mapped)))
    return out


@pytest.fixture(scope="module")
def demo() -> dict[str, list[dict[str, Any]]]:
    return demo_records()


def test_demo_store_csv_is_byte_identical(demo: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {type(v) for records in demo.values() for r in records for v in r.values()}
    assert {str, float, bool, type(None)} <= kinds  # the store exercises every conversion
    for name, records in demo.items():
        columns = columns_of(records)
        for max_bytes in (100_000_000, 50_000, 3_000, 600):
            got = outcome(csv_chunks(records, columns, max_bytes))
            assert got == outcome(reference_chunks(records, columns, max_bytes)), (name, max_bytes)
        encoder = RowEncoder(columns)
        assert encoder.header + b"".join(encoder.row(r) for r in records) == b"".join(
            body for body, _ in reference_chunks(records, columns, 100_000_000)
        )


class Colour(StrEnum):
    RED = "red"


class Odd(dict):  # type: ignore[type-arg]
    pass


AWKWARD: list[Any] = [
    None, "", " ", "plain", 'He said "hi", then left', "a,b", "line1\nline2", "cr\rlf\r\n", "Zürich 🚢", "#N/A",
    "é中😀", True, False, 0, 1, -7, 10**20, 0.1, 1.0, -0.0, 1e16, float("nan"), float("inf"), 2.5e-300,
    ["vip", "b2b"], {"a": 1}, Colour.RED,
]


def test_awkward_values_missing_columns_and_every_split_match_the_reference() -> None:
    rnd = random.Random(11)
    columns = ["Ext__c", "Name", "Description", "Account.Ext__c", "Amount__c"]
    records: list[dict[str, Any]] = []
    for i in range(2_500):  # more than one block
        record = {c: rnd.choice(AWKWARD) for c in columns if rnd.random() > 0.1}
        if i % 97 == 0:
            record = Odd(record)
        records.append(record)
    for max_bytes in (10**9, 20_000, 700, 260, 120, 40):
        got = outcome(csv_chunks(records, columns, max_bytes))
        assert got == outcome(reference_chunks(records, columns, max_bytes)), max_bytes
    for cols in ([], ["Name"], ["Name", "Extra__c"]):
        assert outcome(csv_chunks(records, cols, 5_000)) == outcome(reference_chunks(records, cols, 5_000)), cols


def test_row_encoder_matches_the_reference_row_by_row() -> None:
    rnd = random.Random(3)
    columns = ["A", "B", "C"]
    encoder = RowEncoder(columns)
    for _ in range(500):
        record = {c: rnd.choice(AWKWARD) for c in columns if rnd.random() > 0.2}
        [(body, _)] = reference_chunks([record], columns, 10**9)
        assert encoder.header + encoder.row(record) == body


@pytest.mark.parametrize("slack", [-1, 0, 1])
def test_a_block_that_exactly_fills_or_just_misses_the_limit_splits_as_the_reference(slack: int) -> None:
    records = [{"A": f"{i:05d}"} for i in range(3_000)]  # every row "NNNNN\n": 6 bytes
    for rows_per_body in (999, 1_000, 1_001, 2_000):
        max_bytes = len(b"A\n") + 6 * rows_per_body + slack
        got = outcome(csv_chunks(records, ["A"], max_bytes))
        assert got == outcome(reference_chunks(records, ["A"], max_bytes)), (rows_per_body, slack)


PLAIN: list[Any] = ["plain", "", " ", "Zürich 🚢", "#N/A", "é中😀", None, True, False, 0, -7, 10**20, 0.1, -0.0, 1e16,
                    float("nan"), 2.5e-300]
NEEDS_QUOTES: list[Any] = ['He said "hi"', "a,b", ",", "line1\nline2", "cr\rlf", "\r\n", '"']


@pytest.mark.parametrize("width", [1, 2, 5])
def test_mostly_plain_blocks_with_a_rare_quoted_cell_match_the_reference(width: int) -> None:
    """Blocks without a cell to quote are written by joins; one such cell sends its block to csv.writer."""
    rnd = random.Random(width)
    columns = [f"C{i}" for i in range(width)]
    records: list[dict[str, Any]] = []
    for _ in range(6_000):
        record = {c: rnd.choice(PLAIN) for c in columns if rnd.random() > 0.02}
        if rnd.random() < 0.0004:  # about every third block holds one cell that must be quoted
            record[rnd.choice(columns)] = rnd.choice(NEEDS_QUOTES)
        records.append(record)
    for max_bytes in (10**9, 30_000, 500):
        got = outcome(csv_chunks(records, columns, max_bytes))
        assert got == outcome(reference_chunks(records, columns, max_bytes)), max_bytes
    encoder = RowEncoder(columns)
    for record in records[:1_500] + [{c: v for c in columns} for v in NEEDS_QUOTES + PLAIN]:
        [(body, _)] = reference_chunks([record], columns, 10**9)
        assert encoder.header + encoder.row(record) == body, record
