"""A CDC consumer process for the SIGKILL test: `python cdc_consumer.py CONFIG.json STATE_DIR`.

It does what `ferry serve` will do with the event source: stage each page with its state in one transaction
of the SQLite store, then ask for the next. Each row's version also names the replay id and this process's
pid, so a change handed out again after it was durable shows up as a second row (staging would otherwise keep
one copy per (key, version) and hide it)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import orjson

from ferry.connectors.salesforce import SalesforceConfig
from ferry.connectors.salesforce.cdc import ChangeStreams, SalesforceChangeSource
from ferry.core.events import CHANGE_KEY
from ferry.core.ports import StagedRow
from ferry.store.sqlite import Store

PIPELINE = "sf-cdc-kill"
FIELDS = {"Contact": ["LastName", "Email"]}


async def main(config_path: str, state_dir: str) -> None:
    config = SalesforceConfig.model_validate(orjson.loads(Path(config_path).read_bytes()))
    store = Store(Path(state_dir) / "state.db")
    run_id = store.start_run(PIPELINE)
    pid = os.getpid()
    async with SalesforceChangeSource(config, ChangeStreams(objects=FIELDS)) as source:
        async for page in source.events("Contact", store.read_state(PIPELINE, "Contact")):
            rows = [StagedRow(str(r["Id"]), f"{r['SystemModstamp']}|{r[CHANGE_KEY]['position']}|{pid}",
                              orjson.dumps(r)) for r in page.records]
            store.stage(PIPELINE, "Contact", run_id, rows, page.state)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
