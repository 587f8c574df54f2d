"""engine/twoway.py against a real store: field ownership on updates, the conflict rules, echo suppression by
the digest of what ferry last wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.engine.pipeline import PeerSpec, TwoWaySpec
from ferry.engine.stats import ObjectStats
from ferry.engine.twoway import TwoWay, as_time, payload_digest, peer_key, without
from ferry.store import PlannedRow, Store, Written

PEER = PeerSpec(pipeline="back", object="Customer", via="Account")


def _row(key: str, version: str, **payload: object) -> PlannedRow:
    return PlannedRow(key, version, dict(payload))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state.db")


def test_a_field_the_target_owns_is_written_on_create_only(store: Store) -> None:
    tw = TwoWay(TwoWaySpec(owners={"Account": {"Description": "target"}}), store, "p")
    rows = [_row("new", "2026-12-06T07:00:00Z", Name="A", Description="x"),
            _row("old", "2026-12-06T07:00:00Z", Name="B", Description="y")]
    out = tw.filter("Account", rows, {"old": "2026-12-05T00:00:00Z"}, ObjectStats())
    assert out[0].payload == {"Name": "A", "Description": "x"}  # a create: nothing to overwrite
    assert out[1].payload == {"Name": "B"}


def test_the_external_id_is_never_left_out(store: Store) -> None:
    tw = TwoWay(TwoWaySpec(owners={"Customer": {"email": "target"}}), store, "p")
    out = tw.filter("Customer", [_row("k", "v2", email="a@b.c")], {"k": "v1"}, ObjectStats(), external_id="email")
    assert out[0].payload == {"email": "a@b.c"}


@pytest.mark.parametrize(("conflict", "peer_version", "kept"), [
    ("source_wins", "2026-12-06T07:00:05.000+0000", True),
    ("target_wins", "2026-12-06T07:00:00.000+0000", False),
    ("latest_wins", "2026-12-06T07:00:05.000+0000", False),  # the target changed later: its value stays
    ("latest_wins", "2026-12-06T06:59:59.000+0000", True),  # this change is the later one
])
def test_a_field_both_own_follows_the_conflict_rule(store: Store, conflict: str, peer_version: str,
                                                    kept: bool) -> None:
    # this pipeline wrote shop customer 7 as Account 001A; the peer (the way back) wrote 001A's change to the shop
    store.record_written("p", "Account", [Written("7", "2026-12-06T06:00:00Z", "001A")])
    store.record_written("back", "Customer", [Written("001A", peer_version, "gid://shopify/Customer/7")])
    tw = TwoWay(TwoWaySpec(owners={"Account": {"Name": "both"}}, conflict=conflict, peer=PEER), store, "p")  # type: ignore[arg-type]
    stats = ObjectStats()
    out = tw.filter("Account", [_row("7", "2026-12-06T02:00:02-05:00", Name="New", Phone="1")],
                    {"7": "2026-12-06T06:00:00Z"}, stats)
    assert ("Name" in out[0].payload) is kept and out[0].payload["Phone"] == "1"
    # counted only where the rule found the target's change newer (target_wins leaves the field out by rule)
    assert stats.target_newer == (1 if conflict == "latest_wins" and not kept else 0)


def test_latest_wins_needs_a_peer() -> None:
    with pytest.raises(ValueError, match="peer"):
        TwoWaySpec(owners={"Account": {"Name": "both"}}, conflict="latest_wins")


def test_what_ferry_last_wrote_comes_back_as_an_echo(store: Store) -> None:
    tw = TwoWay(TwoWaySpec(), store, "p")
    store.save_written_digests("p", "Account", {"1": payload_digest({"Name": "A", "Phone": "1"})})
    stats = ObjectStats()
    rows = [_row("1", "v2", Phone="1", Name="A"),  # same content, other key order: ferry's own write coming back
            _row("2", "v2", Name="B"), _row("1", "v3", Name="A", Phone="2")]
    out = tw.filter("Account", rows, {}, stats)
    assert [(r.key, r.version) for r in out] == [("2", "v2"), ("1", "v3")] and stats.echoes == 1


def test_helpers() -> None:
    assert peer_key("gid://shopify/Customer/7104") == "7104" and peer_key("001A") == "001A"
    assert as_time("2026-12-06T07:00:00.000+0000") == as_time("2026-12-06T02:00:00-05:00")
    assert as_time("v3") is None
    assert without({"a": 1, "b": {"c": 2, "d": 3}}, ["b.c", "x"]) == {"a": 1, "b": {"d": 3}}


def test_two_way_must_name_the_pipeline_s_objects() -> None:
    import yaml

    from ferry.engine.pipeline import PipelineSpec, packaged_examples
    raw = yaml.safe_load(packaged_examples()["shopify-salesforce-bidirectional"].read_text())
    raw["two_way"]["owners"]["Acount"] = {"Name": "target"}
    env = {"SHOPIFY_URL": "https://x.myshopify.com", "SHOPIFY_ACCESS_TOKEN": "t", "SALESFORCE_LOGIN_URL": "https://l",
           "SALESFORCE_CLIENT_ID": "c", "SALESFORCE_USERNAME": "u", "SALESFORCE_PRIVATE_KEY_FILE": "/k"}
    from ferry.engine.pipeline import interpolate

    with pytest.raises(ValueError, match="Acount"):
        PipelineSpec.model_validate(interpolate(raw, env))


def test_a_record_the_peer_created_from_the_target_is_an_update_of_the_record_it_names(store: Store) -> None:
    # The way back (pipeline "back") wrote shop customer 7 into the CRM as Account 001A. This pipeline (CRM ->
    # shop, key: the Account id) never wrote 001A, yet the shop holds it: the peer's id map read backwards links
    # it, so it is an update (the phone the shop owns is left out) of customer 7, not a create.
    store.record_written("back", "Account", [Written("7", "2026-12-06T06:00:00Z", "001A")])
    spec = TwoWaySpec(owners={"Customer": {"phone": "target"}},
                      peer=PeerSpec(pipeline="back", object="Account", via="Customer"))
    tw = TwoWay(spec, store, "p")
    rows = [_row("001A", "v1", email="a@b.c", phone="old"), _row("001B", "v1", email="d@e.f", phone="1")]
    out = tw.filter("Customer", rows, {}, ObjectStats(), external_id="email")
    assert [r.payload for r in out] == [{"email": "a@b.c"}, {"email": "d@e.f", "phone": "1"}]
    assert tw.linked("Customer", ["001A", "001B"]) == {"001A": "7"}
    assert tw.linked("Other", ["001A"]) == {}  # only the object whose target id is the peer's key
    store.record_written("p", "Customer", [Written("001A", "v1", "gid://shopify/Customer/7")])
    assert tw.linked("Customer", ["001A"]) == {}  # its own id map knows it now


def test_a_payload_ownership_trimmed_to_fields_last_written_unchanged_is_an_echo(store: Store) -> None:
    # latest_wins left the names in last time and leaves them out now (the peer changed the record later): what
    # is left was written with these values, so the write would change nothing. A changed value is no echo.
    tw = TwoWay(TwoWaySpec(), store, "p")
    last = {"email": "a@b.c", "firstName": "A", "note": "n"}
    store.save_written_digests("p", "Customer", {"1": payload_digest(last)})
    stats = ObjectStats()
    out = tw.filter("Customer", [_row("1", "v2", email="a@b.c", note="n")], {"1": "v1"}, stats)
    assert out == [] and stats.echoes == 1
    out = tw.filter("Customer", [_row("1", "v3", email="a@b.c", note="new")], {"1": "v1"}, stats)
    assert [r.payload for r in out] == [{"email": "a@b.c", "note": "new"}]
    out = tw.filter("Customer", [_row("1", "v4", email="a@b.c", lastName="L")], {"1": "v1"}, stats)
    assert len(out) == 1  # a field not written last time


def test_a_whole_payload_digest_saved_by_an_earlier_ferry_still_matches(store: Store) -> None:
    import hashlib

    import orjson
    legacy = hashlib.sha256(orjson.dumps({"Name": "A"}, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
    store.save_written_digests("p", "Account", {"1": legacy})
    stats = ObjectStats()
    assert TwoWay(TwoWaySpec(), store, "p").filter("Account", [_row("1", "v2", Name="A")], {}, stats) == []


def test_a_peer_that_wrote_global_ids_links_by_their_last_segment(store: Store) -> None:
    # The CRM -> shop direction wrote customers as GraphQL global ids; the shop -> CRM direction's key is the
    # customer id alone. The gid's path is read from the peer's id map, then the lookup stays exact.
    tw = TwoWay(TwoWaySpec(peer=PEER), store, "p")
    assert tw.linked("Account", ["7"]) == {}  # the peer wrote nothing yet: no path to learn
    store.record_written("back", "Customer", [Written("001A", "v1", "gid://shopify/Customer/7"),
                                              Written("001B", "v1", "gid://shopify/Customer/77")])
    assert tw.linked("Account", ["7", "8"]) == {"7": "001A"}  # not 77: the whole id, not a suffix
    store.record_written("p", "Account", [Written("7", "v1", "001A")])
    assert tw.linked("Account", ["7"]) == {}  # its own id map knows it now
