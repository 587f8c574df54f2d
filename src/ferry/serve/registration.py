"""Subscriptions at the sources, made on start: each pipeline with ``webhooks:`` asks its receiver for the topics
its streams need at ``{public_url}/webhooks/{pipeline}/{system}`` and creates what is missing (idempotently:
what exists is kept, nothing ferry did not create is removed or changed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from ferry.core.webhooks import WebhookReceiver

log = structlog.get_logger("ferry.serve.registration")


@dataclass(slots=True)
class Registration:
    pipeline: str
    receiver: WebhookReceiver
    streams: Sequence[str]


def webhook_address(public_url: str, pipeline: str, system: str) -> str:
    return f"{public_url.rstrip('/')}/webhooks/{pipeline}/{system}"


async def register_all(public_url: str, registrations: Sequence[Registration]) -> dict[str, dict[str, int] | str]:
    """Each pipeline's subscriptions; a source that refuses is reported (and logged), the others still go on:
    events already subscribed keep arriving, and the schedule's sweep catches up."""
    out: dict[str, dict[str, int] | str] = {}
    for reg in registrations:
        address = webhook_address(public_url, reg.pipeline, reg.receiver.system)
        try:
            out[reg.pipeline] = await reg.receiver.register(reg.receiver.subscriptions(address, reg.streams))
        except Exception as exc:  # a source that cannot be reached must not stop the other pipelines
            out[reg.pipeline] = f"{type(exc).__name__}: {exc}"
            log.error("webhooks.register_failed", pipeline=reg.pipeline, system=reg.receiver.system, error=str(exc))
    return out
