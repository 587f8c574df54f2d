"""Micro-benchmark of ferry's per-record path against the floor of the same data, on one core.

Run: .venv/bin/python bench/hot_path.py [--orders 20000] [--repeat 3] [--stages] [--profile out.html]

The data is a generated store (seed 7: N orders, N/2 customers, N/10 products) as the raw JSON
bytes ferry stages. Three timings (CPU seconds of this process, best of --repeat, the three taking turns):

- floor: ``orjson.loads`` of every source payload plus writing the target CSV (csv.writer, the
  rows ferry produces, pre-built as text cells) and encoding it to UTF-8;
- ferry, Collections: loads -> normalize -> map -> validate -> the sObject Collections JSON body
  (``to_rest_record`` + ``orjson.dumps``, 200 records a call);
- ferry, Bulk CSV: loads -> normalize -> map -> validate -> the Bulk API 2.0 CSV (``csv_chunks``).

"records" are the target records produced (Account, Contact, Product2, PricebookEntry, Order,
OrderItem, valid or dead-lettered), the unit the issue's 50,000 records/s target counts.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ferry.connectors.salesforce.collections import to_rest_record
from ferry.connectors.salesforce.csvio import cell, columns_of, csv_chunks
from ferry.connectors.salesforce.describe import parse_describe
from ferry.connectors.salesforce.dialect import SALESFORCE
from ferry.connectors.shopify import normalize as shopify_normalize
from ferry.core.schema import ObjectSchema
from ferry.engine.pipeline import load_pipeline
from ferry.engine.plan import ObjectPlan, build_plans
from ferry.mapping.spec import query_constants
from ferry.observe import tracing
from ferry.sandbox.salesforce.describe import describe_object
from ferry.sandbox.salesforce.schema import load_schema
from ferry.sandbox.shopify.generator import generate_store

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "examples" / "shopify-to-salesforce.yml"
CHUNK = 2000  # staged records planned at a time, as the runner does
COLLECTIONS_BATCH = 200
BULK_MAX_BYTES = 100_000_000
STANDARD_PRICEBOOK = "01sxx0000000001AAA"


@dataclass
class Workload:
    payloads: list[tuple[str, bytes]]  # (stream, raw JSON) in the runner's stream order
    plans: list[ObjectPlan]
    schemas: dict[str, ObjectSchema]

    @property
    def by_entity(self) -> dict[str, list[ObjectPlan]]:
        out: dict[str, list[ObjectPlan]] = {}
        for p in self.plans:
            out.setdefault(p.entity, []).append(p)
        return out


def workload(orders: int) -> Workload:
    store = generate_store(seed=7, customers=orders // 2, products=orders // 10, orders=orders)
    payloads = [(stream, orjson.dumps(raw)) for stream in ("customers", "products", "orders")
                for raw in store.records(stream)]
    env = {k: "x" for k in ("SHOPIFY_ACCESS_TOKEN", "SALESFORCE_CLIENT_ID", "SALESFORCE_USERNAME",
                            "SALESFORCE_PRIVATE_KEY_FILE")}
    env |= {"SHOPIFY_URL": "https://shop.invalid", "SALESFORCE_LOGIN_URL": "https://org.invalid"}
    spec = load_pipeline(PIPELINE, env)
    org = load_schema()
    schemas = {}
    for m in spec.objects:
        obj = org.get(m.name)
        assert obj is not None, m.name
        schemas[m.name] = parse_describe(describe_object(org, obj, "62.0"))
    constants = {q: STANDARD_PRICEBOOK for m in spec.objects for q in query_constants(m)}
    return Workload(payloads, build_plans(spec.objects, schemas, constants, SALESFORCE), schemas)


Serializer = Callable[[str, ObjectSchema, list[dict[str, Any]]], int]


def collections_bodies(name: str, schema: ObjectSchema, records: list[dict[str, Any]]) -> int:
    size = 0
    for i in range(0, len(records), COLLECTIONS_BATCH):
        batch = [to_rest_record(r, name, schema) for r in records[i:i + COLLECTIONS_BATCH]]
        size += len(orjson.dumps({"allOrNone": False, "records": batch}))
    return size


def bulk_csv(name: str, schema: ObjectSchema, records: list[dict[str, Any]]) -> int:
    return sum(len(body) for body, _ in csv_chunks(records, columns_of(records), BULK_MAX_BYTES))


def ferry_path(w: Workload, serialize: Serializer) -> tuple[int, int]:
    """Every payload through normalize -> map -> validate -> serialize; (records produced, bytes written).

    Instrumented as the runner and loader are (ferry/observe): a span per chunk of 2,000 staged records with its
    keys, a span per object's batch with its keys; no-ops unless a tracer provider is installed (--tracing)."""
    by_entity = w.by_entity
    produced = written = 0
    for start in range(0, len(w.payloads), CHUNK):
        valid: dict[str, list[dict[str, Any]]] = {p.name: [] for p in w.plans}
        keys: dict[str, list[str]] = {p.name: [] for p in w.plans}
        chunk = w.payloads[start:start + CHUNK]
        with tracing.span("ferry.plan.chunk", {"ferry.records": len(chunk)}) as span:
            for stream, payload in chunk:
                raw = orjson.loads(payload)
                for entity, record in shopify_normalize.normalize(stream, raw):
                    for plan in by_entity.get(entity, ()):
                        mapped, errors = plan.map_and_validate(record)
                        produced += 1
                        if not errors:
                            valid[plan.name].append(mapped)
                            keys[plan.name].append(record.key)
            if span.is_recording():  # as the runner's _describe_chunk: the keys of what went where
                tracing.set_keys(span, (f"{s}/{i}" for i, (s, _) in enumerate(chunk, start)), "ferry.source_keys")
                for name, listed in keys.items():
                    tracing.set_keys(span, listed, f"ferry.outbox.{name}")
        for name, records in valid.items():
            if records:
                with tracing.span("ferry.write.batch", {"ferry.object": name, "ferry.records": len(records)}) as span:
                    tracing.set_keys(span, keys[name])
                    written += serialize(name, w.schemas[name], records)
    return produced, written


