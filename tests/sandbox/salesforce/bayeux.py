"""A minimal Bayeux 1.0 long-polling client, written from the Bayeux specification (docs.cometd.org,
"The Bayeux Protocol" §§ 3-5), not from the sandbox's server code: used where a test must see the raw
messages (errors, advice, the exact event shape). The real-client proof is test_streaming_client.py.
"""

from __future__ import annotations

import itertools
from typing import Any

import requests


class BayeuxError(AssertionError):
    pass


class Bayeux:
    def __init__(self, session: requests.Session, url: str, token: str | None, *, timeout: float = 30) -> None:
        self.session = session
        self.url = url
        self.token = token
        self.timeout = timeout
        self.client_id: str | None = None
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []  # every non-meta message received, in arrival order

    def send(self, *messages: dict[str, Any]) -> list[dict[str, Any]]:
        """POST one batch (a JSON array); return the replies to meta channels, keep data messages."""
        batch = []
        for m in messages:
            m = {"id": str(next(self._ids)), **m}
            if self.client_id and m["channel"] != "/meta/handshake":
                m["clientId"] = self.client_id
            batch.append(m)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        response = self.session.post(self.url, json=batch, headers=headers, timeout=self.timeout)
        response.raise_for_status()
        replies = []
        for message in response.json():
            if str(message.get("channel", "")).startswith("/meta/"):
                replies.append(message)
            else:
                self.events.append(message)
        return replies

    def handshake(self, **ext: Any) -> dict[str, Any]:
        message: dict[str, Any] = {"channel": "/meta/handshake", "version": "1.0", "minimumVersion": "1.0",
                                   "supportedConnectionTypes": ["long-polling"]}
        if ext:
            message["ext"] = ext
        reply = self.send(message)[0]
        if reply.get("successful"):
            self.client_id = reply["clientId"]
        return reply

    def connect(self) -> dict[str, Any]:
        return self.send({"channel": "/meta/connect", "connectionType": "long-polling"})[0]

    def subscribe(self, channel: str, replay: int | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {"channel": "/meta/subscribe", "subscription": channel}
        if replay is not None:
            message["ext"] = {"replay": {channel: replay}}
        return self.send(message)[0]

    def disconnect(self) -> dict[str, Any]:
        return self.send({"channel": "/meta/disconnect"})[0]

    def open(self, channel: str, replay: int | None = None) -> None:
        """Handshake, first connect, subscribe; raise if the server refuses any step."""
        for step in (self.handshake, self.connect, lambda: self.subscribe(channel, replay)):
            reply = step()
            if not reply.get("successful"):
                raise BayeuxError(reply)

    def poll(self, count: int, max_connects: int = 20) -> list[dict[str, Any]]:
        """Connect until at least `count` events arrived (bounded), return them all."""
        for _ in range(max_connects):
            if len(self.events) >= count:
                break
            reply = self.connect()
            if not reply.get("successful"):
                raise BayeuxError(reply)
        return self.events
