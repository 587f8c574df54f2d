"""Webhook delivery for the sandboxes: queued, signed HTTP POSTs to loopback subscribers, with retries and faults.

Each sandbox turns its changes into ``Delivery`` objects (body and headers as the real system builds them) and
hands them to a ``Dispatcher``. The dispatcher keeps one in-memory queue per subscription and sends from its
own thread and event loop, so deliveries go on whichever server threads serve the API (the WooCommerce sandbox
is often served twice, over HTTPS and plain HTTP) and never hold up an API response. Per system it follows a
``RetryPolicy`` (timeouts, which statuses count as success, the delays between retries) and calls the
sandbox's ``DeliveryHooks`` when a delivery ends, so WooCommerce can disable a failing webhook and Shopify can
remove a failing subscription.

Only loopback addresses are ever a target: sandboxes refuse any other address when a subscription is made
(``is_loopback_url``), and the dispatcher checks again before every request. Redirects are never followed and
proxy settings from the environment are ignored.

``time_scale`` multiplies every retry delay (``0.001`` turns Shopify's 4 hours into 14 seconds) for tests.
Faults are configured like the API faults (``{"seed": 1, "rules": [{"kind": "drop", "rate": 0.1}]}``), with
the kinds ``drop`` (never sent), ``duplicate`` (sent again, byte for byte, after it succeeded), ``reorder``
(held back until ``hold`` later deliveries of the same subscription went out) and ``delay`` (``delay_ms``
later). ``GET /__sandbox/webhooks/deliveries`` lists every delivery and its attempts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import random
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

STATES = ("pending", "held", "sending", "delivered", "failed", "dropped", "cancelled")
FAULT_KINDS = ("drop", "duplicate", "reorder", "delay")
log = logging.getLogger(__name__)
MAX_LOG = 10_000  # deliveries kept for the control endpoint (the oldest settled ones go first), bodies included
_SETTLED = ("delivered", "failed", "dropped", "cancelled")


# ---------------------------------------------------------------------- addresses and signatures
def is_loopback_url(url: str, schemes: Iterable[str] = ("http", "https")) -> bool:
    """True for an http(s) URL whose host is ``localhost`` or a loopback IP (127.0.0.0/8, ::1)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises ValueError for a port out of range
    except ValueError:
        return False
    if parts.scheme not in tuple(schemes) or not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def hmac_sha256_base64(body: bytes, secret: str | bytes) -> str:
    """base64(HMAC-SHA256(secret, body)): the signature Shopify and WooCommerce both send."""
    key = secret.encode() if isinstance(secret, str) else secret
    return base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode("ascii")


# ---------------------------------------------------------------------- policy and records
@dataclass(frozen=True)
class RetryPolicy:
    """How one system sends: timeouts in seconds, the delays before each retry, what counts as delivered."""

    delays: tuple[float, ...] = ()
    connect_timeout: float = 1.0
    timeout: float = 5.0
    success_from: int = 200
    success_below: int = 300

    def succeeded(self, status: int | None) -> bool:
        return status is not None and self.success_from <= status < self.success_below


def exponential_delays(retries: int, window_seconds: float) -> tuple[float, ...]:
    """``retries`` delays doubling each time and adding up to ``window_seconds`` (the first is window/(2^n - 1))."""
    if retries <= 0:
        return ()
    first = window_seconds / (2**retries - 1)
    return tuple(first * 2**k for k in range(retries))


@dataclass
class Attempt:
    number: int
    at: float  # epoch seconds when the request went out
    status: int | None = None
    error: str | None = None
    duration_ms: float = 0.0
    copy: bool = False  # a byte-for-byte repeat sent by a ``duplicate`` fault


