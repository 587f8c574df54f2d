"""Chaos with QuickBooks Online as the target: the books must end as a clean run's, with no duplicate.

The harness (``harness.Chaos``) spawns ``ferry run`` and SIGKILLs it; this subclass swaps the Salesforce
org for a ``QuickBooksSandbox`` company. QuickBooks has no upsert, so what is tested is the sink's
idempotence without one: a kill while a ``batch`` call is in flight (a latency rule keeps each batch call
open ~150 ms, and the kill lands while the sandbox still holds one: the company commits it after the
client is dead), answers dropped after the write committed (``commit_then_reset``), 5xx, resets,
timeouts and 429s on both sides, access tokens expired under the run and the refresh token **rotated**
during it (its grace is shorter than a run, so a token that was not kept would end the run), and
customers renamed in Shopify between lives (latest wins).

The oracle is a clean run: the same pipeline, never killed and fault-free, from a copy of the shop as the
last life reads it into a new company. Both companies are read back by the source key each record carries
(``(key)`` at the end of a DisplayName, the variant id first in an Item's Name, the order name as
DocNumber), QuickBooks Ids translated to those keys, and compared record by record: 0 duplicate
Customers, Items or Invoices, nothing lost, nothing extra, no field different (latest wins), the same
records dead-lettered for the same reasons.
"""

from __future__ import annotations

import contextlib
import os
import random
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from ferry.cli.exits import RUN_FINISHED
from ferry.sandbox.quickbooks import QuickBooksSandbox
from ferry.sandbox.serve import RunningSandbox, start_in_thread
from ferry.store import DeadLetter, LetterFilter, Store
from tests.chaos.harness import Chaos, ChaosConfig, Life
from tests.chaos.pairs import PAIRS, SourcePair

OBJECTS = ("Customer", "Item", "Invoice")
# Kept by QuickBooks, not ferry's to compare: ids, versions, times, and PrintOnCheckName (defaulted to the
# DisplayName at creation and kept by a rename, so a record renamed after its create differs from one
# created under the new name).
_VOLATILE = {"Id", "SyncToken", "MetaData", "domain", "sparse", "PrintOnCheckName"}


def books_faults(seed: int) -> dict[str, Any]:
    return {
        "seed": seed,
        "rules": [
            # Every batch call stays open a while: a kill lands while one is in flight (committed after it).
            {"kind": "latency", "path": "batch", "method": "POST", "rate": 1.0, "latency_ms": 150},
            {"kind": "503", "rate": 0.03},
            {"kind": "500", "rate": 0.01},
            {"kind": "reset", "rate": 0.01},
            # The write is committed, its answer lost: the retry (or the next life) must not write it twice.
            # Two of the first batch calls for sure: a short run makes ~50 POSTs, and at 5% alone one in ten
            # short runs drew none (its coverage check failed, not a correctness one).
            {"kind": "commit_then_reset", "rate": 0.3, "method": "POST", "path": "batch", "count": 2},
            {"kind": "commit_then_reset", "rate": 0.05, "method": "POST"},
            {"kind": "timeout", "rate": 0.01, "hold_seconds": 3.0},
            {"kind": "429", "rate": 0.01, "retry_after": 1},
        ],
    }


