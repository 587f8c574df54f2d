"""Bus dead letters into the state store's dead-letter queue (the ``DeadLetters`` port), where ``ferry dlq``
lists them next to the records' own.

A work item that ran out of deliveries is stored under the object ``bus:<kind>`` (``bus:load_batch``...) keyed
by its msg id, so it never overwrites a record's own letter. Its error code says how it ended
(``BUS_MAX_DELIVER``: every delivery failed or timed out; ``BUS_PERMANENT``: the handler said retrying cannot help),
the message is the reason, the source payload the item's bytes (to publish again after a fix; base64 inside JSON
when they are not JSON) and the mapped payload the decoded item.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import asdict
from typing import Any

import orjson

from ferry.bus.work import decode
from ferry.core.bus import BusDeadLetter, PermanentWorkError
from ferry.core.ports import DeadLetters, NewDeadLetter

MAX_DELIVER, PERMANENT = "BUS_MAX_DELIVER", "BUS_PERMANENT"


class StoreDeadLetters:
    """A ``DeadLetterHandler`` writing to a state store; returns once the letter is committed."""

    def __init__(self, store: DeadLetters) -> None:
        self.store = store

    async def __call__(self, letter: BusDeadLetter) -> None:
        pipeline, run_id, new = to_dead_letter(letter)
        await asyncio.to_thread(self.store.dead_letter, pipeline, run_id, [new])


def to_dead_letter(letter: BusDeadLetter) -> tuple[str, int | None, NewDeadLetter]:
    """(pipeline, run id, letter) for the store; an undecodable item is named from its subject."""
    code = PERMANENT if letter.reason.startswith("permanent error") else MAX_DELIVER
    error = {"code": code, "message": f"{letter.reason} (after {letter.attempts} deliveries)", "fields": []}
    mapped: dict[str, Any] | None
    try:
        item = decode(letter.data)
    except PermanentWorkError:
        # The store keeps source payloads as JSON: bytes that are not are kept base64-encoded.
        source = orjson.dumps({"undecodable_item_base64": base64.b64encode(letter.data).decode()})
        tokens = letter.subject.split(".")  # ferry.work.<pipeline>.<object>.<partition>
        pipeline = tokens[2] if len(tokens) > 3 else "unknown"
        kind, run_id, mapped = (tokens[3] if len(tokens) > 3 else "unknown"), None, None
    else:
        pipeline, kind, run_id = item.pipeline, item.kind, getattr(item, "run_id", None)  # events have none
        mapped = {"kind": item.kind, **asdict(item)}
        source = letter.data
    new = NewDeadLetter(
        object=f"bus:{kind}",
        record_key=letter.msg_id,
        version=None,
        errors=[error],
        source_payload=source,
        mapped_payload=mapped,
        history=[{"attempt": letter.attempts, "errors": [error], "subject": letter.subject}],
    )
    return pipeline, run_id, new
