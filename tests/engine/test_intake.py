"""Intake: a read whose call gives up past the HTTP core's retries pauses and goes on from its last staged page.

(How Shopify's read keeps its cursor is tested with its reader: tests/connectors/shopify/test_reader.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from ferry.core.contracts import Source, SourcePage
from ferry.engine.intake import PHASE_ATTEMPTS, Intake
from ferry.engine.runner import Runner
from ferry.errors import TransientError
from ferry.store import LetterFilter, Store
from tests.engine.world import world


async def test_a_throttling_burst_longer_than_the_client_retries_pauses_the_read_not_the_run(tmp_path: Path) -> None:
    with world(tmp_path, customers=30, products=3, orders=6, shopify_api="rest") as w:  # REST 429s
        # Nine 429s in a row on the customers list: more than the Shopify client's six attempts per call.
        w.shop.faults.configure(
            {
                "rules": [
                    {"kind": "429", "rate": 1.0, "count": 1, "burst": 9, "retry_after": 0.1, "path": "customers.json"}
                ]
            }
        )
        spec = w.spec(w.pipeline_file("burst", lambda s: s["source"].update(page_size=10)))
        store = Store(tmp_path / "ferry.db")
        stats = await Runner(spec, store).run()
        assert stats.status == "succeeded", stats.error
        assert w.shop.faults.injected["429"] == 9
        dead = store.dead_letter_keys("burst", "Account")
        assert {str(c["id"]) for c in w.shop.store.customers} <= set(w.keys("Account")) | dead
        assert not {d.error_code for d in store.find_dead_letters(LetterFilter(pipeline="burst"), 1000)} & {
            "RETRIES_EXHAUSTED",
            "HTTP_429",
        }


class ListSource:
    """A source of numbered records whose state is an offset: any system's shape, as far as intake knows."""

    system = "list"
    streams = ("things",)

    def __init__(self, total: int, page: int, fail_at: set[int]) -> None:
        self.total, self.page, self.fail_at = total, page, set(fail_at)
        self.calls = 0

    async def read(self, stream: str, state: dict[str, Any] | None) -> AsyncIterator[SourcePage]:
        offset = (state or {}).get("offset", 0)
        resumed = state is not None and offset < self.total
        while offset < self.total:
            self.calls += 1
            if offset in self.fail_at:
                self.fail_at.discard(offset)
                raise TransientError("outage")
            records = [{"n": n} for n in range(offset, min(offset + self.page, self.total))]
            offset += len(records)
            yield SourcePage(records, {"offset": offset}, resumed)

    def identify(self, stream: str, raw: dict[str, Any]) -> tuple[str, str]:
        return str(raw["n"]), "v1"


async def test_a_source_that_gives_up_mid_read_is_continued_from_its_last_staged_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pauses: list[float] = []

    async def no_wait(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr("ferry.engine.intake.asyncio.sleep", no_wait)
    store = Store(tmp_path / "ferry.db")
    source = ListSource(total=25, page=10, fail_at={10, 20})
    intake = Intake(store, "p", 1)
    assert await intake.read_stream(cast(Source, source), "things") == 25
    assert pauses == [2.0, 4.0]
    assert source.calls == 3 + 2  # every page once, and the two that failed once more
    assert store.read_state("p", "things") == {"offset": 25}
    assert intake.resumed == []  # continued after a pause in this run: not a read a crash left
    staged = [r for chunk in store.staged("p", ["things"]) for r in chunk]
    assert [r.key for r in staged] == [str(n) for n in range(25)]
    assert orjson.loads(staged[3].payload) == {"n": 3}

    # A later run continues where the store says the read stands; one left unfinished counts as resumed.
    store.stage("p", "things", 1, [], {"offset": 20})
    again = Intake(store, "p", 2)
    assert await again.read_stream(cast(Source, ListSource(total=25, page=10, fail_at=set())), "things") == 5
    assert again.resumed == ["things"]


async def test_a_source_that_keeps_failing_fails_the_read_after_its_attempts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_wait(seconds: float) -> None:
        pass

    monkeypatch.setattr("ferry.engine.intake.asyncio.sleep", no_wait)

    class Down(ListSource):
        async def read(self, stream: str, state: dict[str, Any] | None) -> AsyncIterator[SourcePage]:
            self.calls += 1
            raise TransientError("down")
            yield  # pragma: no cover - makes this an async generator

    source = Down(total=1, page=1, fail_at=set())
    with pytest.raises(TransientError):
        await Intake(Store(tmp_path / "ferry.db"), "p", 1).read_stream(cast(Source, source), "things")
    assert source.calls == PHASE_ATTEMPTS
