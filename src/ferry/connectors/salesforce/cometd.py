"""A CometD (Bayeux 1.0) long-polling client for Salesforce's Streaming API, over httpx.

Written from the Bayeux specification (docs.cometd.org, "The Bayeux Protocol") and Salesforce's Streaming
API Developer Guide ("Clients and Timeouts", "Message Durability", "Handling Streaming API Errors"):

* Every Bayeux message is POSTed, as a JSON array, to ``{instance_url}/cometd/{version}`` with the OAuth
  bearer token. The load balancer's cookies (``BAYEUX_BROWSER``, sticky routing) are kept in the client's
  cookie jar for the life of the session.
* ``/meta/handshake`` gives a ``clientId``; ``/meta/subscribe`` carries the replay extension
  ``ext: {"replay": {channel: replayId}}`` (-1 new events only, -2 everything retained, N: after N);
  ``/meta/connect`` is held by the server until events arrive or ``advice.timeout`` (110 s) runs out, and
  the events ride in the same response array as the connect reply.
* ``advice.reconnect``: ``retry`` connect again after ``interval`` ms; ``handshake`` (``403::Unknown client``,
  the server forgot the client) handshake and subscribe again; ``none`` stop, which Salesforce sends with
  ``401::Authentication invalid`` when the session expired: log in again, then handshake.
* A subscribe refused with ``400::The replayId {N} you provided was invalid...`` means the events after N
  are gone (past the 72-hour retention): ``ReplayLost`` tells the caller to catch up some other way.

``CometdStream`` is one subscription kept alive across all of that. It resubscribes from the replay id of
the last batch its caller took (the caller asks for the next batch only once the previous one is durable),
so a re-login or a re-handshake neither loses nor repeats an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import orjson
import structlog

from ferry.connectors.http import SessionExpired, ssl_context
from ferry.errors import PermanentError, TransientError

log = structlog.get_logger("ferry.connectors.salesforce.cometd")

NEW_EVENTS = -1  # replay: only events published after the subscribe
ALL_RETAINED = -2  # replay: every retained event, then new ones
DEFAULT_CONNECT_TIMEOUT = 110.0  # the org holds a /meta/connect up to 110 s (advice.timeout)
READ_SLACK = 20.0  # beyond the advised hold, before a silent connection counts as dead
MAX_QUIET_FAILURES = 8  # consecutive failed requests before the stream gives up (TransientError)

T = TypeVar("T")


class ReplayLost(Exception):
    """The subscription cannot resume exactly where the caller stands (an expired or unknown replay id, or a
    session lost before any replay id was known): the caller must catch up by other means, then go live."""

    def __init__(self, channel: str, replay_id: int, reason: str) -> None:
        super().__init__(f"{channel}: cannot replay after {replay_id}: {reason}")
        self.channel = channel
        self.replay_id = replay_id
        self.reason = reason


class BayeuxError(TransientError):
    """A Bayeux reply with ``successful: false`` that is worth trying again (server busy, lost client)."""


class TokenSource(Protocol):
    """What the stream needs from the Salesforce login (``auth.TokenManager`` implements it)."""

    generation: int

    async def session(self) -> Any: ...  # has .access_token and .instance_url

    async def refresh(self, stale_generation: int) -> None: ...


@dataclass(slots=True)
class Advice:
    reconnect: str = "retry"
    interval_ms: int = 0
    timeout_ms: int = int(DEFAULT_CONNECT_TIMEOUT * 1000)

    def update(self, advice: Any) -> None:
        if not isinstance(advice, dict):
            return
        if isinstance(advice.get("reconnect"), str):
            self.reconnect = advice["reconnect"]
        if isinstance(advice.get("interval"), int):
            self.interval_ms = max(0, advice["interval"])
        if isinstance(advice.get("timeout"), int):
            self.timeout_ms = max(0, advice["timeout"])


def error_code(reply: dict[str, Any]) -> tuple[int, str]:
    """``"401::Authentication invalid"`` → (401, "Authentication invalid"); the handshake's real reason is in
    ``ext.sfdc.failureReason`` (``403::Handshake denied`` alone says nothing)."""
    text = str(reply.get("error") or "")
    reason = ((reply.get("ext") or {}).get("sfdc") or {}).get("failureReason")
    if isinstance(reason, str) and reason:
        text = reason
    code, _, message = text.partition("::")
    try:
        return int(code), message
    except ValueError:
        return 0, text


class BayeuxSession:
    """One Bayeux client id: handshake, subscribe, connect, disconnect. Raises on failures; no retries here."""

    def __init__(self, tokens: TokenSource, *, api_version: str, http: httpx.AsyncClient) -> None:
        self.tokens = tokens
        self.api_version = api_version
        self.http = http
        self.client_id: str | None = None
        self.advice = Advice()
        self._ids = itertools.count(1)
        self.generation = -1  # the token generation the last request used

    async def send(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """POST one message; every reply (the meta reply and any data messages), in order."""
        message = {"id": str(next(self._ids)), **message}
        if self.client_id is not None and message["channel"] != "/meta/handshake":
            message["clientId"] = self.client_id
        session = await self.tokens.session()
        self.generation = self.tokens.generation
        url = f"{session.instance_url}/cometd/{self.api_version}"
        timeout = self.advice.timeout_ms / 1000 + READ_SLACK
        try:
            response = await self.http.post(
                url, content=orjson.dumps([message]), timeout=timeout,
                headers={"Authorization": f"Bearer {session.access_token}", "Content-Type": "application/json"},
            )
        except httpx.TransportError as exc:
            name = type(exc).__name__
            raise TransientError(f"POST /cometd/{self.api_version} {message['channel']}: {name}") from None
        if response.status_code == 401:
            raise SessionExpired(f"POST /cometd/{self.api_version}: HTTP {response.status_code}",
                                 code="INVALID_SESSION_ID")
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(f"POST /cometd/{self.api_version}: HTTP {response.status_code}")
        if response.status_code != 200:
            raise PermanentError(f"POST /cometd/{self.api_version}: HTTP {response.status_code}")
        try:
            replies = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise TransientError(f"POST /cometd/{self.api_version}: the reply is not JSON") from None
        return [r for r in (replies if isinstance(replies, list) else [replies]) if isinstance(r, dict)]

    @staticmethod
    def meta_reply(replies: list[dict[str, Any]], channel: str) -> dict[str, Any]:
        for reply in replies:
            if reply.get("channel") == channel:
                return reply
        raise TransientError(f"no {channel} reply from the Streaming API")

    def check(self, reply: dict[str, Any]) -> None:
        """Raise the error a failed meta reply stands for: SessionExpired for 401 (log in again), else BayeuxError."""
        self.advice.update(reply.get("advice"))
        if reply.get("successful"):
            return
        code, text = error_code(reply)
        if code == 401:
            raise SessionExpired(f"Streaming API {reply.get('channel')}: {code}::{text}", code="INVALID_SESSION_ID")
        if code == 403 and "Unknown client" in text:
            self.advice.reconnect = "handshake"
        raise BayeuxError(f"Streaming API {reply.get('channel')}: {code}::{text}", code=f"BAYEUX_{code}")

    async def handshake(self) -> None:
        self.client_id = None
        self.advice = Advice()
        replies = await self.send({"channel": "/meta/handshake", "version": "1.0", "minimumVersion": "1.0",
                                   "supportedConnectionTypes": ["long-polling"]})
        reply = self.meta_reply(replies, "/meta/handshake")
        self.check(reply)
        self.client_id = str(reply["clientId"])
        # The first connect only establishes the connection (the server answers it at once).
        self.check(self.meta_reply(await self.send(self._connect_message()), "/meta/connect"))

    async def subscribe(self, channel: str, replay_id: int) -> None:
        replies = await self.send({"channel": "/meta/subscribe", "subscription": channel,
                                   "ext": {"replay": {channel: replay_id}}})
        reply = self.meta_reply(replies, "/meta/subscribe")
        if not reply.get("successful"):
            code, text = error_code(reply)
            if code == 400 and "replayId" in text:
                raise ReplayLost(channel, replay_id, f"{code}::{text}")
            if code == 400:  # no such channel, CDC not enabled for the object: a human must fix it
                raise PermanentError(f"subscribe {channel}: {code}::{text}", code="BAYEUX_SUBSCRIBE")
        self.check(reply)

    async def connect(self) -> list[dict[str, Any]]:
        """One long poll: the data messages it brought (possibly none)."""
        replies = await self.send(self._connect_message())
        self.check(self.meta_reply(replies, "/meta/connect"))
        return [r for r in replies if not str(r.get("channel", "")).startswith("/meta/")]

    async def disconnect(self) -> None:
        if self.client_id is None:
            return
        with contextlib.suppress(TransientError, PermanentError):  # an idle client is forgotten after 40 s
            await self.send({"channel": "/meta/disconnect"})
        self.client_id = None

    def _connect_message(self) -> dict[str, Any]:
        return {"channel": "/meta/connect", "connectionType": "long-polling"}


def replay_id_of(message: dict[str, Any]) -> int | None:
    event = (message.get("data") or {}).get("event") or {}
    value = event.get("replayId")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class CometdStream:
    """One channel's events, batch by batch, across re-logins and re-handshakes::

        stream = CometdStream(tokens, "/data/ContactChangeEvent", api_version="62.0")
        await stream.open(replay_id)            # ReplayLost if replay_id is past retention
        async for batch in stream.batches():    # each batch: the data messages of a long poll (or a few)
            persist(batch)                      # ask for the next batch only once this one is durable

    ``replay_from`` is the replay id of the last event of the last batch handed out (durable once the caller
    asks for more); after a lost session the stream resubscribes from it. Before any event is known (opened
    with -1) a lost session cannot be resumed exactly: ``ReplayLost`` again, so the caller catches up from
    its own watermark.
    """

    def __init__(
        self,
        tokens: TokenSource,
        channel: str,
        *,
        api_version: str,
        ca_file: Path | None = None,
        http: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_failures: int | None = None,
    ) -> None:
        self.channel = channel
        self.tokens = tokens
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(verify=ssl_context(ca_file), follow_redirects=False,
                                              timeout=httpx.Timeout(DEFAULT_CONNECT_TIMEOUT + READ_SLACK,
                                                                    connect=15.0))
        self.bayeux = BayeuxSession(tokens, api_version=api_version, http=self.http)
        self.replay_from = NEW_EVENTS
        self._sleep = sleep
        # Read when the stream is made (not when the module is): a test may lower it for the whole process.
        self.max_failures = MAX_QUIET_FAILURES if max_failures is None else max_failures
        self.reauthentications = 0
        self.handshakes = 0

    async def aclose(self) -> None:
        await self.bayeux.disconnect()
        if self._own_http:
            await self.http.aclose()

    async def open(self, replay_id: int) -> None:
        """Handshake and subscribe after ``replay_id`` (or -1 / -2). ReplayLost when it is not retained."""
        self.replay_from = replay_id
        await self._with_retries(self._resubscribe)

    async def batches(self, linger: float = 0.0, max_events: int = 2_000) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Data messages of this channel in replay order, a batch at a time; never empty.

        A batch is one long poll's events plus, for up to ``linger`` seconds after they came, the events of
        the polls that follow (at most ``max_events``): more changes per read-back query at the cost of that
        much latency. A poll still held when the linger ends is not cancelled (the server may already have
        put events in its answer); it stays in flight while the caller handles the batch and is awaited next.
        """
        pending: asyncio.Task[list[dict[str, Any]]] | None = None
        try:
            while True:
                pending = pending or asyncio.ensure_future(self._with_retries(self._poll))
                messages, pending = await pending, None
                batch = self._ours(messages)
                if not batch:
                    continue
                deadline = time.monotonic() + linger
                while len(batch) < max_events and (remaining := deadline - time.monotonic()) > 0:
                    pending = asyncio.ensure_future(self._with_retries(self._poll))
                    done, _ = await asyncio.wait({pending}, timeout=remaining)
                    if not done:
                        break
                    batch.extend(self._ours(pending.result()))
                    pending = None
                # Handed out: the caller makes it durable before it asks again (or the process ends), so a
                # re-handshake, even one the in-flight poll makes meanwhile, resubscribes after it.
                self.replay_from = max(self.replay_from, *(replay_id_of(m) or 0 for m in batch))
                yield batch
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending

    def _ours(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """This channel's events not handed out yet (a resubscribe never repeats one, but be sure)."""
        floor = self.replay_from
        return [m for m in messages if m.get("channel") == self.channel and (replay_id_of(m) or 0) > floor
                and replay_id_of(m) is not None]

    async def _resubscribe(self) -> None:
        self.handshakes += 1
        await self.bayeux.handshake()
        await self.bayeux.subscribe(self.channel, self.replay_from)

    async def _poll(self) -> list[dict[str, Any]]:
        if self.bayeux.client_id is None:
            await self._recover()
        interval = self.bayeux.advice.interval_ms
        if interval:
            await self._sleep(interval / 1000)
        return await self.bayeux.connect()

    async def _recover(self) -> None:
        """A new Bayeux client for the same subscription, from the last durable replay id."""
        if self.replay_from < 0 and self.replay_from != ALL_RETAINED:
            # -1 again would skip whatever was published while no client was connected.
            raise ReplayLost(self.channel, self.replay_from, "session lost before any event was received")
        await self._resubscribe()

    async def _with_retries(self, step: Callable[[], Awaitable[T]]) -> T:
        """Run a step (subscribe, or one long poll) until it succeeds; each step starts a new Bayeux client
        itself when the last one is gone (``_resubscribe`` always does, ``_poll`` through ``_recover``)."""
        failures = 0
        while True:
            try:
                return await step()
            except SessionExpired:
                failures += 1
                if failures > self.max_failures:
                    raise
                # The session expired or was revoked: log in again (TokenManager refreshes only if no one
                # else did); the server dropped the Bayeux client with the session, so start a new one.
                log.info("salesforce.cometd.reauthenticate", channel=self.channel, replay_from=self.replay_from)
                await self.tokens.refresh(self.bayeux.generation)
                self.reauthentications += 1
                self.bayeux.client_id = None
            except TransientError as exc:
                failures += 1
                if failures > self.max_failures:
                    raise
                if isinstance(exc, BayeuxError) and self.bayeux.advice.reconnect != "retry":
                    self.bayeux.client_id = None  # advice handshake (or none): start a new client
                log.info("salesforce.cometd.retry", channel=self.channel, error=str(exc), failures=failures)
                await self._sleep(min(30.0, 0.2 * 2**failures) * random.uniform(0.5, 1.0))
