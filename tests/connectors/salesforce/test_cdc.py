"""Change Data Capture consumed over CometD from the Salesforce sandbox (HTTPS): live events become full
records staged with their replay id; a restart resumes from the staged replay id; gap and overflow events,
an expired replay id and a lost CometD client are caught up; a session expiring mid-stream loses nothing."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from ferry.connectors.salesforce.cdc import channel_for
from ferry.errors import PermanentError
from ferry.sandbox.salesforce.cdc import OVERFLOW_THRESHOLD, RETENTION_SECONDS
from ferry.store.sqlite import Store

from .cdc_harness import Durable, Writer, change, change_source, consume
from .conftest import Org, start_org


@pytest.fixture(scope="module")
def _cdc_org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Org]:
    # a short long poll: a stopped consumer's held connect ends soon (the org holds it 110 s)
    org, running = start_org(tmp_path_factory.mktemp("sf-cdc"), streaming_timeout_seconds=1.0)
    yield org
    running.stop()


@pytest.fixture
def org(_cdc_org: Org) -> Iterator[Org]:
    _cdc_org.sandbox.reset()
    _cdc_org.sandbox.faults.configure({})
    yield _cdc_org
    config = _cdc_org.sandbox.cdc.config
    config.retention_seconds, config.max_events = RETENTION_SECONDS, 100_000
    config.overflow_threshold, config.gap_next = OVERFLOW_THRESHOLD, 0


@pytest.fixture
async def writer(org: Org) -> Writer:
    w = Writer(org.config())
    yield w  # type: ignore[misc]
    await w.aclose()


def test_channels() -> None:
    assert channel_for("Contact") == "/data/ContactChangeEvent"
    assert channel_for("Invoice__c") == "/data/Invoice__ChangeEvent"


async def test_live_events_arrive_as_full_records_with_who_changed_them(org: Org, writer: Writer,
                                                                        tmp_path: Path) -> None:
    durable = Durable(tmp_path)
    ids: list[str] = []

    async def edits() -> None:
        ids.append(await writer.create("Live", FirstName="Ada", Email="ada@example.com"))
        await writer.update_as_someone_else(ids[0], Phone="555-0100")  # the event carries Phone only

    async with change_source(org) as source:
        # (the CREATE's read-back may already show the Phone: records are read as they are now)
        await consume(source, durable, lambda: bool(ids) and ids[0] in durable.records
                      and change(durable.records[ids[0]])["kind"] == "update", during=edits)
        queries = source.client.api_calls
    record = durable.records[ids[0]]
    # the UPDATE event had only Phone: the record was read back whole
    assert record["Phone"] == "555-0100"
    assert (record["FirstName"], record["LastName"], record["Email"]) == ("Ada", "Live", "ada@example.com")
    info = change(record)
    assert info["kind"] == "update" and "client=ferry" not in info["origin"]
    assert info["user"].startswith("005") and info["committed_at"].endswith("Z") and info["transaction"]
    state = durable.state()
    assert state is not None and state["replay_id"] == int(info["position"])
    assert sum(queries.values()) <= durable.pages  # one SOQL read per micro-batch at most
    assert durable.live_duplicates() == []


async def test_ferry_s_own_writes_are_marked_by_their_origin(org: Org, writer: Writer, tmp_path: Path) -> None:
    durable = Durable(tmp_path)
    ids: list[str] = []

    async def edits() -> None:
        ids.append(await writer.create("Echo"))

    async with change_source(org) as source:
        await consume(source, durable, lambda: bool(ids) and ids[0] in durable.records, during=edits)
    info = change(durable.records[ids[0]])
    assert info["kind"] == "create" and info["origin"].endswith(";client=ferry")


async def test_a_burst_is_read_back_in_few_queries_and_deletes_become_tombstones(org: Org, writer: Writer,
                                                                                 tmp_path: Path) -> None:
    durable = Durable(tmp_path)
    ids: list[str] = []

    async def edits() -> None:
        ids.extend(await writer.composite_create([f"B{i}" for i in range(150)]))
        await writer.delete(ids[0])

    async with change_source(org) as source:
        await consume(source, durable, lambda: len(ids) == 150 and durable.records.get(ids[0], {}).get("IsDeleted")
                      is True and all(i in durable.records for i in ids), during=edits)
        calls = sum(source.client.api_calls.values())
    assert calls <= 2, calls  # 150 creates in one transaction arrive in one long poll: one IN (...) read
    tomb = durable.records[ids[0]]
    assert tomb["IsDeleted"] is True and change(tomb)["kind"] == "delete"


async def test_restart_resumes_from_the_staged_replay_id_none_lost_none_repeated(org: Org, writer: Writer,
                                                                                tmp_path: Path) -> None:
    durable = Durable(tmp_path)
    first: list[str] = []

    async def first_edits() -> None:
        for i in range(12):
            first.append(await writer.create(f"R{i}"))

    async with change_source(org) as source:  # stops (as a crash would) after the first few records
        await consume(source, durable, lambda: len(durable.records) >= 3, during=first_edits)
    stopped_at = durable.state()
    assert stopped_at is not None and stopped_at["replay_id"] is not None
    later = [await writer.create(f"L{i}") for i in range(8)]  # while nobody listens
    everything = first + later
    async with change_source(org) as source:
        await consume(source, durable, lambda: all(i in durable.records for i in everything))
        assert source.catch_ups == 0  # resumed by replay id, not by a catch-up read
    assert durable.live_duplicates() == []
    assert sorted(durable.records) == sorted(everything)


async def test_gap_events_are_read_back_by_id(org: Org, writer: Writer, tmp_path: Path) -> None:
    durable = Durable(tmp_path)
    ids: list[str] = []

    async def edits() -> None:
        ids.append(await writer.create("Gap", Email="gap@example.com"))
        org.sandbox.cdc.config.gap_next = 2  # the org cannot render the next two changes
        await writer.update(ids[0], Phone="555-0199")
        ids.append(await writer.create("Gap2", Email="gap2@example.com"))

    async with change_source(org) as source:
        await consume(source, durable, lambda: len(ids) == 2 and ids[1] in durable.records
                      and durable.records[ids[0]].get("Phone") == "555-0199", during=edits)
    assert change(durable.records[ids[0]])["kind"] == "gap_update"
    assert change(durable.records[ids[1]])["kind"] == "gap_create"
    assert durable.records[ids[1]]["Email"] == "gap2@example.com"


async def test_an_overflow_event_triggers_a_catch_up_read(org: Org, writer: Writer, tmp_path: Path) -> None:
    durable = Durable(tmp_path)
    ids: list[str] = []

    async def edits() -> None:
        org.sandbox.cdc.config.overflow_threshold = 4
        ids.extend(await writer.composite_create([f"O{i}" for i in range(10)]))  # 4 events + GAP_OVERFLOW
        ids.append(await writer.create("after overflow"))

    async with change_source(org) as source:
        await consume(source, durable, lambda: len(ids) == 11 and all(i in durable.records for i in ids),
                      during=edits)
        assert source.catch_ups == 1
    kinds = {change(durable.records[i])["kind"] for i in ids[4:10]}
    assert kinds == {"catch_up"}  # the six the overflow event could not name, found by the watermark read
    state = durable.state()
    assert state is not None and state["replay_id"] is not None  # live again after the catch-up


async def test_an_expired_replay_id_catches_up_by_watermark(org: Org, writer: Writer, tmp_path: Path) -> None:
    durable = Durable(tmp_path)
    ids: list[str] = []

    async def edits() -> None:
        ids.append(await writer.create("E0"))

    async with change_source(org) as source:
        await consume(source, durable, lambda: bool(ids) and ids[0] in durable.records, during=edits)
    saved = durable.state()
    assert saved is not None and isinstance(saved["replay_id"], int)
    missed = [await writer.create(f"E{i}") for i in range(1, 7)]
    org.sandbox.cdc.config.max_events = 2  # the org drops the oldest events: the saved replay id is gone
    org.sandbox.cdc.bus.prune()
    assert not org.sandbox.cdc.bus.has_replay_id(saved["replay_id"])
    async with change_source(org) as source:
        await consume(source, durable, lambda: all(i in durable.records for i in missed))
        assert source.catch_ups == 1
    assert {change(durable.records[i])["kind"] for i in missed[:4]} == {"catch_up"}
    after = [await writer.create("E-live")]
    async with change_source(org) as source:  # the catch-up left a position that resumes without loss
        await consume(source, durable, lambda: after[0] in durable.records)


async def test_a_lost_cometd_client_resubscribes_from_the_last_staged_replay_id(org: Org, writer: Writer,
                                                                              tmp_path: Path) -> None:
    durable = Durable(tmp_path)
    ids: list[str] = []

    async def edits() -> None:
        ids.append(await writer.create("K0"))
        while ids[0] not in durable.records:
            await asyncio.sleep(0.05)
        org.sandbox.streaming.clients.clear()  # the server forgets the client: 403::Unknown client
        ids.extend([await writer.create(f"K{i}") for i in range(1, 5)])

    async with change_source(org) as source:
        await consume(source, durable, lambda: len(ids) == 5 and all(i in durable.records for i in ids),
                      during=edits)
        assert source.catch_ups == 0
    assert durable.live_duplicates() == []


async def test_session_expiry_mid_stream_reauthenticates_without_loss(tmp_path: Path) -> None:
    org, running = start_org(tmp_path / "org", session_ttl_seconds=2.0, streaming_timeout_seconds=0.5)
    try:
        writer = Writer(org.config())
        durable = Durable(tmp_path)
        ids: list[str] = []

        async def edits() -> None:
            ids.extend([await writer.create(f"S{i}") for i in range(3)])
            await asyncio.sleep(2.5)  # the session expires: the next connect is 401::Authentication invalid
            ids.extend([await writer.create(f"T{i}") for i in range(3)])

        async with change_source(org) as source:
            await consume(source, durable, lambda: len(ids) == 6 and all(i in durable.records for i in ids),
                          during=edits)
            assert source.client.auth.logins >= 2  # logged in again
            assert source.catch_ups == 0  # and resumed from the replay id
        assert durable.live_duplicates() == []
        await writer.aclose()
    finally:
        running.stop()


async def test_a_session_revoked_between_pages_resumes_from_the_replay_id(org: Org, writer: Writer,
                                                                          tmp_path: Path) -> None:
    """Deterministic: the consumer's session dies while it stages a page, and changes land before it polls again
    (a resubscribe with -1 instead of the staged replay id would lose them)."""
    durable = Durable(tmp_path)
    ids: list[str] = []
    revoked = False

    async with change_source(org) as source:
        async def kill_session_then_write(page: object) -> None:
            nonlocal revoked
            if not revoked and ids and ids[0] in durable.records:
                revoked = True
                session = await source.client.auth.session()
                assert org.sandbox.state.oauth.revoke(session.access_token)
                ids.extend([await writer.create(f"V{i}") for i in range(1, 4)])

        async def first() -> None:
            ids.append(await writer.create("V0"))

        await consume(source, durable, lambda: len(ids) == 4 and all(i in durable.records for i in ids),
                      during=first, on_page=kill_session_then_write)
        assert revoked and source.client.auth.logins == 2 and source.catch_ups == 0
    assert durable.live_duplicates() == []


def _state(state_dir: Path) -> dict[str, object] | None:
    store = Store(state_dir / "state.db")
    try:
        return store.read_state("sf-cdc-kill", "Contact")
    finally:
        store.close()


def _staged(state_dir: Path) -> list[dict[str, object]]:
    store = Store(state_dir / "state.db")
    try:
        return [orjson.loads(r.payload) | {"_version": r.version}
                for chunk in store.staged("sf-cdc-kill", ["Contact"]) for r in chunk]
    finally:
        store.close()


async def test_sigkilled_consumer_restarts_from_the_staged_replay_id(org: Org, writer: Writer,
                                                                     tmp_path: Path) -> None:
    """A real process, SIGKILLed twice while changes stream in: every change ends staged, and no event that was
    already durable is handed out again."""
    config = tmp_path / "sf.json"
    config.write_bytes(orjson.dumps(org.config().model_dump(mode="json")))
    state_dir = tmp_path / "consumer"
    state_dir.mkdir()

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, str(Path(__file__).with_name("cdc_consumer.py")), str(config),
                                 str(state_dir)], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    async def wait_for(check: Callable[[list[dict[str, object]]], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (state_dir / "state.db").exists() and check(await asyncio.to_thread(_staged, state_dir)):
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the consumer did not stage what was expected in time")

    ids: list[str] = []
    consumer = start()
    try:
        await wait_for(lambda rows: _state(state_dir) is not None)  # subscribed: the fresh start's empty page
        for round_ in range(2):
            before = len(ids)
            writes = asyncio.create_task(_create_many(writer, ids, f"K{round_}-", 25))
            await wait_for(_at_least(before + 5))
            consumer.send_signal(signal.SIGKILL)
            consumer.wait()
            await writes  # the rest lands while no consumer runs
            consumer = start()
        await wait_for(lambda rows: {r["Id"] for r in rows} >= set(ids))
    finally:
        consumer.send_signal(signal.SIGKILL)
        consumer.wait()
    rows = _staged(state_dir)
    assert {r["Id"] for r in rows} == set(ids) and len(ids) == 50
    positions = Counter(str(r["_version"]).split("|")[1] + str(r["Id"]) for r in rows)
    assert [p for p, n in positions.items() if n > 1] == []  # no durable change handed out twice


def _at_least(count: int) -> Callable[[list[dict[str, object]]], bool]:
    return lambda rows: len(rows) >= count


async def _create_many(writer: Writer, ids: list[str], prefix: str, count: int) -> None:
    for i in range(count):
        ids.append(await writer.create(f"{prefix}{i}"))
        await asyncio.sleep(0.01)


async def test_streaming_faults_are_retried_without_loss(org: Org, writer: Writer, tmp_path: Path) -> None:
    """503s, connection resets and expired sessions on the CometD endpoint (before the org handles the request,
    as its load balancer fails): retried, re-logged-in, and every change arrives once."""
    durable = Durable(tmp_path)
    ids: list[str] = []
    org.sandbox.faults.configure({"seed": 7, "rules": ["503:0.2,path=/cometd", "reset:0.15,path=/cometd",
                                                       "expire:0.1,path=/cometd"]})

    async def edits() -> None:
        for i in range(15):
            ids.append(await writer.create(f"F{i}"))
            await asyncio.sleep(0.02)

    async with change_source(org, quick_retries=True) as source:
        await consume(source, durable, lambda: len(ids) == 15 and all(i in durable.records for i in ids),
                      during=edits, timeout=40)
        assert source.catch_ups == 0
    injected = org.sandbox.faults.injected
    assert injected["503"] and injected["reset"] and injected["expire"], injected
    assert durable.live_duplicates() == []


async def test_a_client_lost_before_the_first_event_catches_up(org: Org, writer: Writer, tmp_path: Path) -> None:
    """Subscribed with -1 and no replay id known yet: a new client with -1 would skip what was published
    while none was connected, so the source catches up by watermark instead."""
    durable = Durable(tmp_path)
    ids: list[str] = []

    async def edits() -> None:
        org.sandbox.streaming.clients.clear()
        ids.append(await writer.create("before the new client"))

    async with change_source(org) as source:
        await consume(source, durable, lambda: bool(ids) and ids[0] in durable.records, during=edits)
        assert source.catch_ups == 1
    state = durable.state()
    assert state is not None


async def test_an_object_not_selected_for_cdc_is_a_permanent_error(org: Org, tmp_path: Path) -> None:
    org.sandbox.cdc.select_entities(["Account"])
    try:
        async with change_source(org) as source:
            with pytest.raises(PermanentError, match="does not exist"):
                await consume(source, Durable(tmp_path), lambda: False)
    finally:
        org.sandbox.cdc.select_entities(None)
