"""The webhook receiver contract: what a source connector implements so ``ferry serve`` can take its events in.

A receiver knows one system's delivery format and nothing about HTTP servers or the store: ``ferry.serve``
reads the request (body capped), asks the receiver to ``authenticate`` it (before anything is parsed or
stored), then to ``parse`` it into raw source records of a stream, which it stages with the delivery's
``dedup_key`` in one transaction (``ferry.core.ports.Deliveries``). The records are exactly what the
source's ``read`` would have staged (the REST resource JSON), so the source's own ``identify`` and
``normalize`` take them on from there: one path to the target for batch runs and events.

Adding a system (Stripe, HubSpot, Zendesk, QuickBooks) is one class implementing ``WebhookReceiver`` in its
connector package, declared as ``Connector.webhooks``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson


class WebhookRejected(Exception):
    """A request that must not be stored: ``status`` is the HTTP answer (401 bad or missing signature, 400/403
    wrong shop or topic headers); ``reason`` is safe to log (never a secret or a signature)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class WebhookEvent:
    """One authenticated delivery, parsed.

    ``dedup_key`` names the delivery across the sender's retries and duplicates. ``stream`` is the source stream
    its ``records`` belong to, or None when the event carries nothing this pipeline reads (a ping, a topic of
    a stream the pipeline does not read, a delete: acknowledged and only remembered). ``problem`` is set when
    the body could not be parsed although the signature was valid: the event becomes a dead letter."""

    dedup_key: str
    topic: str
    stream: str | None
    records: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscription ferry wants at the source: deliveries of ``topic`` to ``address``."""

    topic: str
    address: str


class WebhookReceiver(Protocol):
    """One system's webhooks for one pipeline (its source config and signing secret)."""

    system: str

    def authenticate(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise ``WebhookRejected`` unless the request is signed with the pipeline's secret (constant-time compare
        over the raw bytes) and its shop and topic headers fit the pipeline. ``headers`` keys are lower case."""
        ...

    def is_ping(self, headers: Mapping[str, str], body: bytes) -> bool:
        """An unsigned handshake the sender needs answered with 200 and that carries no event (WooCommerce sends
        one when a webhook is created); nothing is stored for it."""
        ...

    def parse(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """The authenticated delivery as raw records of a stream. Never raises on a bad body: sets ``problem``."""
        ...

    def subscriptions(self, public_url: str, streams: Sequence[str]) -> list[Subscription]:
        """What must be subscribed at the source so ``streams`` arrive at ``public_url``."""
        ...

    async def register(self, subscriptions: Sequence[Subscription]) -> dict[str, int]:
        """Create the missing subscriptions at the source, idempotently (one already there is kept, never one
        ferry did not ask for removed); returns counts {"created", "existing"}."""
        ...


def hmac_sha256_base64(body: bytes, secret: str) -> str:
    """base64(HMAC-SHA256(secret, body)): what Shopify and WooCommerce (and many others) sign a body with."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode("ascii")


def signature_matches(expected: str, given: str | None) -> bool:
    """Constant-time compare of two signatures (an absent one never matches)."""
    if not given:
        return False
    return hmac.compare_digest(expected.encode("ascii", "replace"), given.strip().encode("ascii", "replace"))


def body_digest(body: bytes) -> str:
    """A short, stable name for a body (dedup keys of senders whose delivery ids are not unique alone)."""
    return hashlib.sha256(body).hexdigest()[:32]


def with_resource(event: WebhookEvent, body: bytes) -> WebhookEvent:
    """``event`` with the body's one resource (a JSON object with an ``id``, as Shopify and WooCommerce send) as
    its record, or with a ``problem`` saying why the body is not one (the caller dead-letters it)."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        event.problem = f"body is not JSON: {exc}"
        return event
    if not isinstance(raw, dict) or raw.get("id") is None:
        event.problem = "body is not a resource object with an id"
        return event
    event.records.append(raw)
    return event
