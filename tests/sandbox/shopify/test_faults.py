"""Fault injection in the Shopify sandbox: 5xx, 429 bursts with Retry-After, dropped connections, hangs.

Each kind is checked on the wire with httpx, and ferry's own Shopify source is shown to read a whole
store exactly once through all of them at once.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import httpx
import pytest

from ferry.connectors.shopify import ShopifyConfig, ShopifySource

from .conftest import Served, _serve


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(
        tmp_path_factory.mktemp("shopify-faults"),
        customers=120,
        products=5,
        orders=5,
        bucket_size=100_000,
        leak_rate=1000.0,
    )


@pytest.fixture
def http(faulty: Served) -> Iterator[httpx.Client]:
    ctx = ssl.create_default_context(cafile=str(faulty.running.ca_file))
    with httpx.Client(verify=ctx, timeout=5, headers={"X-Shopify-Access-Token": faulty.token}) as client:
        yield client
        client.delete(f"{faulty.url}/__sandbox/faults")


def _configure(http: httpx.Client, served: Served, config: dict[str, object]) -> dict[str, object]:
    resp = http.post(f"{served.url}/__sandbox/faults", json=config)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_status_faults_answer_with_shopify_error_bodies_and_stop_at_count(faulty: Served, http: httpx.Client) -> None:
    _configure(http, faulty, {"rules": [{"kind": "503", "rate": 1.0, "count": 2}]})
    got = [http.get(f"{faulty.api}/customers/count.json") for _ in range(3)]
    assert [r.status_code for r in got] == [503, 503, 200]
    assert got[0].json() == {"errors": "Service Unavailable"}
    described = http.get(f"{faulty.url}/__sandbox/faults").json()
    assert described["injected"] == {"503": 2}


def test_a_429_burst_lasts_its_length_and_says_when_to_retry(faulty: Served, http: httpx.Client) -> None:
    _configure(http, faulty, {"rules": [{"kind": "429", "rate": 1.0, "count": 1, "burst": 3, "retry_after": 2}]})
    got = [http.get(f"{faulty.api}/customers/count.json") for _ in range(4)]
    assert [r.status_code for r in got] == [429, 429, 429, 200]
    assert got[0].headers["Retry-After"] == "2.0"
    assert "Exceeded 2 calls per second" in got[0].json()["errors"]


def test_a_reset_drops_the_connection_mid_response(faulty: Served, http: httpx.Client) -> None:
    _configure(http, faulty, {"rules": [{"kind": "reset", "rate": 1.0, "count": 1, "path": "customers"}]})
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        http.get(f"{faulty.api}/customers.json")
    assert http.get(f"{faulty.api}/customers.json").status_code == 200
    assert http.get(f"{faulty.url}/__sandbox/faults").json()["injected"]["reset"] == 1


def test_a_timeout_fault_hangs_past_the_client_timeout(faulty: Served, http: httpx.Client) -> None:
    _configure(http, faulty, {"rules": [{"kind": "timeout", "hold_seconds": 1.0, "rate": 1.0, "count": 1}]})
    with pytest.raises(httpx.ReadTimeout):
        http.get(f"{faulty.api}/customers/count.json", timeout=0.3)
    assert http.get(f"{faulty.url}/__sandbox/faults").json()["injected"]["timeout"] == 1


def test_bad_fault_configuration_is_refused(faulty: Served, http: httpx.Client) -> None:
    for bad in (
        {"rules": [{"kind": "503", "rate": 2}]},
        {"rules": [{"status": 200}]},
        {"rules": [{"kind": "503", "nonsense": 1}]},
        {"lock_row_rate": 0.1},
    ):
        resp = http.post(f"{faulty.url}/__sandbox/faults", json=bad)
        assert resp.status_code == 400, bad
    assert http.delete(f"{faulty.url}/__sandbox/faults").json()["rules"] == []


async def test_ferry_reads_every_record_once_through_every_fault_kind(faulty: Served, http: httpx.Client) -> None:
    described = _configure(
        http,
        faulty,
        {
            "seed": 4,
            "rules": [
                {"kind": "timeout", "hold_seconds": 1.5, "rate": 0.1, "count": 1},
                {"kind": "reset", "rate": 0.15, "count": 2},
                {"kind": "502", "rate": 0.15, "count": 2},
                {"kind": "429", "rate": 0.2, "retry_after": 0.2, "burst": 2, "count": 1},
            ],
        },
    )
    assert len(described["rules"]) == 4  # type: ignore[arg-type]
    config = ShopifyConfig(
        system="shopify",
        url=faulty.url,
        access_token=faulty.token,
        ca_file=faulty.running.ca_file,
        page_size=10,
        timeout_seconds=0.5,
        api="rest",  # REST pages under faults (the GraphQL read's are in tests/connectors/shopify)
    )
    ids: list[int] = []
    async with ShopifySource(config) as source:
        async for page in source.read_pages("customers"):
            ids += [r["id"] for r in page.records]
    fired = http.get(f"{faulty.url}/__sandbox/faults").json()["injected"]
    assert sum(fired.values()) >= 3, fired
    assert sorted(ids) == sorted(r["id"] for r in faulty.sandbox.store.records("customers"))
    assert len(ids) == len(set(ids))


def test_the_cli_fault_flags_configure_the_shopify_sandbox() -> None:
    """`ferry sandbox shopify --fault ...` builds its rules with the shared parser; a Salesforce-only key left
    empty (``body``) must not reach the Shopify sandbox, which refuses keys it does not know."""
    from ferry.cli.serve import fault_config
    from ferry.sandbox.shopify.faults import Faults

    faults = Faults()
    config = fault_config(["latency:1,ms=150", "503:0.1,count=2"], seed=7)
    assert config is not None
    faults.configure(config)
    assert [(r.kind, r.latency_ms) for r in faults.rules] == [("latency", 150), ("503", 0)]
