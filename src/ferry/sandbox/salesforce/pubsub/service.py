"""The `eventbus.v1.PubSub` service: GetTopic, GetSchema, Subscribe, Publish and PublishStream.

From Salesforce's `pubsub_api.proto` (its comments are the contract) and the Pub/Sub API Developer Guide:

- Every RPC authenticates with the metadata headers `accesstoken` (an OAuth access token or session id of a
  live session), `instanceurl` and `tenantid` (the org id, 15 or 18 characters). Anything else is
  UNAUTHENTICATED "An authentication exception occurred. Provide valid authentication via metadata
  headers." with the `error-code` trailer `sfdc.platform.eventbus.grpc.service.auth.error`.
- Errors carry an rpc id: at the end of the message (`rpcId: <uuid>`) and in the `rpc-id` trailer.
- Subscribe is pull-based: the server never sends more events than the client asked for in `num_requested`
  (summed over its FetchRequests, at most 100 outstanding). The first FetchRequest names the topic and the
  start (LATEST, EARLIEST, or CUSTOM after `replay_id`); a later one naming another topic is
  INVALID_ARGUMENT. With nothing to send, the server sends an empty FetchResponse with the latest replay id
  as a keepalive (within 270 s on the org; `keepalive_seconds` here).
- Replay ids are opaque bytes on the wire: here the event log's replay id as 8 big-endian bytes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from ferry.sandbox.salesforce.cdc import ChangeCapture, ChangeEvent, EventBus, channel_entities
from ferry.sandbox.salesforce.ids import normalize_id
from ferry.sandbox.salesforce.pubsub import proto
from ferry.sandbox.salesforce.pubsub.change_events import ChangeEventSchemas
from ferry.sandbox.salesforce.pubsub.platform_events import PlatformEvent, PlatformEvents

if TYPE_CHECKING:
    from ferry.sandbox.salesforce.auth import OAuthServer

KEEPALIVE_SECONDS = 270.0
MAX_REQUESTED = 100  # events a subscription may have outstanding; larger requests count as 100

AUTH_ERROR = "sfdc.platform.eventbus.grpc.service.auth.error"
AUTH_MESSAGE = "An authentication exception occurred. Provide valid authentication via metadata headers."
REPLAY_CORRUPTED = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
REPLAY_MESSAGE = ("The Replay ID validation failed. Ensure that the replay_id field value in FetchRequest is valid "
                  "and refers to an event that is within the retention window.")
TOPIC_NOT_FOUND = "sfdc.platform.eventbus.grpc.subscription.topic.notfound"
SCHEMA_NOT_FOUND = "sfdc.platform.eventbus.grpc.schema.notfound"
TOPIC_CHANGED = "sfdc.platform.eventbus.grpc.subscription.topic.changed"
PUBLISH_DENIED = "sfdc.platform.eventbus.grpc.publish.permission.denied"


class RpcError(Exception):
    def __init__(self, code: grpc.StatusCode, error_code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.error_code, self.message = code, error_code, message


def encode_replay_id(replay_id: int) -> bytes:
    return replay_id.to_bytes(8, "big")


def decode_replay_id(raw: bytes) -> int | None:
    return int.from_bytes(raw, "big") if len(raw) == 8 else None


@dataclass
class Topic:
    name: str
    bus: EventBus
    entities: set[str] | None = None  # change events: the entities the topic carries (None: every one)
    event: PlatformEvent | None = None  # platform events: the event's definition


@dataclass
class Subscription:
    topic: Topic
    cursor: int  # replay id of the last event delivered or passed over
    pending: int = 0
    error: RpcError | None = None


class PubSubService:
    def __init__(self, oauth: OAuthServer, cdc: ChangeCapture, platform: PlatformEvents,
                 keepalive_seconds: float = KEEPALIVE_SECONDS) -> None:
        self.oauth = oauth
        self.cdc = cdc
        self.platform = platform
        self.change_events = ChangeEventSchemas(cdc)
        self.keepalive_seconds = keepalive_seconds

    def handler(self) -> grpc.GenericRpcHandler:
        unary, stream = grpc.unary_unary_rpc_method_handler, grpc.stream_stream_rpc_method_handler
        return grpc.method_handlers_generic_handler(proto.SERVICE, {
            "GetTopic": unary(self.get_topic, proto.TopicRequest.FromString, proto.TopicInfo.SerializeToString),
            "GetSchema": unary(self.get_schema, proto.SchemaRequest.FromString, proto.SchemaInfo.SerializeToString),
            "Publish": unary(self.publish, proto.PublishRequest.FromString, proto.PublishResponse.SerializeToString),
            "Subscribe": stream(self.subscribe, proto.FetchRequest.FromString, proto.FetchResponse.SerializeToString),
            "PublishStream": stream(self.publish_stream, proto.PublishRequest.FromString,
                                    proto.PublishResponse.SerializeToString),
        })

    # --- auth, topics, errors -----------------------------------------------------------------------

    def _authenticate(self, context: grpc.aio.ServicerContext) -> str:
        """The session's user id; raises UNAUTHENTICATED unless the three metadata headers check out."""
        headers = {key.lower(): value for key, value in context.invocation_metadata() or ()}
        token, tenant = str(headers.get("accesstoken", "")), str(headers.get("tenantid", ""))
        session = self.oauth.session(token) if token else None
        if session is None or not headers.get("instanceurl") or normalize_id(tenant) != normalize_id(self.oauth.org_id):
            raise RpcError(grpc.StatusCode.UNAUTHENTICATED, AUTH_ERROR, AUTH_MESSAGE)
        return session.user_id

    def topic(self, name: str) -> Topic:
        event = self.platform.channel_event(name)
        if event is not None:
            return Topic(name, self.platform.bus, event=event)
        if name.startswith("/data/"):
            entities = channel_entities(name, self.cdc.schema)
            selected = self.cdc.config.entities
            if entities is None or (entities and (selected is None or entities <= selected)):
                return Topic(name, self.cdc.bus, entities=entities)
        raise RpcError(grpc.StatusCode.NOT_FOUND, TOPIC_NOT_FOUND,
                       f"The topic {name} doesn't exist, or you don't have access to it.")

    def topic_schema_id(self, topic: Topic) -> str:
        if topic.event is not None:
            return topic.event.schema_id
        if topic.entities is not None and len(topic.entities) == 1:
            return self.change_events.layout(next(iter(topic.entities))).schema_id
        return ""  # /data/ChangeEvents carries many entities' schemas: each event names its own

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext, rpc_id: str, error: RpcError) -> NoReturn:
        await context.abort(error.code, f"{error.message} rpcId: {rpc_id}",
                            (("error-code", error.error_code), ("rpc-id", rpc_id)))
        raise AssertionError("context.abort returns only by raising")

    async def _unary(self, context: grpc.aio.ServicerContext, answer: Callable[[str], Any]) -> Any:
        rpc_id = str(uuid.uuid4())
        try:
            self._authenticate(context)
            return answer(rpc_id)
        except RpcError as error:
            await self._abort(context, rpc_id, error)

    # --- unary RPCs ---------------------------------------------------------------------------------

    async def get_topic(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        def answer(rpc_id: str) -> Any:
            topic = self.topic(request.topic_name)
            return proto.TopicInfo(topic_name=topic.name, tenant_guid=self.oauth.org_id,
                                   can_publish=topic.event is not None, can_subscribe=True,
                                   schema_id=self.topic_schema_id(topic), rpc_id=rpc_id)
        return await self._unary(context, answer)

    async def get_schema(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        def answer(rpc_id: str) -> Any:
            sid = request.schema_id
            found = self.platform.by_schema_id(sid) or self.change_events.by_schema_id(sid)
            if found is None:
                raise RpcError(grpc.StatusCode.NOT_FOUND, SCHEMA_NOT_FOUND, f"The schema ID {sid} wasn't found.")
            return proto.SchemaInfo(schema_json=found.schema_json, schema_id=found.schema_id, rpc_id=rpc_id)
        return await self._unary(context, answer)

    async def publish(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._unary(context, lambda rpc_id: self._publish_batch(request, None, rpc_id))

    def _publish_batch(self, request: Any, stream_topic: str | None, rpc_id: str) -> Any:
        if stream_topic is not None and request.topic_name and request.topic_name != stream_topic:
            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, TOPIC_CHANGED,
                           f"The topic name {request.topic_name} doesn't match the stream's topic {stream_topic}.")
        topic = self.topic(stream_topic or request.topic_name)
        if topic.event is None:
            raise RpcError(grpc.StatusCode.PERMISSION_DENIED, PUBLISH_DENIED,
                           f"Publishing to {topic.name} isn't allowed.")
        results = []
        for event in request.events:
            event_id = event.id or str(uuid.uuid4())
            try:
                replay = self.platform.publish(topic.event, event_id, event.schema_id, event.payload)
            except ValueError as exc:
                results.append(proto.PublishResult(error=proto.Error(code=proto.ERROR_PUBLISH, msg=str(exc)),
                                                   correlation_key=event_id))
            else:
                results.append(proto.PublishResult(replay_id=encode_replay_id(replay), correlation_key=event_id))
        return proto.PublishResponse(results=results, schema_id=topic.event.schema_id, rpc_id=rpc_id)

    async def publish_stream(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
                             ) -> AsyncIterator[Any]:
        rpc_id = str(uuid.uuid4())
        stream_topic: str | None = None
        try:
            self._authenticate(context)
            async for request in requests:
                response = self._publish_batch(request, stream_topic, rpc_id)
                stream_topic = stream_topic or request.topic_name
                yield response
        except RpcError as error:
            await self._abort(context, rpc_id, error)

    # --- Subscribe ----------------------------------------------------------------------------------

    async def subscribe(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
                        ) -> AsyncIterator[Any]:
        rpc_id = str(uuid.uuid4())
        try:
            self._authenticate(context)
            incoming = aiter(requests)
            first = await anext(incoming, None)
            if first is None:
                return
            topic = self.topic(first.topic_name)
            sub = Subscription(topic, self._start_cursor(topic.bus, first), _capped(0, first.num_requested))
        except RpcError as error:
            await self._abort(context, rpc_id, error)
        async for response in self._deliver(sub, incoming, rpc_id):
            if sub.error is not None:
                await self._abort(context, rpc_id, sub.error)
            yield response
        if sub.error is not None:
            await self._abort(context, rpc_id, sub.error)

    @staticmethod
    def _start_cursor(bus: EventBus, first: Any) -> int:
        if first.replay_preset == proto.EARLIEST:
            return bus.oldest_cursor()
        if first.replay_preset == proto.CUSTOM:
            replay = decode_replay_id(first.replay_id)
            if replay is None or not bus.has_replay_id(replay):
                raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, REPLAY_CORRUPTED, REPLAY_MESSAGE)
            return replay
        return bus.last_replay_id

    async def _deliver(self, sub: Subscription, incoming: AsyncIterator[Any], rpc_id: str) -> AsyncIterator[Any]:
        """Events as they are requested and arrive; a keepalive after `keepalive_seconds` with nothing sent."""
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_event() -> None:  # the event log's writers may run on another thread
            loop.call_soon_threadsafe(wake.set)

        sub.topic.bus.listen(on_event)
        reader = asyncio.create_task(self._read_requests(sub, incoming, wake))
        last_sent = time.monotonic()
        try:
            while sub.error is None:
                wake.clear()
                batch = self._next_batch(sub, rpc_id)
                if batch is not None:
                    last_sent = time.monotonic()
                    yield batch
                    continue
                remaining = last_sent + self.keepalive_seconds - time.monotonic()
                try:
                    await asyncio.wait_for(wake.wait(), max(0.0, remaining))
                except TimeoutError:
                    last_sent = time.monotonic()
                    yield proto.FetchResponse(latest_replay_id=encode_replay_id(sub.cursor), rpc_id=rpc_id,
                                              pending_num_requested=sub.pending)
        finally:
            sub.topic.bus.unlisten(on_event)
            reader.cancel()

    @staticmethod
    async def _read_requests(sub: Subscription, incoming: AsyncIterator[Any], wake: asyncio.Event) -> None:
        """Later FetchRequests add to what the client can take; their replay options are ignored."""
        async for request in incoming:
            if request.topic_name and request.topic_name != sub.topic.name:
                sub.error = RpcError(grpc.StatusCode.INVALID_ARGUMENT, TOPIC_CHANGED,
                                     f"The topic name {request.topic_name} in the FetchRequest doesn't match the "
                                     f"subscription's topic {sub.topic.name}.")
            sub.pending = _capped(sub.pending, request.num_requested)
            wake.set()

    def _next_batch(self, sub: Subscription, rpc_id: str) -> Any | None:
        if sub.pending <= 0:
            return None
        events: list[Any] = []
        for event in sub.topic.bus.after(sub.cursor):
            if len(events) >= sub.pending:
                break
            sub.cursor = event.replay_id
            if sub.topic.entities is None or event.entity in sub.topic.entities:
                events.append(self._consumer_event(sub.topic, event))
        if not events:
            return None
        sub.pending -= len(events)
        return proto.FetchResponse(events=events, latest_replay_id=encode_replay_id(sub.cursor), rpc_id=rpc_id,
                                   pending_num_requested=sub.pending)

    def _consumer_event(self, topic: Topic, event: ChangeEvent) -> Any:
        if topic.event is not None:
            change = event.change
            produced = proto.ProducerEvent(id=change["id"], schema_id=change["schema_id"], payload=change["payload"])
        else:
            sid, payload = self.change_events.encode(event)
            # the event's uuid: stable, so a client deduplicating on it sees a redelivered event as the same
            event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"cdc/{event.change['commit']}/{event.replay_id}"))
            produced = proto.ProducerEvent(id=event_id, schema_id=sid, payload=payload)
        return proto.ConsumerEvent(event=produced, replay_id=encode_replay_id(event.replay_id))


def _capped(pending: int, requested: int) -> int:
    return min(MAX_REQUESTED, pending + max(0, requested))
