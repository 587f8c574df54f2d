"""A Bulk upsert whose result file is large, read by a slow consumer (as ferry's loader is: it writes every
5,000 results to the state DB). Shows whether the result download survives being read slowly.

Run: .venv/bin/python bench/bulk_results_slow_reader.py --rows 350000 --pause 1.0
Compare with an older ferry: PYTHONPATH=<old checkout>/src .venv/bin/python bench/bulk_results_slow_reader.py ...

One Salesforce sandbox child process (latency off); prints the results, the wall time and how many times
successfulResults was downloaded (1 = never cut).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import salesforce_connector as sc  # noqa: E402


def wide_contacts(n: int, size: int = 5000) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, n, size):
        chunk = []
        for i in range(start, min(n, start + size)):
            row = sc.contact("r", i)
            row["Description"] = ("bench row, with a comma " * 8)[:180]
            chunk.append(row)
        yield chunk


async def upsert_slowly(info: dict[str, Any], rows: int, pause: float) -> tuple[int, int, float]:
    from ferry.connectors.salesforce import SalesforceSink

    ok = failed = 0
    started = time.monotonic()
    # The successfulResults file is what this measures: fetch it even though the job's counts would do.
    async with SalesforceSink(sc.ferry_config(info, bulk_success_results=True)) as sink:
        async for batch in sink.bulk_stream("Contact", sc.EXT, wide_contacts(rows)):
            assert isinstance(batch, list)
            ok += sum(r.success for r in batch)
            failed += sum(not r.success for r in batch)
            await asyncio.sleep(pause)  # the consumer's own work per batch of results
    return ok, failed, time.monotonic() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=350_000)
    ap.add_argument("--pause", type=float, default=1.0, help="seconds the consumer spends per 5,000 results")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ferry-slow-reader-") as tmp:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "harness" / "serve_salesforce.py"), "--state-dir", str(Path(tmp) / "sf"),
             "--seed", "7", "--latency", "off"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            assert proc.stdout is not None
            info = json.loads(proc.stdout.readline())
            ok, failed, wall = asyncio.run(upsert_slowly(info, args.rows, args.pause))
            stats = httpx.get(f"{info['url']}/__sandbox/stats", verify=info["ca_file"], timeout=60).json()
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    downloads = sum(v for k, v in stats.get("by_endpoint", {}).items() if "successfulresults" in k.lower())
    print(f"rows {args.rows:,}, pause {args.pause} s per 5,000 results: ok {ok:,}, failed {failed:,}, "
          f"wall {wall:.1f} s, successfulResults downloads {downloads or '?'}")


if __name__ == "__main__":
    main()
