"""The Streaming API: CometD (Bayeux 1.0) long polling at `/cometd/XX.X`, delivering change events.

Follows the Bayeux specification (docs.cometd.org, "The Bayeux Protocol") for the meta channels and
Salesforce's Streaming API Developer Guide for what the org adds and answers:

- `/meta/handshake` answers `supportedConnectionTypes: ["long-polling"]` (the org has no websocket)
  and `ext: {"replay": true, "payload.format": true}`.
- `/meta/connect` is held until an event arrives or the advised `timeout` (110 s on the org) runs
  out; the first connect after a handshake returns at once. Events ride in the same response array.
- `/meta/subscribe` takes `ext.replay = {channel: -1 | -2 | replayId}`; a replay id outside the
  retained events is the org's `400::The replayId {N} you provided was invalid. ...`.
- Every request needs the OAuth bearer token of a live session; a missing, expired or revoked one is
  `401::Authentication invalid` (`403::Handshake denied` on handshake) with `advice.reconnect: none`.
- A client that does not reconnect within `maxInterval` (40 s) is forgotten: `403::Unknown client`.
- `/event/<Name>__e` delivers the platform events published over the Pub/Sub API (pubsub/platform_events.py).
"""

from __future__ import annotations

import asyncio
import secrets
import string
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request, Response

from ferry.sandbox.salesforce.auth import bearer_token
from ferry.sandbox.salesforce.cdc import ChangeCapture, EventBus, channel_entities, stats

if TYPE_CHECKING:
    from ferry.sandbox.salesforce import SalesforceSandbox
    from ferry.sandbox.salesforce.auth import OAuthServer
    from ferry.sandbox.salesforce.pubsub import PlatformEvents
    from ferry.sandbox.salesforce.schema import Schema

MIN_STREAMING_VERSION = 37  # durable streaming (replay) exists from API 37.0
CONNECT_TIMEOUT_SECONDS = 110.0
MAX_INTERVAL_SECONDS = 40.0
MAX_MESSAGES_PER_CONNECT = 1_000
_CLIENT_ID_ALPHABET = string.ascii_lowercase + string.digits

INVALID_REPLAY = ("400::The replayId {{{}}} you provided was invalid.  Please provide a valid ID, -2 to replay "
                  "all events, or -1 to replay only new events.")
AUTH_INVALID = "401::Authentication invalid"
AUTH_REQUIRED = "401::Request requires authentication"
UNKNOWN_CLIENT = "403::Unknown client"


@dataclass(slots=True)
class Subscription:
    channel: str
    entities: set[str] | None  # None: every entity (/data/ChangeEvents) or event (/event/<Name>__e)
    cursor: int  # replay id of the last event delivered (or skipped) on this channel
    bus: EventBus  # change events, or the platform events of /event/<Name>__e


