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

**Children's changes.** An Account's record embeds its primary Contact (name, email, phone), but a change to the
Contact alone raises no Account event. So following ``Account`` also follows ``/data/ContactChangeEvent``: each
changed Contact's ``AccountId`` is read back, and its Account is read whole (with its primary Contact: the
record's version is the newer of the two stamps) and handed out like an Account change. The Contact stream's
position is saved inside the Account's state (``children``), in the same transaction as the page, so both
resume exactly; a state without it (saved before, or a backfill's cursor) catches the Contacts up from the
Account's watermark. A Contact that is not its Account's primary one changes nothing in the record (same
version): staging keeps it once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from typing import Any

import structlog

from ferry.connectors.salesforce import normalize as sf
from ferry.connectors.salesforce.cdc import ChangeStreams, SalesforceChangeSource
from ferry.connectors.salesforce.read_source import LOWEST_ID, STATE_FORMAT, SalesforceReadSource
from ferry.connectors.salesforce.select import parse_modstamp
from ferry.connectors.salesforce.source_config import SalesforceSourceConfig
from ferry.core.contracts import SourcePage
from ferry.core.events import CHANGE_KEY

log = structlog.get_logger("ferry.connectors.salesforce.events")

# A followed stream -> (the child object whose change changes its records, the child's field naming the parent).
CHILD_STREAMS: dict[str, tuple[str, str]] = {"Account": ("Contact", "AccountId")}
CHILDREN = "children"  # the state's key holding each child stream's own position


class SalesforceEventSource:
    """``async with SalesforceEventSource(cfg) as es: async for page in es.events("Account", state): ...``."""

    system = "salesforce"

    def __init__(self, config: SalesforceSourceConfig) -> None:
        self.config = config
        self.reader = SalesforceReadSource(config)  # its _embed completes the records; its client is shared
        # IsDeleted: the change source's catch-up selects it itself (a tombstone says so without a read)
        fields = {s: [f for f in self.reader._fields(s) if f != "IsDeleted"] for s in self.reader.streams}
        for stream in self.reader.streams:
            if stream in CHILD_STREAMS:
                child, parent_field = CHILD_STREAMS[stream]
                fields.setdefault(child, [parent_field])
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

    @property
    def catch_ups_by_stream(self) -> dict[str, int]:
        """Per followed object, the child streams too: a child stream that saw no event since its last catch-up
        has no replay id to resume from and catches up again after a restart (a cheap read by watermark)."""
        return dict(self.changes.catch_ups_by_stream)

    async def events(self, stream: str, state: dict[str, Any] | None) -> AsyncIterator[SourcePage]:
        if stream not in CHILD_STREAMS:
            async for page in self.changes.events(stream, change_position(state)):
                yield SourcePage(await self._completed(stream, page.records), with_cursor(page.state))
            return
        async for page in self._with_children(stream, state):
            yield page

    async def _completed(self, stream: str, raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A change page's records with what the batch read embeds (an Account its primary Contact)."""
        records = [{k: v for k, v in r.items() if k != "attributes"} for r in raw]
        live = [r for r in records if not sf.is_deleted(r)]
        changes = {r["Id"]: r.pop(CHANGE_KEY, None) for r in live}
        await self.reader._embed(stream, live)  # children are read without _change, then it goes back
        for r in live:
            if changes.get(r["Id"]) is not None:
                r[CHANGE_KEY] = changes[r["Id"]]
        return records

    async def _parents(self, stream: str, parent_field: str, children: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The parent records (read whole, children embedded) of a child change page, each with its child's
        change. A deleted child names no parent (its tombstone has only its Id): its parent's next change or a
        sweep carries the new primary Contact."""
        changes: dict[str, Any] = {}
        for child in children:
            parent = child.get(parent_field)
            if parent and not sf.is_deleted(child):
                changes[str(parent)] = child.get(CHANGE_KEY)
        found = await self.reader.fetch_many(stream, list(changes)) if changes else {}
        out = []
        for parent_id, record in found.items():
            if changes.get(parent_id) is not None:
                record[CHANGE_KEY] = changes[parent_id]
            out.append(record)
        return out

    async def _with_children(self, stream: str, state: dict[str, Any] | None) -> AsyncIterator[SourcePage]:
        """The stream's own changes and its child's, merged: each page carries both positions (the page just
        handed out has moved one of them), so the caller's one-transaction staging covers both."""
        child, parent_field = CHILD_STREAMS[stream]
        own_position = change_position(state)
        own = self.changes.events(stream, own_position)
        kids = self.changes.events(child, child_position(state, child, own_position))
        streams = {"own": own, "child": kids}
        pending: dict[asyncio.Future[SourcePage], str] = {}
        try:
            kid_state = child_position(state, child, own_position)
            if own_position is not None:
                own_state: dict[str, Any] = own_position  # the saved position, until the stream moves it
            else:
                # A fresh start: the stream's first page (at once, empty) marks where it starts; before it, a
                # child page would have no position of the parent's to be saved with.
                first = await anext(own)
                own_state = first.state
                yield SourcePage(await self._completed(stream, first.records), _merged(own_state, child, kid_state))
            # Both at once from here: a resumed stream yields only when its events come, and a Contact's change
            # must not wait for an Account's.
            pending = {asyncio.ensure_future(anext(gen)): name for name, gen in streams.items()}
            while True:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=lambda t: pending[t]):  # each page moves only its own position
                    name = pending.pop(task)
                    page = task.result()
                    if name == "own":
                        own_state = page.state
                        records = await self._completed(stream, page.records)
                    else:
                        kid_state = page.state
                        records = await self._parents(stream, parent_field, page.records)
                    yield SourcePage(records, _merged(own_state, child, kid_state))
                    pending[asyncio.ensure_future(anext(streams[name]))] = name
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for gen in streams.values():
                close = getattr(gen, "aclose", None)  # an async generator: ends its CometD subscription
                if close is not None:
                    await close()


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


def child_position(
    state: dict[str, Any] | None, child: str, own: dict[str, Any] | None
) -> dict[str, Any] | None:
    """A child stream's saved position; without one, a catch-up from the parent's watermark (None when the
    parent starts fresh too)."""
    saved = ((state or {}).get(CHILDREN) or {}).get(child)
    if isinstance(saved, dict) and "watermark" in saved:
        return {"replay_id": saved.get("replay_id"), "watermark": saved["watermark"]}
    return {"replay_id": None, "watermark": own["watermark"]} if own else None


def _merged(own: dict[str, Any], child: str, kid: dict[str, Any] | None) -> dict[str, Any]:
    state = with_cursor(own)
    if kid is not None:
        state[CHILDREN] = {child: {"replay_id": kid.get("replay_id"), "watermark": kid["watermark"]}}
    return state


def with_cursor(state: dict[str, Any]) -> dict[str, Any]:
    """The CDC position plus the batch reader's finished-read cursor at its watermark."""
    mark = parse_modstamp(str(state["watermark"])).astimezone(dt.UTC)
    modstamp = mark.strftime("%Y-%m-%dT%H:%M:%S.") + f"{mark.microsecond // 1000:03d}+0000"
    return {**state, "format": STATE_FORMAT, "cursor": [modstamp, LOWEST_ID]}