class InFlight:
    """ASGI wrapper counting the company's ``batch`` calls being answered (faults and latency included).

    A batch call's body is read in full before the company sees it, as a server that buffers requests does:
    a client killed while the call waits (the latency rule) still has its batch committed, its answer lost.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.batches = 0
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        batch = scope["type"] == "http" and scope["path"].endswith("/batch")
        if batch:
            with self._lock:
                self.batches += 1
        try:
            if batch:
                receive = await _buffered(receive)
            await self.app(scope, receive, send)
        finally:
            if batch:
                with self._lock:
                    self.batches -= 1


async def _buffered(receive: Any) -> Any:
    """A ``receive`` replaying the request body read in full now (then waiting for the disconnect)."""
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body"):
            break

    async def replay() -> Any:
        return messages.pop(0) if messages else await receive()

    return replay


@dataclass
class ObjectBooks:
    clean: int = 0  # records the clean run wrote
    in_books: int = 0  # records the chaos run's company holds
    lost: int = 0
    duplicated: int = 0  # source keys held by more than one record
    extra: int = 0
    wrong: int = 0  # a field differs from the clean run's
    letters_differ: int = 0  # dead-lettered (or for a reason) where the clean run did not
    examples: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(text)


@dataclass
class BooksReconciliation:
    objects: dict[str, ObjectBooks]

    def total(self, name: str) -> int:
        return int(sum(getattr(o, name) for o in self.objects.values()))

    def problems(self) -> dict[str, list[str]]:
        return {k: o.examples for k, o in self.objects.items() if o.examples}


def source_key(entity: str, record: dict[str, Any], orders: dict[str, str]) -> str:
    """The Shopify key a record of the example pipeline carries (see examples/shopify-to-quickbooks.yml)."""
    if entity == "Customer":
        return str(record["DisplayName"]).rsplit("(", 1)[-1].rstrip(")")
    if entity == "Item":
        return str(record["Name"]).split(" ", 1)[0]
    return orders.get(str(record.get("DocNumber")), f"docnumber:{record.get('DocNumber')}")


def _translate(value: Any, ids: dict[str, dict[str, str]], parent: str = "") -> Any:
    """A record with QuickBooks Ids replaced by source keys and server-kept fields dropped, to compare."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if parent == "" and k in _VOLATILE:
                continue
            if k in ("CustomerRef", "ItemRef") and isinstance(v, dict):
                entity = "Customer" if k == "CustomerRef" else "Item"
                # The referenced record by its source key; not its ``name``: the sandbox keeps the name a reference
                # had when written (a customer renamed after its invoice shows the old one), where QuickBooks
                # shows the current one.
                v = {"value": ids[entity].get(str(v.get("value")), f"unknown:{v.get('value')}")}
            out[k] = _translate(v, ids, f"{parent}.{k}")
        return out
    if isinstance(value, list):
        return [_translate(v, ids, f"{parent}[]") for v in value]
    return value


def keyed(books: dict[str, list[dict[str, Any]]], orders: dict[str, str]) -> dict[str, dict[str, list[Any]]]:
    """Per object, source key -> the records holding it (translated); more than one is a duplicate."""
    ids = {e: {str(r["Id"]): source_key(e, r, orders) for r in books[e]} for e in ("Customer", "Item")}
    out: dict[str, dict[str, list[Any]]] = {}
    for entity in OBJECTS:
        by_key: dict[str, list[Any]] = {}
        for record in books[entity]:
            by_key.setdefault(source_key(entity, record, orders), []).append(_translate(record, ids))
        out[entity] = by_key
    return out


def reconcile_books(
    chaos: dict[str, list[dict[str, Any]]],
    clean: dict[str, list[dict[str, Any]]],
    chaos_letters: list[DeadLetter],
    clean_letters: list[DeadLetter],
    orders: dict[str, str],
) -> BooksReconciliation:
    mine, theirs = keyed(chaos, orders), keyed(clean, orders)
    letters = {e: {d.record_key: d.error_code for d in chaos_letters if d.object == e and d.status == "open"}
               for e in OBJECTS}
    reference = {e: {d.record_key: d.error_code for d in clean_letters if d.object == e and d.status == "open"}
                 for e in OBJECTS}
    result = BooksReconciliation({e: ObjectBooks() for e in OBJECTS})
    for entity in OBJECTS:
        figures, held, wanted = result.objects[entity], mine[entity], theirs[entity]
        figures.clean, figures.in_books = sum(map(len, wanted.values())), sum(map(len, held.values()))
        for key, records in held.items():
            if len(records) > 1:
                figures.duplicated += len(records) - 1
                names = [r.get("DisplayName") or r.get("Name") or r.get("DocNumber") for r in records]
                figures.note(f"duplicated {key}: {len(records)} records {names}")
            if key not in wanted:
                figures.extra += 1
                figures.note(f"extra {key}")
            elif records[0] != wanted[key][0]:
                figures.wrong += 1
                diff = {k for k in set(records[0]) | set(wanted[key][0]) if records[0].get(k) != wanted[key][0].get(k)}
                figures.note(f"wrong {key}: " + "; ".join(
                    f"{k}: {records[0].get(k)!r} vs clean {wanted[key][0].get(k)!r}" for k in sorted(diff))[:600])
        for key in wanted.keys() - held.keys():
            figures.lost += 1
            figures.note(f"lost {key}")
        if letters[entity] != reference[entity]:
            differ = {k for k in letters[entity].keys() | reference[entity].keys()
                      if letters[entity].get(k) != reference[entity].get(k)}
            figures.letters_differ = len(differ)
            figures.note(f"dead letters differ: {sorted(differ)[:5]}")
    return result