@dataclass(eq=False)
class BayeuxClient:
    client_id: str
    user_id: str
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    last_seen: float = field(default_factory=time.monotonic)
    connected: bool = False  # has had its first /meta/connect
    waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.get_loop().call_soon_threadsafe(_resolve, waiter)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class StreamingApi:
    def __init__(self, oauth: OAuthServer, schema: Schema, cdc: ChangeCapture, *,
                 connect_timeout: float = CONNECT_TIMEOUT_SECONDS, max_interval: float = MAX_INTERVAL_SECONDS,
                 platform_events: PlatformEvents | None = None) -> None:
        self.oauth = oauth
        self.schema = schema
        self.cdc = cdc
        self.platform_events = platform_events
        self.connect_timeout = connect_timeout
        self.max_interval = max_interval
        self.clients: dict[str, BayeuxClient] = {}
        self.waiting: set[BayeuxClient] = set()  # clients whose /meta/connect is held
        cdc.bus.listen(self._wake_all)
        if platform_events is not None:
            platform_events.bus.listen(self._wake_all)

    def _wake_all(self) -> None:
        # called on every commit (every 200 Bulk rows): only clients holding a long poll need waking
        if self.waiting:
            for client in tuple(self.waiting):
                client.wake()

    def _advice(self) -> dict[str, Any]:
        return {"reconnect": "retry", "interval": 0, "timeout": int(self.connect_timeout * 1000)}

    # --- one HTTP request: a batch of Bayeux messages -----------------------------------------------

    async def handle(self, version: str, authorization: str | None, messages: list[Any]) -> list[dict[str, Any]]:
        version_error = _version_error(version)
        token = bearer_token(authorization)
        session = self.oauth.session(token) if token else None
        replies: list[dict[str, Any]] = []
        # a connect is answered last: the other messages of the batch must not wait behind its long poll
        ordered = sorted((m for m in messages if isinstance(m, dict)),
                         key=lambda m: m.get("channel") == "/meta/connect")
        for message in ordered:
            channel = str(message.get("channel", ""))
            if version_error is not None:
                replies.append(_failure(message, version_error))
            elif session is None:
                replies.append(self._auth_failure(message, AUTH_REQUIRED if token is None else AUTH_INVALID))
            elif channel == "/meta/handshake":
                replies.append(self._handshake(message, session.user_id))
            elif channel == "/meta/connect":
                replies.extend(await self._connect(message))
            elif channel == "/meta/subscribe":
                replies.append(self._subscribe(message))
            elif channel == "/meta/unsubscribe":
                replies.append(self._unsubscribe(message))
            elif channel == "/meta/disconnect":
                replies.append(self._disconnect(message))
            else:
                replies.append(_failure(message, "403::Publish denied"))
        return replies

    @staticmethod
    def _auth_failure(message: dict[str, Any], error: str) -> dict[str, Any]:
        if message.get("channel") == "/meta/handshake":
            return {**_echo(message), "ext": {"sfdc": {"failureReason": error}}, "advice": {"reconnect": "none"},
                    "error": "403::Handshake denied", "successful": False}
        return {**_echo(message), "advice": {"reconnect": "none", "interval": 0}, "error": error,
                "successful": False}

    def _client(self, message: dict[str, Any]) -> BayeuxClient | None:
        client = self.clients.get(str(message.get("clientId", "")))
        if client is not None:
            client.last_seen = time.monotonic()
        return client

    def _forget_idle_clients(self) -> None:
        horizon = time.monotonic() - self.max_interval
        for cid, client in list(self.clients.items()):
            if client.last_seen < horizon and client.waiter is None:
                del self.clients[cid]

    def _handshake(self, message: dict[str, Any], user_id: str) -> dict[str, Any]:
        types = message.get("supportedConnectionTypes") or []
        if "long-polling" not in types:
            return _failure(message, f"400::Invalid connection type {','.join(map(str, types))}")
        self._forget_idle_clients()
        client_id = "".join(secrets.choice(_CLIENT_ID_ALPHABET) for _ in range(27))
        self.clients[client_id] = BayeuxClient(client_id, user_id)
        return {**_echo(message), "ext": {"replay": True, "payload.format": True}, "minimumVersion": "1.0",
                "clientId": client_id, "supportedConnectionTypes": ["long-polling"], "version": "1.0",
                "successful": True}

    async def _connect(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        client = self._client(message)
        if client is None:
            return [_unknown_client(message)]
        if message.get("connectionType") != "long-polling":
            return [_failure(message, f"400::Invalid connection type {message.get('connectionType')}")]
        reply = {**_echo(message), "clientId": client.client_id, "successful": True, "advice": self._advice()}
        if not client.connected:
            client.connected = True  # the first connect only establishes the connection
            return [reply]
        events = self._deliverable(client)
        if not events:
            if client.waiter is not None:
                client.wake()  # a newer connect replaces a held one, as a CometD server does
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            client.waiter = waiter
            self.waiting.add(client)
            try:
                await asyncio.wait_for(waiter, self.connect_timeout)
            except TimeoutError:
                pass
            finally:
                if client.waiter is waiter:
                    client.waiter = None
                    self.waiting.discard(client)
                client.last_seen = time.monotonic()
            if self.clients.get(client.client_id) is not client:
                return [_unknown_client(message)]  # disconnected while held
            events = self._deliverable(client)
        return [*events, reply]

    def _deliverable(self, client: BayeuxClient) -> list[dict[str, Any]]:
        """Events after each subscription's cursor, in replay order, as channel messages."""
        subs = list(client.subscriptions.values())
        if not subs:
            return []
        out: list[dict[str, Any]] = []
        for bus in {id(s.bus): s.bus for s in subs}.values():  # change events, then platform events
            on_bus = [s for s in subs if s.bus is bus]
            for event in bus.after(min(s.cursor for s in on_bus)):
                for sub in on_bus:
                    if event.replay_id <= sub.cursor:
                        continue
                    sub.cursor = event.replay_id
                    if sub.entities is None or event.entity in sub.entities:
                        out.append({"data": bus.message(event), "channel": sub.channel})
                if len(out) >= MAX_MESSAGES_PER_CONNECT:
                    return out
        return out

    def _subscribe(self, message: dict[str, Any]) -> dict[str, Any]:
        client = self._client(message)
        if client is None:
            return _unknown_client(message)
        channel = message.get("subscription")
        base = {**_echo(message), "clientId": client.client_id, "subscription": channel}
        if not channel or not isinstance(channel, str):
            return {**base, "error": "400::Channel name not specified", "successful": False}
        if not channel.startswith("/"):
            return {**base, "error": "400::Channel subscriptions must start with a leading '/'", "successful": False}
        bus, entities = self._channel_source(channel)
        selected = self.cdc.config.entities
        if entities is not None and (not entities or (selected is not None and not entities <= selected)):
            return {**base, "error": f"400::The channel you requested to subscribe to does not exist {{{channel}}}",
                    "successful": False}
        replay = ((message.get("ext") or {}).get("replay") or {}).get(channel, -1)
        cursor = self._cursor_for(replay, bus)
        if cursor is None:
            return {**base, "error": INVALID_REPLAY.format(replay), "successful": False}
        client.subscriptions[channel] = Subscription(channel, entities, cursor, bus)
        client.wake()
        return {**base, "successful": True}

    def _channel_source(self, channel: str) -> tuple[EventBus, set[str] | None]:
        """The event log a channel reads and the entities it carries (see channel_entities)."""
        platform = self.platform_events
        if platform is not None and platform.channel_event(channel) is not None:
            return platform.bus, None
        return self.cdc.bus, channel_entities(channel, self.schema)

    @staticmethod
    def _cursor_for(replay: Any, bus: EventBus) -> int | None:
        if isinstance(replay, bool) or not isinstance(replay, int):
            return None
        if replay == -1:
            return bus.last_replay_id
        if replay == -2:
            return bus.oldest_cursor()
        if replay >= 0 and bus.has_replay_id(replay):
            return replay
        return None

    def _unsubscribe(self, message: dict[str, Any]) -> dict[str, Any]:
        client = self._client(message)
        if client is None:
            return _unknown_client(message)
        channel = message.get("subscription")
        client.subscriptions.pop(str(channel), None)
        return {**_echo(message), "clientId": client.client_id, "subscription": channel, "successful": True}

    def _disconnect(self, message: dict[str, Any]) -> dict[str, Any]:
        client = self.clients.pop(str(message.get("clientId", "")), None)
        if client is None:
            return _unknown_client(message)
        client.wake()
        return {**_echo(message), "clientId": client.client_id, "successful": True}


def _echo(message: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"channel": message.get("channel")}
    if "id" in message:
        out["id"] = message["id"]
    if "clientId" in message:
        out["clientId"] = message["clientId"]
    return out


def _failure(message: dict[str, Any], error: str) -> dict[str, Any]:
    return {**_echo(message), "error": error, "successful": False}


def _unknown_client(message: dict[str, Any]) -> dict[str, Any]:
    return {**_failure(message, UNKNOWN_CLIENT), "advice": {"reconnect": "handshake", "interval": 0}}


def _version_error(version: str) -> str | None:
    try:
        number = float(version)
    except ValueError:
        number = 0.0
    if number < MIN_STREAMING_VERSION:
        return (f"400::Unsupported API version. Only API versions '{MIN_STREAMING_VERSION}.0' and later are "
                f"supported. URI format: '/cometd/62.0'")
    return None


FaultHook = Callable[[Request], Awaitable[Response | None]]


def register_streaming_routes(app: FastAPI, streaming: StreamingApi, fault: FaultHook | None = None) -> None:
    """POST /cometd/XX.X (and /cometd/XX.X/<meta channel>, which the JS CometD client appends).

    `fault` (app.endpoint_fault) lets injected faults whose rule path is absolute (`/cometd`) fail a Bayeux
    request before it is handled: a 503 from the org's load balancer, a reset, a held-then-dropped long poll.
    """

    async def cometd(request: Request, version: str) -> Response:
        if fault is not None:
            faulted = await fault(request)
            if faulted is not None:
                return faulted
        try:
            body = orjson.loads(await request.body() or b"[]")
        except orjson.JSONDecodeError:
            body = []
        messages = body if isinstance(body, list) else [body]
        replies = await streaming.handle(version, request.headers.get("authorization"), messages)
        return Response(orjson.dumps(replies), media_type="application/json;charset=UTF-8")

    app.add_api_route("/cometd/{version}", cometd, methods=["POST"])
    app.add_api_route("/cometd/{version}/{meta:path}", cometd, methods=["POST"])


def register_cdc_admin_routes(app: FastAPI, sandbox: SalesforceSandbox) -> None:
    """Outside the emulated API (no auth, not counted): see and configure CDC, restore from the recycle bin,
    and read the integration user's password, security token and refresh token."""
    cdc = sandbox.cdc

    def describe() -> dict[str, Any]:
        info = stats(cdc.bus)
        entities = cdc.config.entities
        return {"entities": None if entities is None else sorted(entities),
                "retention_seconds": cdc.config.retention_seconds, "max_events": cdc.config.max_events,
                "overflow_threshold": cdc.config.overflow_threshold, "gap_next": cdc.config.gap_next,
                "retained": info.retained, "last_replay_id": info.last_replay_id, "by_entity": info.by_entity,
                "streaming_clients": len(sandbox.streaming.clients)}

    def reply(body: Any, status: int = 200) -> Response:
        return Response(orjson.dumps(body), status, media_type="application/json;charset=UTF-8")

    async def get_cdc() -> Response:
        return reply(describe())

    async def set_cdc(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body() or b"{}")
            if "entities" in body:
                cdc.select_entities(body["entities"])
            if "retention_seconds" in body:
                cdc.config.retention_seconds = float(body["retention_seconds"])
            if "max_events" in body:
                cdc.config.max_events = int(body["max_events"])
            if "overflow_threshold" in body:
                cdc.config.overflow_threshold = int(body["overflow_threshold"])
            if "gap_next" in body:
                cdc.config.gap_next = int(body["gap_next"])
        except (ValueError, TypeError, AttributeError, orjson.JSONDecodeError) as exc:
            return reply({"error": str(exc)}, 400)
        cdc.bus.prune()
        sandbox.flush(force=True)
        return reply(describe())

    async def events(after: int = 0) -> Response:
        return reply([cdc.bus.message(e) for e in cdc.bus.after(after)])

    async def undelete(record_id: str) -> Response:
        if not sandbox.undelete(record_id):
            return reply({"error": f"{record_id} is not in the recycle bin"}, 404)
        return reply({"id": record_id, "undeleted": True})

    async def login() -> Response:
        # the sandbox's own throwaway logins, like the client secret `ferry sandbox serve` prints
        return reply(sandbox.login_credentials())

    app.add_api_route("/__sandbox/login", login, methods=["GET"])
    app.add_api_route("/__sandbox/cdc", get_cdc, methods=["GET"])
    app.add_api_route("/__sandbox/cdc", set_cdc, methods=["POST"])
    app.add_api_route("/__sandbox/cdc/events", events, methods=["GET"])
    app.add_api_route("/__sandbox/undelete/{record_id}", undelete, methods=["POST"])