@dataclass
class Delivery:
    """One event for one subscription. ``headers`` and ``body`` are exactly what goes on the wire."""

    subscription: str
    topic: str
    url: str
    body: bytes
    headers: dict[str, str]
    resource_id: int | None = None
    coalesce_key: str | None = None  # a pending delivery with the same key takes the newer body instead
    ping: bool = False  # sent at once, outside the queue and the faults (WooCommerce's ping on creation)
    timeout: float | None = None  # instead of the policy's total timeout
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: float = field(default_factory=time.time)
    state: str = "pending"
    attempts: list[Attempt] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    due: float = 0.0  # monotonic time of the next attempt
    hold: int = 0  # deliveries of the same subscription still to go out before a reordered one is released
    hold_until: float = 0.0
    copies: int = 0

    @property
    def retries(self) -> int:
        return sum(1 for a in self.attempts if not a.copy) - 1

    def describe(self, with_body: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "subscription": self.subscription, "topic": self.topic, "url": self.url,
            "resource_id": self.resource_id, "state": self.state, "created_at": self.created_at, "ping": self.ping,
            "faults": list(self.faults), "headers": dict(self.headers), "body_bytes": len(self.body),
            "attempts": [asdict(a) for a in self.attempts],
        }
        if with_body:
            out["body"] = self.body.decode("utf-8", "replace")
        return out


class DeliveryHooks(Protocol):
    """What a sandbox decides about its own deliveries (all called on the dispatcher's thread)."""

    def active(self, delivery: Delivery) -> bool:
        """Whether the delivery may still go out (its subscription still exists)."""
        ...

    def finalize(self, delivery: Delivery) -> None:
        """Last changes to the headers just before a request (WooCommerce's delivery id is made at send time)."""
        ...

    def settled(self, delivery: Delivery, delivered: bool) -> None:
        """The delivery ended: delivered, or failed for good (after its retries)."""
        ...


