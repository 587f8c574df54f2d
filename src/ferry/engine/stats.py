"""What a run did, per target object, in the shape `ferry demo --json` and `ferry runs` print."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class ObjectStats:
    read: int = 0
    written: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    echoes: int = 0  # two-way sync: records dropped because they carried what ferry itself last wrote
    # two-way latest_wins: updates sent without the fields both sides own, the target's change being the newer
    target_newer: int = 0
    dead_lettered: int = 0
    retried: int = 0
    api_calls: int = 0
    strategy: str = "-"
    reason: str = ""


@dataclass(slots=True)
class RunStats:
    run_id: int
    pipeline: str
    objects: dict[str, ObjectStats] = field(default_factory=dict)
    source_records: dict[str, int] = field(default_factory=dict)
    source_api_calls: int = 0
    # The source API this run read through, if the source names one (Shopify: "graphql" or "rest"), and how
    # each stream was read (Shopify GraphQL: one bulk operation or cost-paced pages, with the store's count).
    source_api: str | None = None
    source_reads: dict[str, Any] = field(default_factory=dict)
    # Entities the source's streams can yield that it did not read whole, as no object maps them
    # (``SelectsEntities``; Shopify over GraphQL: ``refund`` when no object maps refunds).
    skipped_entities: list[str] = field(default_factory=list)
    setup_api_calls: int = 0
    seconds: float = 0.0
    status: str = "running"
    error: str | None = None
    # The target's API budget after the run (the sink's budget_status): share, calls of the last 24 h, left,
    # when to resume.
    budget: dict[str, Any] | None = None
    # What this run picked up from one that died: streams read on from a saved page, remote jobs resumed.
    resumed_reads: list[str] = field(default_factory=list)
    resumed_bulk_jobs: list[str] = field(default_factory=list)
    # This process's CPU seconds (user + system) per phase of the run: "read", "prepare", "plan",
    # "load <object>", "finish" (what ferry's own overhead is spent on, beside the wall time).
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    # Wall seconds per phase, the same phases: where a run's time goes (read vs load), CPU or waiting.
    wall_seconds: dict[str, float] = field(default_factory=dict)
    # The pipeline's max_dead_letter_share (0..1): above it on any object, the run counts as failed.
    dead_letter_cap: float = 1.0
    # The run before this one, when it did not finish (interrupted, died, failed, paused): this run resumes it.
    resumed_from: dict[str, Any] | None = None
    # Per source stream, records whose target id this run wrote back onto the source (``LinksBack`` sources).
    linked_back: dict[str, int] = field(default_factory=dict)
    # Two-way sync: target records (and their primary children) given this pipeline's key before the load,
    # because the other direction made the source record from them (``Adopts`` sinks; engine/adopt.py).
    adopted: int = 0
    # Per source stream, records a micro-batch fetched because its events referred to them and the target
    # lacked them (an order's new customer; engine/parents.py).
    parents_fetched: dict[str, int] = field(default_factory=dict)
    # A distributed run: the shared call tally (``run_calls``, by part) as it stood when the calls above were
    # summed, so a reader adds only what came later (engine/runcalls.py; empty for an embedded run).
    run_calls_counted: dict[str, int] = field(default_factory=dict)

    def dead_letter_shares(self) -> dict[str, float]:
        """Per object with records this run: the share of them dead-lettered (0..1)."""
        return {name: min(1.0, s.dead_lettered / s.read) for name, s in self.objects.items() if s.read}

    def over_dead_letter_cap(self) -> dict[str, float]:
        """Objects whose dead-letter share exceeds the pipeline's cap, with the share."""
        return {name: share for name, share in self.dead_letter_shares().items() if share > self.dead_letter_cap}

    @property
    def dead_lettered(self) -> int:
        return sum(s.dead_lettered for s in self.objects.values())

    def object(self, name: str) -> ObjectStats:
        if name not in self.objects:
            self.objects[name] = ObjectStats()
        return self.objects[name]

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "status": self.status,
            "objects": {k: asdict(v) for k, v in self.objects.items()},
            "source_records": dict(self.source_records),
            "source_api_calls": self.source_api_calls,
            "source_api": self.source_api,
            "source_reads": dict(self.source_reads),
            "skipped_entities": list(self.skipped_entities),
            "setup_api_calls": self.setup_api_calls,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "budget": self.budget,
            "resumed_reads": list(self.resumed_reads),
            "resumed_bulk_jobs": list(self.resumed_bulk_jobs),
            "cpu_seconds": {k: round(v, 3) for k, v in self.cpu_seconds.items()},
            "wall_seconds": {k: round(v, 3) for k, v in self.wall_seconds.items()},
            "dead_letter_cap": self.dead_letter_cap,
            "over_dead_letter_cap": {k: round(v, 4) for k, v in self.over_dead_letter_cap().items()},
            "resumed_from": self.resumed_from,
            "linked_back": dict(self.linked_back),
            "adopted": self.adopted,
            "parents_fetched": dict(self.parents_fetched),
            "run_calls_counted": dict(self.run_calls_counted),
        }
