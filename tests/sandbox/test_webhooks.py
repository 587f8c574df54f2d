"""The shared delivery component: loopback rule, backoff schedule, fault rules, queue order and the send-time check."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.sandbox.webhooks import (
    Delivery,
    Dispatcher,
    RetryPolicy,
    WebhookFaults,
    exponential_delays,
    hmac_sha256_base64,
    is_loopback_url,
)
from tests.sandbox.receiver import Receiver, serve_receiver


class Hooks:
    def __init__(self) -> None:
        self.outcomes: list[tuple[str, bool]] = []

    def active(self, delivery: Delivery) -> bool:
        return True

    def finalize(self, delivery: Delivery) -> None:
        delivery.headers["X-Sent"] = "yes"

    def settled(self, delivery: Delivery, delivered: bool) -> None:
        self.outcomes.append((delivery.id, delivered))


@pytest.mark.parametrize(("url", "ok"), [
    ("http://127.0.0.1:8080/x", True), ("https://127.8.9.1/x", True), ("https://[::1]:9/x", True),
    ("http://localhost:1/x", True), ("https://example.com/x", False), ("http://10.0.0.1/x", False),
    ("http://0.0.0.0:80/", False), ("ftp://127.0.0.1/x", False), ("http://127.0.0.1:99999/", False),
    ("http://localhost.example.com/", False), ("pubsub://project:topic", False), ("", False),
])
def test_only_loopback_http_urls_are_targets(url: str, ok: bool) -> None:
    assert is_loopback_url(url) is ok


def test_exponential_delays_double_and_fill_the_window() -> None:
    delays = exponential_delays(8, 4 * 3600)
    assert len(delays) == 8 and abs(sum(delays) - 14400) < 1e-6
    assert all(b == pytest.approx(2 * a) for a, b in itertools.pairwise(delays))
    assert exponential_delays(0, 100) == ()


def test_signature_is_base64_hmac_sha256() -> None:
    # RFC 4231 test case 2, base64 of the digest
    digest = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    expected = base64.b64encode(bytes.fromhex(digest)).decode()
    assert hmac_sha256_base64(b"what do ya want for nothing?", "Jefe") == expected


def test_fault_rules_are_validated_and_seeded() -> None:
    faults = WebhookFaults()
    for bad in ({"rules": [{"kind": "explode"}]}, {"rules": [{"kind": "drop", "rate": 2}]},
                {"rules": [{"kind": "delay"}]}, {"rules": [{"kind": "drop", "path": "x"}]}, {"speed": 1}):
        with pytest.raises(ValueError):
            faults.configure(bad)
    faults.configure({"seed": 4, "rules": [{"kind": "drop", "rate": 0.5, "topic": "orders/"}]})
    first = [bool(faults.pick("orders/create")) for _ in range(20)]
    assert not faults.pick("customers/update") and 0 < sum(first) < 20
    faults.configure({"seed": 4, "rules": [{"kind": "drop", "rate": 0.5, "topic": "orders/"}]})
    assert [bool(faults.pick("orders/create")) for _ in range(20)] == first


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with serve_receiver(tmp_path, plain_http=True) as rec:
        yield rec


def make(receiver: Receiver, n: int, url: str | None = None) -> Delivery:
    return Delivery(subscription="s1", topic=f"thing/{n}", url=url or f"{receiver.url}/{n}", body=b"%d" % n,
                    headers={"Content-Type": "application/json"})


def test_in_order_but_for_a_delay_fault_and_a_reorder_released_by_time(receiver: Receiver) -> None:
    hooks = Hooks()
    dispatcher = Dispatcher("t", RetryPolicy(), hooks)
    try:
        dispatcher.faults.configure({"rules": [
            {"kind": "reorder", "topic": "thing/0", "hold": 5, "max_hold_ms": 300},
            {"kind": "delay", "topic": "thing/1", "delay_ms": 100}]})
        for n in range(5):
            dispatcher.enqueue(make(receiver, n))
        assert dispatcher.wait_idle(5)
        # 0 waits for 5 later deliveries, only 4 come: released after 300 ms; 1 goes 100 ms late; the rest in order.
        assert [r.path for r in receiver.requests] == ["/2", "/3", "/4", "/1", "/0"]
        assert all(r.headers["x-sent"] == "yes" for r in receiver.requests)
        assert len(hooks.outcomes) == 5 and all(ok for _, ok in hooks.outcomes)
    finally:
        dispatcher.close()


def test_a_non_loopback_target_is_never_contacted(receiver: Receiver) -> None:
    hooks = Hooks()
    dispatcher = Dispatcher("t", RetryPolicy(delays=(0.0, 0.0)), hooks)
    try:
        dispatcher.enqueue(make(receiver, 1, url="http://203.0.113.9/hook"))
        assert dispatcher.wait_idle(5)
        [delivery] = dispatcher.deliveries()
        assert delivery["state"] == "failed" and len(delivery["attempts"]) == 3
        assert all(a["error"] == "refused: not a loopback address" and a["status"] is None
                   for a in delivery["attempts"])
    finally:
        dispatcher.close()


def test_disabled_dispatch_sends_nothing_and_settings_are_checked(receiver: Receiver) -> None:
    dispatcher = Dispatcher("t", RetryPolicy(), Hooks())
    try:
        with pytest.raises(ValueError):
            dispatcher.configure({"concurrency": 0})
        with pytest.raises(ValueError):
            dispatcher.configure({"speed": 2})
        dispatcher.configure({"enabled": False})
        dispatcher.enqueue(make(receiver, 1))
        assert dispatcher.wait_idle(2) and receiver.requests == [] and dispatcher.deliveries() == []
    finally:
        dispatcher.close()
