"""One direction of a two-way sync: field ownership, then echo suppression, between mapping and the outbox.

Two pipelines keep two systems in step (Shopify customers -> Salesforce, Salesforce -> Shopify customers). Each
one's writes are changes the other reads back; without care every write comes back as a new change, forever.

* **Field ownership** (``two_way.owners``): a field the target owns is left out of an update (it is written
  only when the record is created, when there is nothing to overwrite); a field both own is decided by
  ``conflict``. "Update" means the version map holds the key: ferry has written the record before.
* **Echo suppression**: a record whose payload, after ownership, carries only fields this pipeline last wrote
  for its key with the same values (compared by per-field digests) would change nothing in the target. It is
  dropped and counted (``echoes``), not sent.
  That is what stops a ping-pong: ferry's write into system B comes back from B through the other pipeline,
  maps to the payload the other pipeline last wrote into A, and ends there. The comparison is by content,
  not by who made the change (a change stream's ``changeOrigin`` names ferry's own writes too, but a
  person's edit that happens to restore the written value changes nothing either, and a ferry write that
  another write merged into must still go through).

**Linking**: a record the peer pipeline created from the target (a customer made in the shop became an
Account; the Account's change comes back this way) is not new to the target even though this pipeline never
wrote it: the peer's id map, read backwards, names the target record (``linked``). It is written as an update
of that record (ownership applies: the phone the shop owns is not sent back over a newer one) instead of a
create that the target refuses as a duplicate and the sink must then find by a lookup (three requests for one).

``latest_wins`` compares this record's version (the source's own change time) with the newest version the
peer pipeline wrote of the same record (the peer's key is this pipeline's target id, ``peer.via``): a target
change stamped later keeps its value of the `both` fields (counted as ``target_newer`` and logged, so an edit
that lost is not mistaken for one ferry missed). Versions that are not timestamps fall back to ``source_wins``.
The two stamps come from two clocks (Shopify's to the second): edits on both sides within the clocks' skew are
decided by the stamps, not by which came first.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import structlog

from ferry.core.ports import PlannedRow, StateStore
from ferry.engine.pipeline import TwoWaySpec
from ferry.engine.stats import ObjectStats

log = structlog.get_logger("ferry.engine.twoway")


def payload_digest(payload: Mapping[str, Any]) -> str:
    """What is remembered of a written payload: a short digest per field (JSON, sorted), so that a later payload
    can be compared field by field without keeping the values themselves."""
    return orjson.dumps({k: _value_digest(v) for k, v in payload.items()}, option=orjson.OPT_SORT_KEYS).decode()


def _value_digest(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def is_echo(written: str | None, payload: Mapping[str, Any]) -> bool:
    """True when writing ``payload`` would change nothing against what this pipeline last wrote for the key:
    every field it carries was written with the same value. A subset counts: ownership may leave a `both` field
    out now that it sent last time (``latest_wins`` decides per change), which changes nothing either. A
    digest of the whole payload (saved by an earlier ferry) must match whole."""
    if written is None:
        return False
    if not written.startswith("{"):
        legacy = hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
        return written == legacy
    fields = orjson.loads(written)
    return all(fields.get(k) == _value_digest(v) for k, v in payload.items())


def peer_key(target_id: str) -> str:
    """A target id as the peer pipeline's source key: a GraphQL gid's last segment (``gid://shopify/Customer/7``
    -> ``7``), any other id as it is."""
    return target_id.rsplit("/", 1)[-1] if target_id.startswith("gid://") else target_id


def as_time(version: str) -> dt.datetime | None:
    """A version that is a timestamp (ISO 8601, ``Z``, ``+0000``), or None."""
    text = version.strip().replace("Z", "+00:00")
    if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":
        text = text[:-2] + ":" + text[-2:]  # +0000 -> +00:00
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def without(payload: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """The payload without ``fields`` (dotted paths reach into nested objects, as the mapping writes them)."""
    out = dict(payload)
    for name in fields:
        if name in out:
            del out[name]
            continue
        head, _, rest = name.partition(".")
        if rest and isinstance(out.get(head), dict):
            out[head] = without(out[head], [rest])
    return out


class TwoWay:
    def __init__(self, spec: TwoWaySpec, store: StateStore, pipeline: str) -> None:
        self.spec = spec
        self.store = store
        self.pipeline = pipeline
        self._gid_path: str | None = None  # the peer's global-id path (``_global_id_path``)

    def filter(
        self, obj: str, rows: list[PlannedRow], known: Mapping[str, str], stats: ObjectStats, external_id: str = ""
    ) -> list[PlannedRow]:
        """``rows`` (fresh versions) with ownership applied and echoes dropped; ``known``: the version map's
        versions of their keys (a key there is an update). The ``external_id`` field is never left out: the
        target finds the record by it."""
        if not rows:
            return rows
        linked = self.linked(obj, [r.key for r in rows if r.key not in known])
        if linked:
            known = {**known, **{k: "" for k in linked}}  # the peer's record: an update, ownership applies
        rows = self._apply_ownership(obj, rows, known, external_id, stats)
        written = self.store.written_digests(self.pipeline, obj, [r.key for r in rows])
        kept = [r for r in rows if not is_echo(written.get(r.key), r.payload)]
        stats.echoes += len(rows) - len(kept)
        return kept

    def linked(self, obj: str, keys: Sequence[str]) -> dict[str, str]:
        """Keys this pipeline has no target id for whose record the peer pipeline created from the target:
        key -> the target's id as the peer's source key (``peer_key`` form; the sink reads it as its id). Only
        for the ``via`` object (the one whose target id is the peer's key); a key the id map holds is left out."""
        peer = self.spec.peer
        if peer is None or obj != peer.via or not keys:
            return {}
        mine = self.store.target_ids(self.pipeline, obj, keys)
        wanted = [k for k in keys if k not in mine]
        if not wanted:
            return {}
        found = self.store.keys_for_targets(peer.pipeline, peer.object, wanted)
        rest = [k for k in wanted if k not in found]
        path = self._global_id_path() if rest else None
        if path:
            # The peer wrote GraphQL global ids (gid://<app>/<Type>/<id>): this pipeline's key is their last
            # segment, and the path in front is read from the peer's own id map (no system named here).
            more = self.store.keys_for_targets(peer.pipeline, peer.object, [path + k for k in rest])
            found.update({peer_key(gid): key for gid, key in more.items()})
        return found

    def _global_id_path(self) -> str | None:
        """``gid://<app>/<Type>/`` when the peer's id map holds global ids (learned once, then kept)."""
        if self._gid_path is None and self.spec.peer is not None:
            sample = self.store.any_target_id(self.spec.peer.pipeline, self.spec.peer.object, "gid://")
            if sample is not None:
                self._gid_path = sample.rsplit("/", 1)[0] + "/"
        return self._gid_path

    def _apply_ownership(
        self, obj: str, rows: list[PlannedRow], known: Mapping[str, str], external_id: str, stats: ObjectStats
    ) -> list[PlannedRow]:
        owners = {f: o for f, o in self.spec.owners.get(obj, {}).items() if f != external_id}
        theirs = [f for f, o in owners.items() if o == "target"]
        both = [f for f, o in owners.items() if o == "both"]
        if not theirs and not both:
            return rows
        updates = [r for r in rows if r.key in known]
        target_newer = self._target_newer(obj, updates) if both and self.spec.conflict == "latest_wins" else set()
        if target_newer:
            # Said, not only counted: a person's edit that loses to a newer one on the other side looks, from the
            # source, like an edit ferry ignored (an echo once the both-owned fields are left out).
            stats.target_newer += len(target_newer)
            log.info("two_way.target_newer", pipeline=self.pipeline, object=obj, records=len(target_newer),
                     fields=both, keys=sorted(target_newer)[:5])
        out: list[PlannedRow] = []
        for r in rows:
            if r.key not in known:
                out.append(r)  # a create: nothing to overwrite
                continue
            leave = list(theirs)
            if both and (self.spec.conflict == "target_wins" or r.key in target_newer):
                leave += both
            out.append(PlannedRow(r.key, r.version, without(r.payload, leave), r.source, r.stream, r.source_key))
        return out

    def _target_newer(self, obj: str, rows: Sequence[PlannedRow]) -> set[str]:
        """Keys whose target record the peer pipeline wrote at a version later than this record's version."""
        peer = self.spec.peer
        if peer is None or not rows:
            return set()
        ids = self.store.target_ids(self.pipeline, peer.via, [r.key for r in rows])
        by_peer = {peer_key(tid): key for key, tid in ids.items()}
        theirs = self.store.versions_for(peer.pipeline, peer.object, list(by_peer))
        newer: set[str] = set()
        mine = {r.key: r.version for r in rows}
        for pkey, version in theirs.items():
            key = by_peer[pkey]
            a, b = as_time(mine[key]), as_time(version)
            if a is not None and b is not None and b > a:
                newer.add(key)
        return newer