@dataclass
class BooksChaosResult:
    config: ChaosConfig
    lives: list[Life]
    reconciliation: BooksReconciliation
    faults: dict[str, int]
    records: dict[str, int]
    dead_letters: dict[str, int]
    api_calls: dict[str, int]
    edited: set[str]
    seconds: float
    rotations: int  # refresh tokens the company rotated during the run
    token_file_is_newest: bool  # the token file holds the company's newest refresh token
    tokens_in_output: int  # refresh tokens found in the lives' output and logs (must be 0)
    tokens_in_store: int  # ... and in ferry's state DB
    found_by_source_key: int  # lost creates found by the source key their renamed name still holds
    found_after_duplicate: int  # lost creates found by their lookup field after QuickBooks refused a duplicate
    final_run: dict[str, Any] = field(default_factory=dict)

    @property
    def kills(self) -> list[Life]:
        return [life for life in self.lives if life.killed]

    def figures(self) -> dict[str, Any]:
        r = self.reconciliation
        return {
            "pair": "shopify-to-quickbooks",
            "store": f"{self.config.customers} customers, {self.config.products} products, {self.config.orders} orders",
            "seconds": round(self.seconds, 1),
            "lives": len(self.lives),
            "kills": len(self.kills),
            "failed_runs_restarted": [life.error for life in self.lives if life.error],
            "kills_by_phase": dict(Counter(k.killed_while for k in self.kills)),
            "kills_during_batch_call": sum(1 for k in self.kills if k.kill_phase.startswith("bulk")),
            "faults_injected": dict(sorted(self.faults.items())),
            "clean_run_records": {o: r.objects[o].clean for o in OBJECTS},
            "in_books": dict(self.records),
            "lost": r.total("lost"),
            "duplicated": r.total("duplicated"),
            "extra": r.total("extra"),
            "wrong_or_stale": r.total("wrong"),
            "dead_letters_differ_from_clean_run": r.total("letters_differ"),
            "dead_lettered": dict(self.dead_letters),
            "api_calls": dict(self.api_calls),
            "refresh_token_rotations": self.rotations,
            "token_file_holds_newest": self.token_file_is_newest,
            "refresh_tokens_in_output": self.tokens_in_output,
            "refresh_tokens_in_state_db": self.tokens_in_store,
            "customers_edited_while_running": len(self.edited),
            "lost_creates_found_by_source_key": self.found_by_source_key,
            "lost_creates_found_after_a_duplicate_fault": self.found_after_duplicate,
        }


