"""Salesforce CDC as the event source of a pipeline whose ``source:`` says ``events: cdc`` (``ferry serve``).

``SalesforceChangeSource`` (cdc.py) hands out the changed records as they are now, with ``_change``. A
pipeline's records need more than the changed sObject's own fields: an Account its primary Contact, an Order
its items (what the batch read embeds, read_source.py). So each page's records are completed by the batch
source's own ``_embed``, and the page's state is made readable by both readers:

* CDC's ``{"replay_id", "watermark"}`` plus the batch reader's ``{"format": 1, "cursor": [watermark, id]}``,
  so a ``ferry run`` (or a schedule's sweep) of the same pipeline continues from where the stream stood;
* a batch cursor saved by ``ferry run`` (the backfill before ``ferry serve``) becomes a CDC position without a
  replay id, which makes the change source catch up from the cursor before it goes live: nothing between the
  backfill and the first event is skipped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ferry.connectors.salesforce import normalize as sf
from ferry.connectors.salesforce.cdc import ChangeStreams, SalesforceChangeSource
from ferry.connectors.salesforce.read_source import LOWEST_ID, STATE_FORMAT, SalesforceReadSource
from ferry.connectors.salesforce.select import parse_modstamp
from ferry.connectors.salesforce.source_config import SalesforceSourceConfig
from ferry.core.contracts import SourcePage
from ferry.core.events import CHANGE_KEY


class SalesforceEventSource:
    """``async with SalesforceEventSource(cfg) as es: async for page in es.events("Account", state): ...``."""

    system = "salesforce"

    def __init__(self, config: SalesforceSourceConfig) -> None:
        self.config = config
        self.reader = SalesforceReadSource(config)  # its _embed completes the records; its client is shared
        # IsDeleted: the change source's catch-up selects it itself (a tombstone says so without a read)
        fields = {s: [f for f in self.reader._fields(s) if f != "IsDeleted"] for s in self.reader.streams}
        self.changes = SalesforceChangeSource(
            config, ChangeStreams.model_validate(
                {"objects": fields, "linger_seconds": config.event_linger_seconds}),
            client=self.reader._client,
        )

    async def __aenter__(self) -> SalesforceEventSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.reader.aclose()

    @property
    def streams(self) -> Sequence[str]:
        return self.reader.streams

    @property
    def catch_ups(self) -> int:
        return self.changes.catch_ups

    async def events(self, stream: str, state: dict[str, Any] | None) -> AsyncIterator[SourcePage]:
        async for page in self.changes.events(stream, change_position(state)):
            records = [{k: v for k, v in r.items() if k != "attributes"} for r in page.records]
            live = [r for r in records if not sf.is_deleted(r)]
            changes = {r["Id"]: r.pop(CHANGE_KEY, None) for r in live}
            await self.reader._embed(stream, live)  # children are read without _change, then it goes back
            for r in live:
                if changes.get(r["Id"]) is not None:
                    r[CHANGE_KEY] = changes[r["Id"]]
            yield SourcePage(records, with_cursor(page.state))


def change_position(state: dict[str, Any] | None) -> dict[str, Any] | None:
    """A saved state as the change source's position: its own, or a batch read's cursor (catch up from it)."""
    if not state:
        return None
    if "watermark" in state:
        return {"replay_id": state.get("replay_id"), "watermark": state["watermark"]}
    cursor = state.get("cursor") or state.get("since")
    if cursor:
        return {"replay_id": None, "watermark": parse_modstamp(str(cursor[0])).isoformat()}
    return None


def with_cursor(state: dict[str, Any]) -> dict[str, Any]:
    """The CDC position plus the batch reader's finished-read cursor at its watermark."""
    mark = parse_modstamp(str(state["watermark"])).astimezone(dt.UTC)
    modstamp = mark.strftime("%Y-%m-%dT%H:%M:%S.") + f"{mark.microsecond // 1000:03d}+0000"
    return {**state, "format": STATE_FORMAT, "cursor": [modstamp, LOWEST_ID]}
