"""Shopify read alone, GraphQL vs REST: calls and wall time to read every stream of one store, same run.

Run: .venv/bin/python bench/shopify_read.py --orders 10000 --latency real [--apis graphql,graphql-one,rest]
     [--entities example]

One Shopify sandbox (a child process, as in bench/e2e.py) holds a generated store of N orders (N/2
customers, N/10 products); each API then reads customers, products and orders from scratch, through
``ShopifySource`` exactly as a run does (GraphQL: the count query picks a Bulk Operation per stream at this
size; REST: 250-record pages). ``--latency real``: Shopify's Standard plan on both APIs (REST bucket 40
calls leaking 2/s; GraphQL 2,000 points restoring 100/s) and the sandbox's bulk pace (2,000 objects/s);
``off``: both limiters too large to matter. Calls are the source's own count (every HTTP call it made,
the bulk result file included); records are the raw records read per stream. ``--entities``: what the source
is told the pipeline maps before it reads (``SelectsEntities``, as a run does): ``all`` (every entity, the
default), ``example`` (examples/shopify-to-salesforce.yml's objects: no refund) or a comma list.

``graphql`` splits a large stream into several concurrent bulk operations over id ranges where the API
version allows (2026-01+, connectors/shopify/gql_split.py); ``graphql-one`` is the same read with every stream
one operation (``bulk_split_min`` out of reach), for a same-run comparison. ``shop_cpu_s`` is the sandbox
process's CPU during that read (it runs every bulk operation on one core).

Bench knobs, not fidelity claims: ``--bulk-pace S`` sets the sandbox's modeled bulk pace (seconds per object;
0 runs operations as fast as the sandbox's CPU allows, for memory-only runs of big stores); ``--shard-orders``
and ``--spill`` are ``bench/memory.py``'s store options for stores too big to hold as plain dicts. ``--progress S``
prints a JSON line every S seconds of a read (this process's RSS and peak RSS, records so far, the sandbox's CPU)
and adds the RSS timeline to the read's row: a big read stopped half way still shows how far it got and what it held.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml
from harness.procs import start_shopify

from ferry.connectors.shopify import ShopifyConfig, ShopifySource
from ferry.mapping.spec import ObjectMapping, mapped_entities
from ferry.model.canonical import ENTITIES

SEED = 7
ONE = 10**12  # bulk_split_min no stream reaches: every bulk read is one operation
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "shopify-to-salesforce.yml"


def entities_of(choice: str) -> frozenset[str]:
    if choice == "all":
        return frozenset(ENTITIES)
    if choice == "example":
        objects = yaml.safe_load(EXAMPLE.read_text())["objects"]
        return mapped_entities([ObjectMapping.model_validate(o) for o in objects])
    return frozenset(e.strip() for e in choice.split(",") if e.strip())


class Progress:
    """This process's RSS sampled every ``every`` seconds while a read runs, each sample printed as a line (a run
    stopped half way is still evidence: how far it got and the memory it held), kept for the final row."""

    def __init__(self, every: float, counts: dict[str, int], shop: Any) -> None:
        self.every, self.counts, self.shop = every, counts, shop
        self.samples: list[tuple[float, float, int]] = []  # (seconds, RSS MiB, records read so far)
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)  # a thread: the read's loop may be busy

    def __enter__(self) -> Progress:
        if self.every > 0:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(self.every):
            sample = (round(time.monotonic() - self._started, 1), round(me.memory_info().rss / 2**20, 1),
                      sum(self.counts.values()))
            self.samples.append(sample)
            print(json.dumps({"progress_s": sample[0], "rss_mib": sample[1], "peak_rss_mib": _peak_rss_mib(),
                              "records": dict(self.counts), "shop_cpu_s": round(self.shop.cpu(), 1)}),
                  flush=True)


def _peak_rss_mib() -> float:
    """This process's peak RSS so far (ru_maxrss, KiB on Linux): run one API per process to read it alone."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


