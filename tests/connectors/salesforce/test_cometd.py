"""The CometD client's reading of Salesforce's Bayeux replies (the live conversations are in test_cdc.py)."""

from __future__ import annotations

from ferry.connectors.salesforce.cometd import Advice, error_code, replay_id_of


def test_error_codes_come_from_the_failure_reason_when_the_org_gives_one() -> None:
    assert error_code({"error": "401::Authentication invalid"}) == (401, "Authentication invalid")
    handshake = {"error": "403::Handshake denied", "ext": {"sfdc": {"failureReason": "401::Authentication invalid"}}}
    assert error_code(handshake) == (401, "Authentication invalid")
    replay = ("400::The replayId {7} you provided was invalid.  Please provide a valid ID, -2 to replay all events, "
              "or -1 to replay only new events.")
    assert error_code({"error": replay})[0] == 400
    assert error_code({"error": "something odd"}) == (0, "something odd")


def test_advice_keeps_what_the_server_last_said() -> None:
    advice = Advice()
    advice.update({"reconnect": "handshake", "interval": 500})
    assert (advice.reconnect, advice.interval_ms, advice.timeout_ms) == ("handshake", 500, 110_000)
    advice.update(None)
    assert advice.reconnect == "handshake"


def test_replay_ids_are_read_from_the_event_only() -> None:
    assert replay_id_of({"data": {"event": {"replayId": 12}}}) == 12
    assert replay_id_of({"data": {"event": {"replayId": True}}}) is None
    assert replay_id_of({"channel": "/meta/connect"}) is None