def traced(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` with the OpenTelemetry SDK on, spans kept by an in-memory exporter (emptied after each call)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def run() -> Any:
        tracing.use_provider(provider)
        try:
            return fn()
        finally:
            tracing.use_provider(None)
            exporter.clear()

    return run


def target_rows(w: Workload) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Ferry's valid output as CSV cells per object (built once, outside the timed floor)."""
    by_entity = w.by_entity
    out: dict[str, list[dict[str, Any]]] = {p.name: [] for p in w.plans}
    for stream, payload in w.payloads:
        for entity, record in shopify_normalize.normalize(stream, orjson.loads(payload)):
            for plan in by_entity.get(entity, ()):
                mapped, errors = plan.map_and_validate(record)
                if not errors:
                    out[plan.name].append(mapped)
    rows = {}
    for name, records in out.items():
        cols = columns_of(records)
        rows[name] = (cols, [["" if c not in r else cell(r[c]) for c in cols] for r in records])
    return rows


def floor_path(w: Workload, rows: dict[str, tuple[list[str], list[list[str]]]]) -> int:
    """orjson.loads of every source payload, plus writing and encoding the target CSV."""
    for _, payload in w.payloads:
        orjson.loads(payload)
    written = 0
    for cols, body in rows.values():
        buf = io.StringIO()
        writer = csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerow(cols)
        writer.writerows(body)
        written += len(buf.getvalue().encode("utf-8"))
    return written


def best_cpu(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, tuple[float, Any]]:
    """Best CPU time of each function, the functions taking turns (on a shared machine the load drifts:
    interleaving makes every path see the same load, so the ratios to the floor hold)."""
    best: dict[str, tuple[float, Any]] = {name: (float("inf"), None) for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.process_time()
            result = fn()
            best[name] = min(best[name], (time.process_time() - t0, result), key=lambda t: t[0])
    return best


def stage_times(w: Workload, repeat: int) -> dict[str, float]:
    """CPU seconds of each stage alone (best of ``repeat``), each stage's input built beforehand."""
    import gc

    by_entity = w.by_entity
    gc.disable()  # every stage's input is held at once here; collections over it would be this harness's cost
    try:
        times: dict[str, float] = {}

        def timed(name: str, fn: Callable[[], Any]) -> Any:
            best = best_cpu({name: fn}, repeat)[name]
            times[name] = best[0]
            return best[1]

        raws = [(s, orjson.loads(p)) for s, p in w.payloads]  # (loads is the floor's: see its line)
        records = timed("normalize", lambda: [er for s, raw in raws for er in shopify_normalize.normalize(s, raw)])
        pairs = [(plan, r) for e, r in records for plan in by_entity.get(e, ())]
        results = timed("map + validate", lambda: [(plan, plan.map_and_validate(r)) for plan, r in pairs])
        valid: dict[str, list[dict[str, Any]]] = {p.name: [] for p in w.plans}
        for plan, (mapped, errors) in results:
            if not errors:
                valid[plan.name].append(mapped)
        for label, serialize in (("Bulk CSV", bulk_csv), ("Collections JSON", collections_bodies)):
            timed(label, lambda s=serialize: sum(s(n, w.schemas[n], rs) for n, rs in valid.items()))  # type: ignore[misc]
        return times
    finally:
        gc.enable()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", type=Path, help="write a pyinstrument HTML profile of the Bulk path here")
    ap.add_argument("--stages", action="store_true", help="also time each stage alone (CPU s, best of --repeat)")
    ap.add_argument("--tracing", action="store_true",
                    help="also time both ferry paths with tracing on (OpenTelemetry SDK, in-memory exporter)")
    args = ap.parse_args()
    w = workload(args.orders)
    if args.profile:
        from pyinstrument import Profiler

        with Profiler(interval=0.0005) as prof:
            ferry_path(w, bulk_csv)
        args.profile.write_text(prof.output_html())
        print(prof.output_text(unicode=False, color=False, show_all=False)[:6000])
        return
    rows = target_rows(w)
    paths: dict[str, Callable[[], Any]] = {
        "floor": lambda: floor_path(w, rows), "collections": lambda: ferry_path(w, collections_bodies),
        "bulk": lambda: ferry_path(w, bulk_csv),
    }
    if args.tracing:
        paths["collections traced"] = traced(paths["collections"])
        paths["bulk traced"] = traced(paths["bulk"])
    best = best_cpu(paths, args.repeat)
    floor_s, (coll_s, (records, _)), (bulk_s, _) = best["floor"][0], best["collections"], best["bulk"]
    sources = len(w.payloads)
    print(f"hot path, one core: {args.orders:,} orders -> {sources:,} source records -> {records:,} target records "
          f"(CPU seconds, best of {args.repeat})")
    print(f"{'path':26}{'CPU s':>8}{'records/s':>12}{'orders/s':>11}{'us/record':>11}{'x floor':>9}")
    rows_out = [("floor (loads + CSV)", floor_s), ("ferry -> Collections JSON", coll_s), ("ferry -> Bulk CSV", bulk_s)]
    if args.tracing:
        rows_out += [("  traced (in-memory)", best["collections traced"][0]),
                     ("  traced (in-memory)", best["bulk traced"][0])]
        rows_out = [rows_out[0], rows_out[1], rows_out[3], rows_out[2], rows_out[4]]
    for label, secs in rows_out:
        print(f"{label:26}{secs:8.2f}{records / secs:12,.0f}{args.orders / secs:11,.0f}"
              f"{secs / records * 1e6:11.2f}{secs / floor_s:9.2f}")
    if args.stages:
        print("stages alone (CPU s; inputs held in memory, gc off):")
        for name, secs in stage_times(w, args.repeat).items():
            print(f"  {name:24}{secs:8.3f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