async def read_all(config: ShopifyConfig, entities: frozenset[str], shop: Any, every: float = 0.0
                   ) -> dict[str, Any]:
    started = time.monotonic()
    shop_cpu = shop.cpu()
    counts: dict[str, int] = {}
    with Progress(every, counts, shop) as progress:
        async with ShopifySource(config) as source:
            skipped = source.select_entities(entities)  # as the engine does before any read
            states: dict[str, Any] = await source.prepare_reads({s: None for s in source.streams})  # as the engine
            for stream in source.streams:
                counts[stream] = 0
                async for page in source.read(stream, states.get(stream)):
                    counts[stream] += len(page.records)
            calls = source.api_calls
            plans = source.read_plans
            gql = source._graphql  # the GraphQL read's calls by kind (count, bulk_run, bulk_poll, bulk_file, ...)
            by_kind = {} if gql is None else {**gql.client.http.calls, **gql.client.files.calls}
    variant = config.api + ("-one" if config.api == "graphql" and config.bulk_split_min >= ONE else "")
    return {"api": variant, "skipped_entities": sorted(skipped),
            "seconds": round(time.monotonic() - started, 2), "calls": calls,
            "shop_cpu_s": round(shop.cpu() - shop_cpu, 1),
            "records": counts, "reads": {s: p["mode"] for s, p in plans.items()}, "calls_by_kind": by_kind,
            "peak_rss_mib": _peak_rss_mib(),
            # (seconds, RSS MiB, records so far) every --progress seconds: where the memory went during the read
            **({"rss_timeline": progress.samples} if progress.samples else {})}


def _graphql_settings(info: dict[str, Any], body: dict[str, Any]) -> None:
    r = httpx.patch(f"{info['url']}/__sandbox/graphql", json=body,
                    verify=ssl.create_default_context(cafile=info["ca_file"]))
    r.raise_for_status()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=10000)
    ap.add_argument("--latency", choices=("real", "off"), default="real")
    ap.add_argument("--apis", default="graphql,rest")
    ap.add_argument("--api-version", default=None, help="Shopify API version (default: the connector's)")
    ap.add_argument("--entities", default="all", help="all | example | a comma list of canonical entities")
    ap.add_argument("--bulk-pace", type=float, default=None,
                    help="bench knob: the sandbox's seconds per bulk object (default: its model, 0.0005)")
    ap.add_argument("--shard-orders", type=int, default=0, help="the sandbox's store in shards (bench/memory.py)")
    ap.add_argument("--spill", action="store_true", help="with --shard-orders: records on disk")
    ap.add_argument("--progress", type=float, default=0.0,
                    help="print this process's RSS and the records read every S seconds during a read (0: never)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ferry-bench-") as tmp:
        shop = start_shopify(Path(tmp) / "shopify", args.orders, args.latency, SEED, args.shard_orders, args.spill)
        try:
            info = shop.info
            if args.latency == "off":  # a GraphQL bucket too large to matter, like the REST one the harness sets
                _graphql_settings(info, {"maximum_available": 1e9, "restore_rate": 1e9})
            if args.bulk_pace is not None:
                _graphql_settings(info, {"bulk": {"seconds_per_object": args.bulk_pace}})
            rows = []
            for api in args.apis.split(","):
                config = ShopifyConfig.model_validate({
                    "system": "shopify", "url": info["url"], "access_token": info["access_token"],
                    "ca_file": info["ca_file"], "api": api.removesuffix("-one"),
                    **({"bulk_split_min": ONE} if api == "graphql-one" else {}),
                    **({"api_version": args.api_version} if args.api_version else {}),
                })
                row = asyncio.run(read_all(config, entities_of(args.entities), shop, args.progress))
                print(json.dumps({"orders": args.orders, "latency": args.latency, **row}), flush=True)
                rows.append(row)
        finally:
            shop.stop()
    if len(rows) > 1 and any(r["records"] != rows[0]["records"] for r in rows):
        sys.exit("the APIs read different record counts")


if __name__ == "__main__":
    main()
