"""Pub/Sub API (gRPC): a client built the way Salesforce's Python example (pub-sub-api/python) builds one —
stubs generated from pubsub_api.proto with grpcio-tools, a TLS channel, the accesstoken/instanceurl/tenantid
metadata, FetchRequests from a generator, payloads decoded with `avro.io` and the schema from GetSchema —
against the sandbox, with records written through simple-salesforce."""

from __future__ import annotations

import base64
import importlib
import io
import json
import queue
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import avro.io
import avro.schema
import grpc
import pytest
from grpc_tools import protoc
from simple_salesforce import Salesforce

import ferry.sandbox.salesforce.pubsub as pubsub_package
from ferry.cli.sandboxes import start_sandbox
from ferry.sandbox.salesforce.pubsub.avrocodec import AvroError, Codec, canonical_form

from .bayeux import Bayeux
from .conftest import Org, start_org

KEEPALIVE = 0.3
EVENT = "/event/Parcel_Scanned__e"


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ModuleType, ModuleType]]:
    """pubsub_api_pb2 / pubsub_api_pb2_grpc generated from Salesforce's proto, as the example's README says."""
    out = tmp_path_factory.mktemp("stubs")
    proto_dir = Path(pubsub_package.__file__).parent
    assert protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
                        "pubsub_api.proto"]) == 0
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("pubsub_api_pb2"), importlib.import_module("pubsub_api_pb2_grpc")
    finally:
        sys.path.remove(str(out))


@pytest.fixture(scope="module")
def ps_org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Org]:
    yield from start_org(tmp_path_factory.mktemp("pubsub"), pubsub_port=0, pubsub_keepalive_seconds=KEEPALIVE,
                         streaming_timeout_seconds=0.5,
                         platform_events={"Parcel_Scanned__e": {"Tracking__c": "string", "Weight__c": "double"}})


