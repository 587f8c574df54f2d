"""Signing Shopify webhook deliveries, for the sandbox's future webhook sender and for tests of receivers.

``X-Shopify-Hmac-Sha256`` is base64(HMAC-SHA256(secret, raw body)); receivers must verify the raw
bytes, before any JSON parsing, with a constant-time compare.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def sign_webhook(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode("ascii")


def webhook_headers(*, topic: str, body: bytes, secret: str, shop: str, api_version: str, webhook_id: str,
                    triggered_at: str, event_id: str | None = None) -> dict[str, str]:
    """The headers Shopify sends with a delivery (reference §1.6)."""
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": sign_webhook(body, secret),
        "X-Shopify-Shop-Domain": f"{shop}.myshopify.com",
        "X-Shopify-API-Version": api_version,
        "X-Shopify-Webhook-Id": webhook_id,
        "X-Shopify-Triggered-At": triggered_at,
    }
    if event_id is not None:
        headers["X-Shopify-Event-Id"] = event_id
    return headers
