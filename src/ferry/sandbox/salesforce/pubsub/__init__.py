"""Salesforce Pub/Sub API (gRPC `eventbus.v1.PubSub`): change events and platform events, Avro-encoded.

See docs/sandbox/salesforce.md ("Pub/Sub API") for what is emulated and how to point a client at it.
"""

from ferry.sandbox.salesforce.pubsub.platform_events import DEFAULT_PLATFORM_EVENTS, PlatformEvents
from ferry.sandbox.salesforce.pubsub.server import PubSubServer
from ferry.sandbox.salesforce.pubsub.service import KEEPALIVE_SECONDS, PubSubService

__all__ = ["DEFAULT_PLATFORM_EVENTS", "KEEPALIVE_SECONDS", "PlatformEvents", "PubSubServer", "PubSubService"]