class PubSub:
    """The example's PubSub class, trimmed: auth metadata, GetTopic/GetSchema, encode/decode, a request queue."""

    def __init__(self, org: Org, stubs: tuple[ModuleType, ModuleType], **metadata: str) -> None:
        self.stubs = stubs
        self.pb2, pb2_grpc = stubs
        token = org.token().json()
        tenant_id = token["id"].split("/")[-2]  # https://.../id/<orgId>/<userId>
        self.metadata = tuple({"accesstoken": token["access_token"], "instanceurl": token["instance_url"],
                               "tenantid": tenant_id, **metadata}.items())
        credentials = grpc.ssl_channel_credentials(Path(org.running.ca_file).read_bytes())
        self.channel = grpc.secure_channel(org.creds["pubsub_endpoint"], credentials)
        self.stub = pb2_grpc.PubSubStub(self.channel)
        self.schemas: dict[str, str] = {}
        self.requests: queue.Queue[Any] = queue.Queue()

    def close(self) -> None:
        self.requests.put(None)
        self.channel.close()

    def get_topic(self, name: str) -> Any:
        return self.stub.GetTopic(self.pb2.TopicRequest(topic_name=name), metadata=self.metadata)

    def schema_json(self, schema_id: str) -> str:
        if schema_id not in self.schemas:
            info = self.stub.GetSchema(self.pb2.SchemaRequest(schema_id=schema_id), metadata=self.metadata)
            self.schemas[schema_id] = info.schema_json
        return self.schemas[schema_id]

    def decode(self, event: Any) -> dict[str, Any]:
        schema = avro.schema.parse(self.schema_json(event.schema_id))
        return avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(event.payload)))

    @staticmethod
    def encode(schema_json: str, payload: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        avro.io.DatumWriter(avro.schema.parse(schema_json)).write(payload, avro.io.BinaryEncoder(buf))
        return buf.getvalue()

    def fetch(self, num_requested: int, topic: str = "") -> None:
        self.requests.put(self.pb2.FetchRequest(topic_name=topic, num_requested=num_requested))

    def subscribe(self, topic: str, preset: str, num_requested: int, replay_id: bytes = b"") -> Iterator[Any]:
        self.requests.put(self.pb2.FetchRequest(topic_name=topic, replay_preset=getattr(self.pb2.ReplayPreset, preset),
                                                replay_id=replay_id, num_requested=num_requested))

        def fetch_req_stream() -> Iterator[Any]:
            while (request := self.requests.get()) is not None:
                yield request

        return iter(self.stub.Subscribe(fetch_req_stream(), metadata=self.metadata))


@pytest.fixture
def sf(ps_org: Org) -> Salesforce:
    ps_org.admin("reset", "POST")
    ps_org.sandbox.cdc.select_entities(None)
    return ps_org.client()


@pytest.fixture
def client(ps_org: Org, stubs: tuple[ModuleType, ModuleType]) -> Iterator[PubSub]:
    c = PubSub(ps_org, stubs)
    yield c
    c.close()


def events_of(responses: Iterator[Any], count: int, max_responses: int = 20) -> tuple[list[Any], list[Any]]:
    """Read responses until `count` events came; (events, responses). Keepalives bound the wait."""
    events: list[Any] = []
    seen: list[Any] = []
    while len(events) < count and len(seen) < max_responses:
        response = next(responses)
        seen.append(response)
        events.extend(response.events)
    assert len(events) == count, f"{len(events)} events in {len(seen)} responses"
    return events, seen


def bitmap_names(schema_json: str, bitmaps: list[str]) -> list[str]:
    """ChangeEventHeaderUtility.process_bitmap's decoding (hex -> bits, least significant first)."""
    fields = avro.schema.parse(schema_json).fields
    names: list[str] = []
    for entry in bitmaps:
        parent, _, bits = entry.rpartition("-")
        binary = bin(int(bits, 16))[2:][::-1]
        if parent:
            record = next(s for s in fields[int(parent)].type.schemas if s.type == "record")
            names += [f"{fields[int(parent)].name}.{record.fields[i].name}" for i, b in enumerate(binary) if b == "1"]
        else:
            names += [fields[i].name for i, b in enumerate(binary) if b == "1"]
    return names


def test_rest_writes_reach_pubsub_decoded_with_the_schema_from_get_schema(sf: Salesforce, client: PubSub) -> None:
    topic = client.get_topic("/data/AccountChangeEvent")
    assert topic.can_subscribe and not topic.can_publish and len(topic.schema_id) == 22
    account = sf.Account.create({"Name": "Acme", "BillingCity": "Paris", "NumberOfEmployees": 12})["id"]
    sf.Account.update(account, {"BillingCity": None, "Phone": "555"})
    sf.Account.delete(account)
    events, _ = events_of(client.subscribe("/data/AccountChangeEvent", "EARLIEST", 10), 3)
    assert {e.event.schema_id for e in events} == {topic.schema_id}
    created, updated, deleted = (client.decode(e.event) for e in events)
    header = created["ChangeEventHeader"]
    assert header["entityName"] == "Account" and header["recordIds"] == [account]
    assert header["changeType"] == "CREATE" and header["changeOrigin"].startswith("com/salesforce/api/rest/")
    assert header["changedFields"] == header["nulledFields"] == header["diffFields"] == []
    assert created["Name"] == "Acme" and created["NumberOfEmployees"] == 12 and created["Phone"] is None
    assert created["BillingAddress"]["City"] == "Paris" and created["ShippingAddress"] is None
    assert isinstance(created["CreatedDate"], int) and abs(created["CreatedDate"] - header["commitTimestamp"]) < 1000
    # an UPDATE has every field, unchanged ones null; the bitmaps decode to the CometD names
    schema = client.schema_json(topic.schema_id)
    assert updated["ChangeEventHeader"]["changeType"] == "UPDATE" and updated["Name"] is None
    assert updated["Phone"] == "555" and updated["BillingAddress"]["City"] is None
    changed = bitmap_names(schema, updated["ChangeEventHeader"]["changedFields"])
    assert sorted(changed) == ["BillingAddress.City", "LastModifiedDate", "Phone"]
    assert bitmap_names(schema, updated["ChangeEventHeader"]["nulledFields"]) == ["BillingAddress.City"]
    assert deleted["ChangeEventHeader"]["changeType"] == "DELETE" and deleted["Name"] is None
    replay_ids = [int.from_bytes(e.replay_id, "big") for e in events]
    assert replay_ids == sorted(replay_ids) and all(len(e.replay_id) == 8 for e in events)


def test_one_write_reaches_cometd_and_pubsub_as_the_same_event(ps_org: Org, sf: Salesforce, client: PubSub) -> None:
    cometd = Bayeux(ps_org.session(), f"{ps_org.url}/cometd/62.0", sf.session_id)
    cometd.open("/data/ContactChangeEvent", -1)
    responses = client.subscribe("/data/ContactChangeEvent", "LATEST", 5)
    assert next(responses).events == []  # the keepalive: nothing new yet
    sf.Account.create({"Name": "Not a contact"})  # another entity: not on either channel
    contact = sf.Contact.create({"FirstName": "Ada", "LastName": "Lovelace"})["id"]
    (event,), _ = events_of(responses, 1)
    (message,) = cometd.poll(1)
    decoded = client.decode(event.event)
    assert int.from_bytes(event.replay_id, "big") == message["data"]["event"]["replayId"]
    cometd_header = message["data"]["payload"]["ChangeEventHeader"]
    for key in ("recordIds", "changeType", "transactionKey", "sequenceNumber", "commitTimestamp", "commitUser"):
        assert decoded["ChangeEventHeader"][key] == cometd_header[key]
    assert decoded["ChangeEventHeader"]["recordIds"] == [contact]
    assert decoded["Name"]["FirstName"] == "Ada" and decoded["Name"]["LastName"] == "Lovelace"


def test_flow_control_never_sends_more_than_requested(sf: Salesforce, client: PubSub) -> None:
    for i in range(5):
        sf.Account.create({"Name": f"F{i}"})
    responses = client.subscribe("/data/ChangeEvents", "EARLIEST", 2)
    events, seen = events_of(responses, 2)
    assert seen[-1].pending_num_requested == 0
    idle = next(responses)  # requested events all delivered: only a keepalive, however many are waiting
    assert idle.events == [] and idle.latest_replay_id == events[-1].replay_id
    client.fetch(3)
    more, seen = events_of(responses, 3)
    assert seen[-1].pending_num_requested == 0
    names = [client.decode(e.event)["Name"] for e in [*events, *more]]
    assert names == [f"F{i}" for i in range(5)]


def test_more_than_100_requested_counts_as_100(client: PubSub, sf: Salesforce) -> None:
    responses = client.subscribe("/data/ChangeEvents", "LATEST", 150)
    assert next(responses).pending_num_requested == 100
    client.fetch(10)
    assert next(responses).pending_num_requested == 100


def test_pubsub_shares_the_cometd_retention(ps_org: Org, client: PubSub, sf: Salesforce) -> None:
    config = ps_org.sandbox.cdc.config
    config.max_events = 2
    try:
        for i in range(4):
            sf.Account.create({"Name": f"K{i}"})
        events, _ = events_of(client.subscribe("/data/ChangeEvents", "EARLIEST", 10), 2)
        assert [client.decode(e.event)["Name"] for e in events] == ["K2", "K3"]
        dropped = (int.from_bytes(events[0].replay_id, "big") - 2).to_bytes(8, "big")
        other = PubSub(ps_org, client.stubs)
        try:
            with pytest.raises(grpc.RpcError) as caught:
                next(other.subscribe("/data/ChangeEvents", "CUSTOM", 1, dropped))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        finally:
            other.close()
    finally:
        config.max_events = 100_000


def test_latest_and_custom_replay(sf: Salesforce, client: PubSub, ps_org: Org,
                                  stubs: tuple[ModuleType, ModuleType]) -> None:
    ids = [sf.Account.create({"Name": f"R{i}"})["id"] for i in range(3)]
    responses = client.subscribe("/data/AccountChangeEvent", "LATEST", 5)
    keepalive = next(responses)
    assert keepalive.events == [] and keepalive.pending_num_requested == 5
    latest = int.from_bytes(keepalive.latest_replay_id, "big")
    assert latest == ps_org.sandbox.cdc.bus.last_replay_id
    newer = sf.Account.create({"Name": "After"})["id"]
    (event,), _ = events_of(responses, 1)
    assert client.decode(event.event)["ChangeEventHeader"]["recordIds"] == [newer]

    custom = PubSub(ps_org, stubs)
    try:
        first = (latest - 2).to_bytes(8, "big")  # the replay id of R0: replay starts after it
        events, _ = events_of(custom.subscribe("/data/AccountChangeEvent", "CUSTOM", 10, first), 3)
        assert [custom.decode(e.event)["ChangeEventHeader"]["recordIds"][0] for e in events] == [*ids[1:], newer]
    finally:
        custom.close()


def test_an_unknown_replay_id_is_refused(client: PubSub, sf: Salesforce) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        next(client.subscribe("/data/ChangeEvents", "CUSTOM", 1, (10**9).to_bytes(8, "big")))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("The Replay ID validation failed.")
    trailers = dict(caught.value.trailing_metadata())
    assert trailers["error-code"] == "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
    assert caught.value.details().endswith(f"rpcId: {trailers['rpc-id']}")


def test_publish_a_platform_event_and_receive_it(sf: Salesforce, client: PubSub) -> None:
    topic = client.get_topic(EVENT)
    assert topic.can_publish and topic.can_subscribe
    schema = client.schema_json(topic.schema_id)
    payload = {"CreatedDate": 1714557600000, "CreatedById": "005000000000001AAA", "Tracking__c": "1Z999",
               "Weight__c": 2.5}
    good = client.pb2.ProducerEvent(id="evt-1", schema_id=topic.schema_id, payload=client.encode(schema, payload))
    bad = client.pb2.ProducerEvent(id="evt-2", schema_id=topic.schema_id, payload=b"\x07")
    published = client.stub.Publish(client.pb2.PublishRequest(topic_name=EVENT, events=[good, bad]),
                                    metadata=client.metadata)
    ok, failed = published.results
    assert published.schema_id == topic.schema_id
    assert ok.correlation_key == "evt-1" and len(ok.replay_id) == 8 and not ok.HasField("error")
    assert failed.correlation_key == "evt-2" and failed.error.code == client.pb2.ErrorCode.PUBLISH

    (event,), _ = events_of(client.subscribe(EVENT, "EARLIEST", 5), 1)
    assert event.replay_id == ok.replay_id and event.event.id == "evt-1"
    assert client.decode(event.event) == payload


def test_a_published_platform_event_reaches_cometd_subscribers(ps_org: Org, client: PubSub, sf: Salesforce) -> None:
    cometd = Bayeux(ps_org.session(), f"{ps_org.url}/cometd/62.0", sf.session_id)
    cometd.open(EVENT, -1)
    topic = client.get_topic(EVENT)
    payload = {"CreatedDate": 1714557600123, "CreatedById": "005000000000001AAA", "Tracking__c": "1Z1",
               "Weight__c": None}
    event = client.pb2.ProducerEvent(schema_id=topic.schema_id,
                                     payload=client.encode(client.schema_json(topic.schema_id), payload))
    (result,) = client.stub.Publish(client.pb2.PublishRequest(topic_name=EVENT, events=[event]),
                                    metadata=client.metadata).results
    (message,) = cometd.poll(1)
    assert message["channel"] == EVENT and message["data"]["schema"] == topic.schema_id
    assert message["data"]["payload"] == {**payload, "CreatedDate": "2024-05-01T10:00:00.123Z"}
    assert message["data"]["event"]["replayId"] == int.from_bytes(result.replay_id, "big")
    assert len(message["data"]["event"]["EventUuid"]) == 36
    refused = cometd.subscribe("/event/No_Such_Event__e", -1)
    assert refused["error"] == "400::The channel you requested to subscribe to does not exist {/event/No_Such_Event__e}"


def test_publish_stream_answers_each_batch(client: PubSub, sf: Salesforce) -> None:
    sid = client.get_topic(EVENT).schema_id
    schema = client.schema_json(sid)

    def batches() -> Iterator[Any]:
        for n in range(2):
            payload = client.encode(schema, {"CreatedDate": 0, "CreatedById": "005", "Tracking__c": f"T{n}",
                                             "Weight__c": None})
            yield client.pb2.PublishRequest(topic_name=EVENT if n == 0 else "", events=[
                client.pb2.ProducerEvent(id=f"s{n}", schema_id=sid, payload=payload)])

    responses = list(client.stub.PublishStream(batches(), metadata=client.metadata))
    assert [[r.correlation_key for r in resp.results] for resp in responses] == [["s0"], ["s1"]]


def test_bad_token_or_tenant_is_unauthenticated(ps_org: Org, stubs: tuple[ModuleType, ModuleType],
                                               sf: Salesforce) -> None:
    for override in ({"accesstoken": "00D000000000001!AQbogus"}, {"tenantid": "00D000000000002EAA"}):
        bad = PubSub(ps_org, stubs, **override)
        try:
            with pytest.raises(grpc.RpcError) as caught:
                bad.get_topic("/data/ChangeEvents")
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert caught.value.details().startswith("An authentication exception occurred. Provide valid "
                                                     "authentication via metadata headers. rpcId: ")
            assert dict(caught.value.trailing_metadata())["error-code"] == \
                "sfdc.platform.eventbus.grpc.service.auth.error"
            with pytest.raises(grpc.RpcError) as streamed:
                next(bad.subscribe("/data/ChangeEvents", "LATEST", 1))
            assert streamed.value.code() == grpc.StatusCode.UNAUTHENTICATED
        finally:
            bad.close()


def test_an_expired_session_is_unauthenticated(ps_org: Org, stubs: tuple[ModuleType, ModuleType],
                                               sf: Salesforce) -> None:
    expired = PubSub(ps_org, stubs)
    try:
        assert expired.get_topic("/data/ChangeEvents").can_subscribe
        token = dict(expired.metadata)["accesstoken"]
        ps_org.sandbox.state.oauth.sessions[token].expires_at = time.time() - 1
        with pytest.raises(grpc.RpcError) as caught:
            expired.get_topic("/data/ChangeEvents")
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        expired.close()


def test_unknown_topic_and_changed_topic_are_refused(client: PubSub, sf: Salesforce) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        client.get_topic("/data/NoSuchThingChangeEvent")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    responses = client.subscribe("/data/ChangeEvents", "LATEST", 1)
    next(responses)
    client.fetch(1, topic="/data/AccountChangeEvent")
    with pytest.raises(grpc.RpcError) as changed:
        while True:
            next(responses)
    assert changed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_schema_ids_are_md5_fingerprints_of_the_canonical_form(ps_org: Org, client: PubSub, sf: Salesforce) -> None:
    """The org's schema id: the MD5 fingerprint of the Parsing Canonical Form, base64url, no padding."""
    for topic in ("/data/AccountChangeEvent", "/data/ContactChangeEvent", "/data/OrderChangeEvent", EVENT):
        sid = client.get_topic(topic).schema_id
        parsed = avro.schema.parse(client.schema_json(sid))
        assert base64.urlsafe_b64encode(parsed.fingerprint("md5")).decode().rstrip("=") == sid


def test_the_avro_codec_agrees_with_the_avro_package() -> None:
    """Encoded here, decoded by `avro` (and the reverse) for every type the org's schemas can hold."""
    schema = {"type": "record", "name": "All", "namespace": "t", "fields": [
        {"name": "n", "type": "null"}, {"name": "b", "type": "boolean"}, {"name": "i", "type": "int"},
        {"name": "l", "type": "long"}, {"name": "f", "type": "float"}, {"name": "d", "type": "double"},
        {"name": "s", "type": "string"}, {"name": "y", "type": "bytes"},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}},
        {"name": "a", "type": {"type": "array", "items": ["null", "long"]}},
        {"name": "m", "type": {"type": "map", "values": "string"}},
        {"name": "x", "type": {"type": "fixed", "name": "X", "size": 2}},
        {"name": "r", "type": ["null", {"type": "record", "name": "R", "fields": [{"name": "v", "type": "string"}]}]},
        {"name": "r2", "type": ["null", "R"]}]}
    datum = {"n": None, "b": True, "i": -2**31, "l": 2**62 + 7, "f": 1.5, "d": -0.25, "s": "é€😀", "y": b"\x00\xff",
             "e": "B", "a": [1, None, -300], "m": {"k": "v"}, "x": b"ab", "r": {"v": "in"}, "r2": None}
    codec = Codec(schema)
    parsed = avro.schema.parse(json.dumps(schema))
    assert avro.io.DatumReader(parsed).read(avro.io.BinaryDecoder(io.BytesIO(codec.encode(datum)))) == datum
    assert codec.decode(PubSub.encode(json.dumps(schema), datum)) == datum
    assert canonical_form(schema) == parsed.canonical_form
    with pytest.raises(AvroError):
        codec.decode(codec.encode(datum) + b"\x00")


def test_ferry_sandbox_serve_announces_the_pubsub_endpoint(tmp_path: Path,
                                                           stubs: tuple[ModuleType, ModuleType]) -> None:
    pb2, pb2_grpc = stubs
    org = start_sandbox("salesforce", tmp_path)
    try:
        assert org.info["pubsub_endpoint"].startswith("127.0.0.1:")
        credentials = grpc.ssl_channel_credentials(Path(org.info["ca_file"]).read_bytes())
        with grpc.secure_channel(org.info["pubsub_endpoint"], credentials) as channel, \
                pytest.raises(grpc.RpcError) as caught:
            pb2_grpc.PubSubStub(channel).GetTopic(pb2.TopicRequest(topic_name="/data/ChangeEvents"))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED  # TLS with the announced CA, then auth
    finally:
        org.stop()