class BooksChaos(Chaos):
    """``Chaos`` with a QuickBooks company as the target (the pair's ``example`` writes to QuickBooks).

    Lives run ``ferry -v``: every info log line is on their stderr, where the figures count the lost creates
    found again, and where no refresh token may appear."""

    ferry_flags = ("-v",)

    def __init__(self, tmp: Path, config: ChaosConfig) -> None:  # not super().__init__: no Salesforce org
        self.tmp = tmp
        self.config = config
        self.rng = random.Random(config.seed)
        self.home = tmp / "home"
        self.db_path = self.home / "ferry.db"
        self.token_file = tmp / "qbo.token"
        self.edited: set[str] = set()
        self.source: SourcePair = PAIRS[config.pair](tmp, config)
        self.books = self._company(tmp / "books")
        # Tokens rotate at the first refresh 2 s after the last rotation; a superseded one works 10 s more.
        self.books.oauth.configure({"rotate_after": 2.0, "rotation_grace": 10.0})
        self.watched = InFlight(self.books.app)
        self.source_run: RunningSandbox | None = None
        self.books_run: RunningSandbox | None = None
        self.clean_proc: CleanBooksRun | None = None
        self._stop_expiring = threading.Event()

    @staticmethod
    def _company(path: Path) -> QuickBooksSandbox:
        return QuickBooksSandbox(path, seed=7, customers=0, products=0, orders=0)

    def __enter__(self) -> BooksChaos:
        self.source_run = self.source.start()
        self.books_run = start_in_thread(self.watched, self.tmp)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_expiring.set()
        if self.clean_proc is not None:
            self.clean_proc.stop()
        for running in (self.books_run, self.source_run):
            if running is not None:
                running.stop()

    def _pipeline(self) -> Path:
        spec = yaml.safe_load(self.source.example.read_text())
        spec["name"] = "chaos"
        spec["source"].update(page_size=self.config.page_size, timeout_seconds=1.5)
        # Batches of 10, not 30: more batch calls for a kill to land in.
        spec["target"].update(timeout_seconds=3.0, batch_size=self.config.page_size // 2)
        spec["retry"] = {"max_attempts": 10, "backoff_max_seconds": 1.0}
        path = self.tmp / "chaos.yml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    def books_env(self, books: QuickBooksSandbox, run: RunningSandbox, home: Path, token_file: Path,
                  source: tuple[Any, RunningSandbox] | None = None) -> dict[str, str]:
        info = {**books.credentials(run.url), "ca_file": str(run.ca_file), "token_file": str(token_file)}
        return {**_base_env(), **self.source.env(info, source), "FERRY_HOME": str(home), "PYTHONUNBUFFERED": "1"}

    def _open_job_states(self) -> list[str]:
        """A batch call in flight on the company stands for the Bulk job of the Salesforce pairs."""
        return ["batch in flight"] * self.watched.batches

    def _expire_access_tokens(self) -> None:
        """Every 4 s the company forgets its access tokens: a 401 mid-run, a refresh (and a rotation)."""
        assert self.books_run
        ctx = ssl.create_default_context(cafile=str(self.books_run.ca_file))
        with httpx.Client(verify=ctx, timeout=10) as client:
            while not self._stop_expiring.wait(4.0):
                with contextlib.suppress(httpx.HTTPError):
                    client.post(f"{self.books_run.url}/__sandbox/oauth/expire")

    def run(self) -> BooksChaosResult:  # type: ignore[override]
        assert self.source_run and self.books_run
        started = time.monotonic()
        pipeline = self._pipeline()
        env = self.books_env(self.books, self.books_run, self.home, self.token_file)
        self.source.sandbox.faults.configure(self.source.faults(self.config.seed))
        self.books.faults.configure(books_faults(self.config.seed))
        expirer = threading.Thread(target=self._expire_access_tokens, daemon=True)
        expirer.start()
        lives: list[Life] = []
        kills = batch_kills = 0
        deadline = started + self.config.max_seconds
        while len(lives) < self.config.max_lives and time.monotonic() < deadline:
            want_kill, want_batch = kills < self.config.kills, batch_kills < self.config.bulk_kills
            if not want_kill and not want_batch and self.clean_proc is None:
                self.clean_proc = CleanBooksRun(self, pipeline, self.tmp / f"clean-{len(lives)}")
            life = self._life(len(lives), pipeline, env, kill=want_kill, at_bulk=want_batch, deadline=deadline)
            if life.killed and life.kill_phase == "bulk:results recorded":
                life.kill_phase = "random"  # the batch call was answered before the kill landed
            lives.append(life)
            if life.killed:
                kills += 1
                batch_kills += life.kill_phase.startswith("bulk")
            elif life.exit_code in RUN_FINISHED and not want_kill and not want_batch:
                break
            elif life.exit_code in RUN_FINISHED:
                # Finished before enough kills: new versions to write (renames, and orders for batch calls).
                self._edit_some(4)
                self.source.touch_orders(max(31, self.config.orders // 4), self.rng)
                if self.clean_proc is not None:
                    self.clean_proc.stop()
                    self.clean_proc = None
            elif life.exit_code is not None:
                tail = self._tail(life).strip()
                life.error = tail.splitlines()[-1] if tail else "?"
        self._stop_expiring.set()
        expirer.join(timeout=5)
        faults = {f"shopify:{k}": v for k, v in self.source.sandbox.faults.describe()["injected"].items()}
        faults |= {f"quickbooks:{k}": v for k, v in self.books.faults.describe()["injected"].items()}
        self.source.sandbox.faults.clear()
        self.books.faults.clear()
        books = read_books(self.books_run)
        store = Store(self.db_path)
        letters = store.find_dead_letters(LetterFilter(pipeline="chaos", status=None), 1_000_000)
        store.close()
        if self.clean_proc is None:
            self.clean_proc = CleanBooksRun(self, pipeline, self.tmp / "clean")
        clean_books, clean_letters = self.clean_proc.result()
        orders = {str(o["name"]): str(o["id"]) for o in self.source.sandbox.store.orders}
        tokens = list(self.books.oauth.grants)
        output = "".join(p.read_text(errors="replace") for p in self.tmp.glob("life-*.*"))
        db = b"".join(p.read_bytes() for p in self.home.glob("ferry.db*"))
        newest = self.books.oauth._newest(self.books.oauth.grants[self.books.refresh_token]).token
        return BooksChaosResult(
            config=self.config,
            lives=lives,
            reconciliation=reconcile_books(books, clean_books, letters, clean_letters, orders),
            faults=faults,
            records={o: len(books[o]) for o in OBJECTS},
            dead_letters=dict(Counter(d.error_code for d in letters if d.status == "open")),
            api_calls={"shopify": self.source.api_calls(), "quickbooks": self.books.state.stats.api_calls},
            edited=set(self.edited),
            seconds=time.monotonic() - started,
            rotations=self.books.oauth.rotations,
            token_file_is_newest=self.token_file.read_text().strip() == newest,
            tokens_in_output=sum(1 for t in tokens if t in output),
            tokens_in_store=sum(1 for t in tokens if t.encode() in db),
            found_by_source_key=output.count("quickbooks.lost_create_found_by_source_key"),
            found_after_duplicate=output.count("quickbooks.create_found_done"),
            final_run=lives[-1].stats or {} if lives else {},
        )


def _base_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def read_books(run: RunningSandbox) -> dict[str, list[dict[str, Any]]]:
    ctx = ssl.create_default_context(cafile=str(run.ca_file))
    with httpx.Client(verify=ctx, timeout=60) as client:
        return {e: client.get(f"{run.url}/__sandbox/records/{e}").json() for e in OBJECTS}


class CleanBooksRun:
    """The oracle: the chaos pipeline, never killed and fault-free, from a copy of the shop as it is now into
    a new company with its own ferry home and token file. It runs alongside the chaos run's last life."""

    def __init__(self, chaos: BooksChaos, pipeline: Path, tmp: Path) -> None:
        tmp.mkdir()
        self.home = tmp / "home"
        self.books = chaos._company(tmp / "books")
        source = chaos.source.at_rest_copy(tmp)
        self.source_run = start_in_thread(source.app, tmp)
        self.books_run = self.books.start(tmp)
        env = chaos.books_env(self.books, self.books_run, self.home, tmp / "qbo.token", (source, self.source_run))
        self.err = tmp / "clean.err"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ferry", "run", str(pipeline), "--json"],
            env=env, stdout=subprocess.DEVNULL, stderr=open(self.err, "w"),  # noqa: SIM115 - the child holds it
        )

    def result(self) -> tuple[dict[str, list[dict[str, Any]]], list[DeadLetter]]:
        try:
            code = self.proc.wait(timeout=600)
            assert code in RUN_FINISHED, f"the clean run failed: {self.err.read_text()[-3000:]}"
            books = read_books(self.books_run)
        finally:
            self.stop()
        store = Store(self.home / "ferry.db")
        try:
            return books, store.find_dead_letters(LetterFilter(pipeline="chaos", status=None), 1_000_000)
        finally:
            store.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.books_run.stop()
        self.source_run.stop()
