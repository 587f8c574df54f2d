"""The inbox: one webhook request in, an HTTP status out, and nothing acknowledged before it is durable.

Order matters and is the security boundary: the body is read with a cap (413 past it, never buffered without
bound), the receiver authenticates the raw bytes (401/4xx, nothing stored), and only then is the body parsed.
An authenticated event's raw records are staged with the delivery's dedup key in one transaction
(``Deliveries.accept_delivery``): a retry or duplicate of a delivery already taken is answered 200 and
dropped. A body that does not parse after a valid signature becomes a dead letter (the sender did sign it:
losing it silently would hide a real change). The caller answers 2xx only after ``accept`` returned.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import orjson
import structlog

from ferry.core.contracts import Source
from ferry.core.ports import Deliveries, NewDeadLetter, StagedRow
from ferry.core.webhooks import WebhookEvent, WebhookReceiver, WebhookRejected

log = structlog.get_logger("ferry.serve.inbox")

DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024  # Shopify and WooCommerce resources are far below this
BAD_BODY = "WEBHOOK_BODY"
WEBHOOK_OBJECT = "webhook"  # the dead letters' object: an event that never became a record of any object


class BodyTooLarge(Exception):
    pass


@dataclass(slots=True)
class Accepted:
    status: int
    outcome: str  # staged | duplicate | ignored | ping | dead_letter | rejected
    detail: str = ""
    stream: str | None = None  # the stream of an authenticated event that carries records


class Inbox:
    """One pipeline's webhooks from one system."""

    def __init__(
        self,
        pipeline: str,
        receiver: WebhookReceiver,
        source: Source,
        store: Deliveries,
        streams: frozenset[str],
        on_staged: Callable[[], None] = lambda: None,
        on_rows: Callable[[str, list[StagedRow]], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.receiver = receiver
        self.source = source  # its identify() gives each record the (key, version) a batch read would
        self.store = store
        self.streams = streams
        self.on_staged = on_staged
        self.on_rows = on_rows  # distributed serve: the committed rows, to hand to the bus (serve/dispatch.py)
        self.counts: dict[str, int] = {}
        self.stream_counts: dict[str, dict[str, int]] = {}  # outcome counts per stream (staged, duplicate)

    async def accept(self, headers: Mapping[str, str], body: bytes) -> Accepted:
        """``headers`` with lower-case names; ``body`` the raw bytes, already capped."""
        result = await self._accept(headers, body)
        self.counts[result.outcome] = self.counts.get(result.outcome, 0) + 1
        if result.stream is not None:
            per = self.stream_counts.setdefault(result.stream, {})
            per[result.outcome] = per.get(result.outcome, 0) + 1
        return result

    async def _accept(self, headers: Mapping[str, str], body: bytes) -> Accepted:
        if self.receiver.is_ping(headers, body):
            return Accepted(200, "ping")
        try:
            self.receiver.authenticate(headers, body)
        except WebhookRejected as exc:
            log.warning("webhook.rejected", pipeline=self.pipeline, system=self.receiver.system,
                        status=exc.status, reason=exc.reason)
            return Accepted(exc.status, "rejected", exc.reason)
        event = self.receiver.parse(headers, body)
        if event.stream is not None and event.stream not in self.streams:
            event.stream, event.records = None, []  # a stream this pipeline does not read: remembered only
        rows, letters = self._rows_and_letters(event, body)
        # The store call is a blocking SQLite transaction: off the event loop, so other requests keep flowing.
        fresh = await asyncio.to_thread(
            self.store.accept_delivery, self.pipeline, event.dedup_key, event.stream, rows, letters
        )
        if not fresh:
            return Accepted(200, "duplicate", stream=event.stream)
        if letters:
            log.warning("webhook.dead_letter", pipeline=self.pipeline, topic=event.topic, problem=event.problem)
            return Accepted(200, "dead_letter", event.problem or "")
        if rows:
            if self.on_rows is not None and event.stream is not None:
                self.on_rows(event.stream, rows)
            else:
                self.on_staged()
            return Accepted(200, "staged", stream=event.stream)
        return Accepted(200, "ignored")

    def _rows_and_letters(self, event: WebhookEvent, body: bytes) -> tuple[list[StagedRow], list[NewDeadLetter]]:
        if event.problem is not None:
            error = {"code": BAD_BODY, "message": f"webhook {event.topic}: {event.problem}", "fields": []}
            # The dead-letter queue keeps JSON: the body that is not JSON is kept as text in a small envelope.
            kept = orjson.dumps({"topic": event.topic, "body": body.decode("utf-8", "replace")})
            return [], [NewDeadLetter(WEBHOOK_OBJECT, event.dedup_key, None, [error], kept, None, event.stream)]
        if event.stream is None:
            return [], []
        identify = self.source.identify
        rows = []
        for raw in event.records:
            key, version = identify(event.stream, raw)
            rows.append(StagedRow(key, version, orjson.dumps(raw)))
        return rows, []


async def read_capped(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The request body from its async chunk iterator, refusing (BodyTooLarge) as soon as it passes ``limit``."""
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        if len(buf) > limit:
            raise BodyTooLarge
    return bytes(buf)