# ---------------------------------------------------------------------- faults
@dataclass
class WebhookFaultRule:
    kind: str = ""
    rate: float = 1.0
    topic: str = ""  # a substring of the topic ("orders/" or "order.updated"); "" matches every topic
    count: int | None = None
    copies: int = 1  # duplicate: extra sends
    hold: int = 1  # reorder: later deliveries to let pass first
    max_hold_ms: int = 5000  # reorder: released after this long even when nothing else came
    delay_ms: int = 0  # delay

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown webhook fault kind {self.kind!r}: choose one of {', '.join(FAULT_KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be between 0 and 1, got {self.rate}")
        if self.count is not None and self.count < 0:
            raise ValueError("count must be >= 0")
        if self.copies < 1 or self.hold < 1 or self.max_hold_ms < 0 or self.delay_ms < 0:
            raise ValueError("copies and hold must be >= 1, max_hold_ms and delay_ms >= 0")
        if self.kind == "delay" and self.delay_ms <= 0:
            raise ValueError("a delay fault needs delay_ms > 0")


_RULE_FIELDS = {f.name for f in fields(WebhookFaultRule)}


class WebhookFaults:
    """Seeded fault rules over deliveries; ``configure`` replaces, ``update`` appends rules, ``clear`` empties."""

    def __init__(self) -> None:
        self.rules: list[WebhookFaultRule] = []
        self.seed = 0
        self.rng = random.Random(0)
        self.injected: Counter[str] = Counter()

    def configure(self, config: dict[str, Any]) -> None:
        self._apply(config, merge=False)

    def update(self, config: dict[str, Any]) -> None:
        self._apply(config, merge=True)

    def clear(self) -> None:
        self.configure({})

    def _apply(self, config: dict[str, Any], *, merge: bool) -> None:
        if not isinstance(config, dict):
            raise ValueError("the fault configuration must be a JSON object")
        unknown = set(config) - {"seed", "rules", "reset_counts"}
        if unknown:
            raise ValueError(f"unknown webhook fault settings: {', '.join(sorted(unknown))}")
        rules = [self._rule(raw) for raw in config.get("rules", [])]
        self.rules = [*self.rules, *rules] if merge else rules
        if "seed" in config or not merge:
            self.seed = int(config.get("seed", 0))
            self.rng = random.Random(self.seed)
        if config.get("reset_counts"):
            self.injected.clear()

    @staticmethod
    def _rule(raw: Any) -> WebhookFaultRule:
        if not isinstance(raw, dict):
            raise ValueError(f"a fault rule must be an object, got {raw!r}")
        unknown = set(raw) - _RULE_FIELDS
        if unknown:
            raise ValueError(f"unknown webhook fault rule keys: {', '.join(sorted(unknown))}")
        return WebhookFaultRule(**raw)

    def describe(self) -> dict[str, Any]:
        return {"seed": self.seed, "rules": [asdict(r) for r in self.rules],
                "injected": dict(sorted(self.injected.items())), "fired": sum(self.injected.values())}

    def pick(self, topic: str) -> list[WebhookFaultRule]:
        """The rules that hit a new delivery of ``topic``, in order; a drop ends the draw (nothing else applies)."""
        hits = []
        for rule in self.rules:
            if rule.topic.lower() not in topic.lower() or (rule.count is not None and rule.count <= 0):
                continue
            if self.rng.random() >= rule.rate:
                continue
            if rule.count is not None:
                rule.count -= 1
            self.injected[rule.kind] += 1
            hits.append(rule)
            if rule.kind == "drop":
                break
        return hits


# ---------------------------------------------------------------------- the dispatcher
@dataclass
class _Queue:
    waiting: list[Delivery] = field(default_factory=list)  # pending and held, in arrival order
    sending: int = 0


class Dispatcher:
    """Queues and sends one system's deliveries from a background thread (started on first use).

    ``ca_files`` are the certificate authorities trusted for https:// subscribers (the sandbox's own CA, whose
    server certificate covers 127.0.0.1 and localhost, so a test receiver can reuse it). ``concurrency`` bounds
    the requests in flight per subscription (1: in order, as WooCommerce's single queue runner sends)."""

    def __init__(self, name: str, policy: RetryPolicy, hooks: DeliveryHooks, *, ca_files: Iterable[Path] = (),
                 time_scale: float = 1.0, concurrency: int = 1, user_agent: str | None = None) -> None:
        self.name = name
        self.policy = policy
        self.hooks = hooks
        self.ca_files = [Path(p) for p in ca_files]
        self.time_scale = time_scale
        self.concurrency = concurrency
        self.enabled = True
        self.user_agent = user_agent
        self.faults = WebhookFaults()
        self.log: dict[str, Delivery] = {}  # every delivery by id, oldest first
        self._queues: dict[str, _Queue] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._wake: asyncio.Event | None = None
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- settings --------------------------------------------------------------------------------------
    def configure(self, settings: dict[str, Any]) -> None:
        unknown = set(settings) - {"time_scale", "concurrency", "enabled"}
        if unknown:
            raise ValueError(f"unknown webhook settings: {', '.join(sorted(unknown))}")
        scale = float(settings.get("time_scale", self.time_scale))
        concurrency = int(settings.get("concurrency", self.concurrency))
        if not 0 <= scale <= 100 or not 1 <= concurrency <= 64:
            raise ValueError("time_scale must be in [0, 100] and concurrency in [1, 64]")
        self.time_scale, self.concurrency = scale, concurrency
        self.enabled = bool(settings.get("enabled", self.enabled))
        self._call(self._poke)

    def describe(self) -> dict[str, Any]:
        states = Counter(d.state for d in list(self.log.values()))
        return {"system": self.name, "enabled": self.enabled, "time_scale": self.time_scale,
                "concurrency": self.concurrency,
                "policy": {**asdict(self.policy), "delays": list(self.policy.delays)},
                "deliveries": {s: states.get(s, 0) for s in STATES}, "faults": self.faults.describe()}

    # -- entry points (any thread) ---------------------------------------------------------------------
    def enqueue(self, delivery: Delivery) -> None:
        """Queue a delivery (thread-safe); faults are drawn now, so a dropped one is logged as ``dropped``."""
        if not self.enabled:
            return
        self._ensure_started()
        self._call(self._add, delivery)

    async def send_now(self, delivery: Delivery) -> Delivery:
        """Send one request at once, outside the queues and faults, and wait for its answer (a ping)."""
        self._ensure_started()
        assert self._loop is not None
        delivery.ping = True
        future = asyncio.run_coroutine_threadsafe(self._ping(delivery), self._loop)
        await asyncio.wrap_future(future)
        return delivery

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is queued, held or in flight (tests); False on timeout."""
        if self._loop is None:
            return True
        future: Future[bool] = asyncio.run_coroutine_threadsafe(self._wait_idle(timeout), self._loop)
        return future.result(timeout + 1)

    def deliveries(self, *, topic: str | None = None, state: str | None = None, subscription: str | None = None,
                   with_body: bool = False) -> list[dict[str, Any]]:
        found = [d for d in list(self.log.values()) if (topic is None or d.topic == topic)
                 and (state is None or d.state == state) and (subscription is None or d.subscription == subscription)]
        return [d.describe(with_body) for d in found]

    def clear_log(self) -> int:
        """Forget settled deliveries; returns how many."""
        with self._lock:
            done = [k for k, d in self.log.items() if d.state in _SETTLED]
            for key in done:
                del self.log[key]
        return len(done)

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        self._loop = self._thread = None

    # -- the loop --------------------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            self._loop = loop
            self._thread = threading.Thread(target=run, name=f"webhooks-{self.name}", daemon=True)
            self._thread.start()
            ready.wait(5)
            asyncio.run_coroutine_threadsafe(self._start(), loop).result(5)

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(fn, *args)

    async def _start(self) -> None:
        self._wake = asyncio.Event()
        self._client = httpx.AsyncClient(verify=self._ssl_context(), follow_redirects=False, trust_env=False,
                                         headers={"User-Agent": self.user_agent} if self.user_agent else None)
        self._tasks.add(asyncio.get_running_loop().create_task(self._run()))

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        for ca in self.ca_files:
            if ca.exists():
                context.load_verify_locations(cafile=str(ca))
        return context

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _add(self, delivery: Delivery) -> None:
        queue = self._queues.setdefault(delivery.subscription, _Queue())
        if delivery.coalesce_key is not None:
            for waiting in queue.waiting:
                if waiting.coalesce_key == delivery.coalesce_key and waiting.state == "pending" \
                        and not waiting.attempts:
                    waiting.body, waiting.headers = delivery.body, delivery.headers
                    return
        self._remember(delivery)
        now = time.monotonic()
        delivery.due = now
        for rule in self.faults.pick(delivery.topic):
            delivery.faults.append(rule.kind)
            if rule.kind == "drop":
                delivery.state = "dropped"
                return
            if rule.kind == "delay":
                delivery.due = now + rule.delay_ms / 1000
            elif rule.kind == "reorder":
                delivery.state, delivery.hold = "held", rule.hold
                delivery.hold_until = now + rule.max_hold_ms / 1000
            elif rule.kind == "duplicate":
                delivery.copies += rule.copies
        queue.waiting.append(delivery)
        self._poke()

    def _remember(self, delivery: Delivery) -> None:
        with self._lock:
            self.log[delivery.id] = delivery
            if len(self.log) > MAX_LOG + MAX_LOG // 10:  # trim in batches: one pass per thousand deliveries
                excess = len(self.log) - MAX_LOG
                for key in [k for k, d in self.log.items() if d.state in _SETTLED][:excess]:
                    del self.log[key]

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            now = time.monotonic()
            self._start_due(now)
            wait = self._next_wake(now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def _start_due(self, now: float) -> None:
        for queue in self._queues.values():
            for delivery in list(queue.waiting):
                if delivery.state == "held" and (delivery.hold <= 0 or now >= delivery.hold_until):
                    delivery.state = "pending"
                if queue.sending >= self.concurrency:
                    break
                if delivery.state != "pending" or delivery.due > now:
                    continue
                queue.waiting.remove(delivery)
                queue.sending += 1
                self._release_held(queue)
                task = asyncio.get_running_loop().create_task(self._attempt(queue, delivery))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _release_held(queue: _Queue) -> None:
        """A delivery went out: reordered ones waiting behind it count it."""
        for waiting in queue.waiting:
            if waiting.state == "held":
                waiting.hold -= 1

    def _next_wake(self, now: float) -> float | None:
        times = [d.due if d.state == "pending" else d.hold_until
                 for q in self._queues.values() if q.sending < self.concurrency for d in q.waiting]
        return max(0.0, min(times) - now) if times else None

    async def _attempt(self, queue: _Queue, delivery: Delivery) -> None:
        try:
            if not self.hooks.active(delivery):
                delivery.state = "cancelled"
                return
            delivery.state = "sending"
            self.hooks.finalize(delivery)
            attempt = await self._post(delivery, len(delivery.attempts) + 1)
            if self.policy.succeeded(attempt.status):
                await self._send_copies(delivery)
                delivery.state = "delivered"
                self.hooks.settled(delivery, True)
            elif delivery.retries < len(self.policy.delays):
                delivery.state = "pending"
                delivery.due = time.monotonic() + self.policy.delays[delivery.retries] * self.time_scale
                queue.waiting.append(delivery)
            else:
                delivery.state = "failed"
                self.hooks.settled(delivery, False)
        except Exception:  # a sandbox hook's bug must not stop the sender; the delivery is marked and logged
            log.exception("webhook delivery %s to %s", delivery.id, delivery.url)
            if delivery.state == "sending":
                delivery.state = "failed"
        finally:
            queue.sending -= 1
            self._poke()

    async def _send_copies(self, delivery: Delivery) -> None:
        for _ in range(delivery.copies):
            copy = await self._post(delivery, len(delivery.attempts) + 1)
            copy.copy = True

    async def _post(self, delivery: Delivery, number: int) -> Attempt:
        attempt = Attempt(number=number, at=time.time())
        delivery.attempts.append(attempt)
        started = time.perf_counter()
        if not is_loopback_url(delivery.url):  # refused at subscription time too; never leave the machine
            attempt.error = "refused: not a loopback address"
            return attempt
        assert self._client is not None
        total = delivery.timeout or self.policy.timeout
        timeout = httpx.Timeout(total, connect=min(total, self.policy.connect_timeout))
        try:
            response = await self._client.post(delivery.url, content=delivery.body, headers=delivery.headers,
                                               timeout=timeout)
            attempt.status = response.status_code
        except httpx.HTTPError as exc:
            attempt.error = f"{type(exc).__name__}: {exc}"[:300]
        attempt.duration_ms = round((time.perf_counter() - started) * 1000, 3)
        return attempt

    async def _ping(self, delivery: Delivery) -> None:
        self._remember(delivery)
        delivery.state = "sending"
        attempt = await self._post(delivery, 1)
        delivery.state = "delivered" if attempt.status == 200 else "failed"

    async def _wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while any(q.waiting or q.sending for q in self._queues.values()):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True


# ---------------------------------------------------------------------- control routes
def install_routes(app: FastAPI, dispatcher: Dispatcher) -> None:
    """``/__sandbox/webhooks`` (settings and counts; PATCH changes ``time_scale``, ``concurrency``, ``enabled``),
    ``/__sandbox/webhooks/deliveries`` (GET lists, filters ``topic``, ``state``, ``subscription``, ``body=1``;
    DELETE forgets the settled ones) and ``/__sandbox/webhooks/faults`` (GET, POST replaces, PATCH merges,
    DELETE clears)."""

    def answer(body: Any, status: int = 200) -> Response:
        return Response(orjson.dumps(body), status, media_type="application/json")

    async def settings() -> Response:
        return answer(dispatcher.describe())

    async def change(request: Request) -> Response:
        try:
            dispatcher.configure(orjson.loads(await request.body() or b"{}"))
        except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
            return answer({"error": str(exc)}, 400)
        return answer(dispatcher.describe())

    async def listing(request: Request) -> Response:
        params = request.query_params
        rows = dispatcher.deliveries(topic=params.get("topic"), state=params.get("state"),
                                     subscription=params.get("subscription"),
                                     with_body=params.get("body") in ("1", "true"))
        return answer({"deliveries": rows, "count": len(rows)})

    async def forget() -> Response:
        return answer({"cleared": dispatcher.clear_log()})

    def fault_handler(apply: Callable[[dict[str, Any]], None]) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            try:
                apply(orjson.loads(await request.body() or b"{}"))
            except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
                return answer({"error": str(exc)}, 400)
            return answer(dispatcher.faults.describe())

        return handler

    async def get_faults() -> Response:
        return answer(dispatcher.faults.describe())

    async def clear_faults() -> Response:
        dispatcher.faults.clear()
        return answer(dispatcher.faults.describe())

    app.add_api_route("/__sandbox/webhooks", settings, methods=["GET"])
    app.add_api_route("/__sandbox/webhooks", change, methods=["PATCH"])
    app.add_api_route("/__sandbox/webhooks/deliveries", listing, methods=["GET"])
    app.add_api_route("/__sandbox/webhooks/deliveries", forget, methods=["DELETE"])
    app.add_api_route("/__sandbox/webhooks/faults", get_faults, methods=["GET"])
    app.add_api_route("/__sandbox/webhooks/faults", fault_handler(dispatcher.faults.configure), methods=["POST"])
    app.add_api_route("/__sandbox/webhooks/faults", fault_handler(dispatcher.faults.update), methods=["PATCH"])
    app.add_api_route("/__sandbox/webhooks/faults", clear_faults, methods=["DELETE"])
