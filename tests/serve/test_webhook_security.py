"""What `ferry serve` refuses and what it stores exactly once: forged, tampered, oversized, wrong-shop and
header-less requests get 4xx with nothing stored; a replayed delivery is acknowledged and dropped; a late,
older delivery never overwrites a newer one; a signed body that is not JSON becomes a dead letter."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from ferry.store import LetterFilter

from .world import ServeThread, World, make_world, start_serve, stop_world, wait_for

TOPIC = "customers/update"
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = make_world(tmp_path_factory.mktemp("serve-security"), customers=10, products=4, orders=6)
    try:
        yield w
    finally:
        stop_world(w)


@pytest.fixture(scope="module")
def served(world: World) -> Iterator[ServeThread]:
    server = start_serve([world.spec], world.store, world.serve_options(register=False,
                                                                         max_body_bytes=64 * 1024))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def client(world: World, served: ServeThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, verify=str(world.shop_run.ca_file), timeout=30) as c:
        yield c


def _path(world: World) -> str:
    return f"/webhooks/{world.spec.name}/shopify"


def _customer(world: World, **changes: Any) -> bytes:
    raw = dict(world.shop_records("customers")[0])
    return orjson.dumps({**raw, **changes})


def _footprint(world: World) -> tuple[int, int, int]:
    name = world.spec.name
    return (world.store.staged_count(name), world.store.outbox_count(name),
            len(world.store.find_dead_letters(LetterFilter(pipeline=name), limit=None)))


def _post(client: httpx.Client, world: World, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return client.post(_path(world), content=body, headers=headers)


def _settled(world: World) -> bool:
    name = world.spec.name
    return world.store.staged_count(name, world.store.get_mark(name, "planned_seq")) == 0 \
        and world.store.outbox_count(name) == 0


@pytest.mark.parametrize("case", ["forged", "tampered", "unsigned", "wrong_secret"])
def test_a_bad_signature_is_401_and_nothing_is_stored(world: World, client: httpx.Client, case: str) -> None:
    body = _customer(world, first_name="Mallory")
    wid = f"sec-{next(_ids)}"
    headers = world.signed(body, topic=TOPIC, webhook_id=wid)
    if case == "forged":
        headers["X-Shopify-Hmac-Sha256"] = "AAAA" + headers["X-Shopify-Hmac-Sha256"][4:]
    elif case == "tampered":
        body = body.replace(b"Mallory", b"Mallorx")
    elif case == "unsigned":
        del headers["X-Shopify-Hmac-Sha256"]
    else:
        headers = world.signed(body, topic=TOPIC, webhook_id=wid, secret="not-the-secret")
    before = _footprint(world)
    resp = _post(client, world, body, headers)
    assert resp.status_code == 401
    assert "secret" not in resp.text.lower() or "signature" in resp.text.lower()
    assert _footprint(world) == before
    assert not world.store.delivery_seen(world.spec.name, f"shopify:{wid}")


@pytest.mark.parametrize("missing", ["X-Shopify-Topic", "X-Shopify-Webhook-Id", "X-Shopify-Shop-Domain"])
def test_a_missing_header_is_refused_and_nothing_is_stored(world: World, client: httpx.Client, missing: str) -> None:
    body = _customer(world)
    headers = world.signed(body, topic=TOPIC, webhook_id=f"sec-{next(_ids)}")
    del headers[missing]
    before = _footprint(world)
    assert _post(client, world, body, headers).status_code == 400
    assert _footprint(world) == before


def test_a_delivery_from_another_shop_is_refused(world: World, client: httpx.Client, served: ServeThread) -> None:
    inbox = served.service.state.inboxes[(world.spec.name, "shopify")]
    receiver: Any = inbox.receiver
    receiver.shop = f"{world.shop.shop}.myshopify.com"  # the pipeline's shop, as `webhooks.origin` sets it
    try:
        body = _customer(world)
        headers = world.signed(body, topic=TOPIC, webhook_id=f"sec-{next(_ids)}", shop="evil.myshopify.com")
        before = _footprint(world)
        resp = _post(client, world, body, headers)
        assert resp.status_code == 403 and "evil.myshopify.com" in resp.text
        assert _footprint(world) == before
    finally:
        receiver.shop = None


def test_an_oversized_body_is_413_and_nothing_is_stored(world: World, client: httpx.Client) -> None:
    body = _customer(world, note="x" * (70 * 1024))
    headers = world.signed(body, topic=TOPIC, webhook_id=f"sec-{next(_ids)}")
    before = _footprint(world)
    assert _post(client, world, body, headers).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap holds while reading
        for i in range(0, len(body), 8192):
            yield body[i:i + 8192]

    assert client.post(_path(world), content=chunks(), headers=headers).status_code == 413
    assert _footprint(world) == before


def test_an_unknown_pipeline_or_system_is_404(world: World, client: httpx.Client) -> None:
    assert client.post("/webhooks/nope/shopify", content=b"{}").status_code == 404
    assert client.post(f"/webhooks/{world.spec.name}/woocommerce", content=b"{}").status_code == 404
    assert client.get("/healthz").json()["status"] == "ok"


def test_a_replayed_delivery_is_acknowledged_and_dropped(world: World, client: httpx.Client) -> None:
    body = _customer(world, first_name="Once", updated_at="2030-01-01T00:00:00-00:00")
    headers = world.signed(body, topic=TOPIC, webhook_id=f"sec-{next(_ids)}")
    first = _post(client, world, body, headers)
    assert first.status_code == 200 and first.json()["outcome"] == "staged"
    for _ in range(3):  # the sender's retries, or an attacker replaying a captured request
        again = _post(client, world, body, headers)
        assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    wait_for(lambda: _settled(world), 30, "the event to load")


def test_late_and_duplicate_deliveries_never_overwrite_a_newer_version(world: World, client: httpx.Client) -> None:
    key = str(world.shop_records("customers")[0]["id"])
    newer = _customer(world, first_name="Newer", updated_at="2031-06-01T00:00:02-00:00")
    older = _customer(world, first_name="Older", updated_at="2031-06-01T00:00:01-00:00")
    assert _post(client, world, newer, world.signed(newer, topic=TOPIC, webhook_id=f"sec-{next(_ids)}")
                 ).status_code == 200

    def contact() -> dict[str, Any]:
        return next((r for r in world.sf_records("Contact") if str(r["Shopify_Customer_Id__c"]) == key), {})

    wait_for(lambda: contact().get("FirstName") == "Newer", 30, "the newer version")
    stamp = contact().get("SystemModstamp")
    # The older version arrives late, and the newer one again under another delivery id (a second subscription).
    for body in (older, newer):
        resp = _post(client, world, body, world.signed(body, topic=TOPIC, webhook_id=f"sec-{next(_ids)}"))
        assert resp.status_code == 200
    wait_for(lambda: _settled(world), 30, "the late deliveries to be planned")
    assert contact().get("FirstName") == "Newer"
    assert contact().get("SystemModstamp") == stamp  # not written again at all


def test_a_signed_body_that_is_not_json_becomes_a_dead_letter(world: World, client: httpx.Client) -> None:
    body = b'{"id": 1, "first_name": '
    wid = f"sec-{next(_ids)}"
    resp = _post(client, world, body, world.signed(body, topic=TOPIC, webhook_id=wid))
    assert resp.status_code == 200 and resp.json()["outcome"] == "dead_letter"
    letter = world.store.dead_letter_for(world.spec.name, "webhook", f"shopify:{wid}")
    assert letter is not None and letter.error_code == "WEBHOOK_BODY"
    assert letter.source_payload == {"topic": TOPIC, "body": body.decode()}
