"""The budget guard: a pipeline never spends more of the org's daily API requests than it was given.

Salesforce counts DailyApiRequests over a rolling 24-hour window: a call made at 10:00 counts until
10:00 the next day. So the share is enforced over that window, across runs and processes, not per run:

* a ledger in the state store (the ``ApiLedger`` port: calls per pipeline per minute) counts every call **before**
  it is sent, in its own committed transaction (a crash after the count and before the send over-counts
  by that call; nothing can under-count). The check and the count are one transaction, so two processes
  of one pipeline can never both take the last call of the share;
* at run start the guard reads the ledger's last 24 h back (and prunes what is older), and the org's
  whole allocation as last reported, so a ``20%`` share is known before the first call;
* the org's ``Sforce-Limit-Info: api-usage=used/max`` on every answer says what *others* spent: the
  stricter of the two (our share left, the org's allocation left) wins.

``spend()`` runs before every attempt of every call (retries spend budget too). When the next call would
pass the share, or the org's allocation, it raises ``BudgetExhausted`` *before* sending: the caller is at
a clean point (no request half made) and the runner records a paused run. The error says when the run can
resume: for the share, the moment the oldest calls of the window have aged out far enough to allow the
next call; for the org's allocation (others' calls are invisible to us) 24 h from now at the latest.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ferry.connectors.salesforce.config import ApiBudget
from ferry.core.ports import ApiLedger
from ferry.errors import BudgetExhausted

WINDOW_SECONDS = 24 * 3600
BUCKET_SECONDS = 60  # calls are counted per minute: at most 1,440 ledger rows per pipeline
SYSTEM = "salesforce"

Clock = Callable[[], float]


class BudgetStop(BudgetExhausted):
    """Raised by the guard (before a call, or for the org's own refusal): carries when to resume."""


def bucket_of(t: float) -> int:
    return int(t // BUCKET_SECONDS)


def window_start(now: float) -> int:
    """The oldest bucket still inside the window at ``now``. A bucket counts until its *last* second has
    aged out (its calls may have been made at any moment of that minute): conservative, never early."""
    return int((now - WINDOW_SECONDS) // BUCKET_SECONDS)


def ages_out(bucket: int) -> float:
    """When every call counted in ``bucket`` has left the rolling window."""
    return (bucket + 1) * BUCKET_SECONDS + WINDOW_SECONDS


def utc_text(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class CallLedger:
    """One pipeline's rows of the state store's API call ledger."""

    def __init__(self, ledger: ApiLedger, pipeline: str, system: str = SYSTEM) -> None:
        self.ledger = ledger
        self.pipeline = pipeline
        self.system = system

    def take(self, bucket: int, calls: int, *, cap: int | None, since: int) -> tuple[bool, int]:
        return self.ledger.take_api_calls(self.pipeline, self.system, bucket, calls, cap=cap, since_minute=since)

    def buckets(self, since: int) -> list[tuple[int, int]]:
        return self.ledger.api_call_buckets(self.pipeline, self.system, since)

    def prune(self, before: int) -> int:
        return self.ledger.prune_api_calls(before)

    def allocation(self) -> int | None:
        return self.ledger.api_allocation(self.pipeline, self.system)

    def save_allocation(self, daily_max: int) -> None:
        self.ledger.save_api_allocation(self.pipeline, self.system, daily_max)


@dataclass(slots=True, frozen=True)
class BudgetStatus:
    """What ``ferry plan``, the run summary and ``ferry runs`` show about the share."""

    share: str | None
    allowed: int | None  # calls the share allows per rolling 24 h (None: a % of a still unknown allocation)
    spent_24h: int  # this pipeline's calls in the last 24 h, this run's included
    spent_this_run: int
    remaining: int | None  # before the guard stops: min(share left, the org's allocation left)
    org_used: int | None
    org_max: int | None
    resume_after: str | None = None  # set when the guard stopped a call

    def as_dict(self) -> dict[str, Any]:
        return {
            "share": self.share,
            "allowed": self.allowed,
            "spent_24h": self.spent_24h,
            "spent_this_run": self.spent_this_run,
            "remaining": self.remaining,
            "org_used": self.org_used,
            "org_max": self.org_max,
            "resume_after": self.resume_after,
        }


class BudgetGuard:
    def __init__(self, share: ApiBudget | None, *, ledger: CallLedger | None = None, clock: Clock = time.time) -> None:
        self.share = share
        self._ledger = ledger
        self._clock = clock
        self.spent = 0  # calls sent by this guard's client (every attempt): this run's
        self.org_used: int | None = None
        self.org_max: int | None = None
        self._buckets: Counter[int] = Counter()  # the window's calls per minute, earlier runs' included
        self.resume_after: str | None = None
        if ledger is not None:
            self._load(ledger)

    def _load(self, ledger: CallLedger) -> None:
        since = window_start(self._clock())
        ledger.prune(since)
        self._reload(ledger.buckets(since))
        self.org_max = ledger.allocation()

    def _reload(self, rows: Iterable[tuple[int, int]]) -> None:
        self._buckets = Counter(dict(rows))

    # ------------------------------------------------------------------ inputs

    def observe(self, usage: tuple[int, int]) -> None:
        """The org's latest ``api-usage=used/max``."""
        used, daily_max = usage
        if daily_max != self.org_max and self._ledger is not None:
            self._ledger.save_allocation(daily_max)
        self.org_used, self.org_max = used, daily_max

    def org_refused(self, exc: BudgetExhausted) -> BudgetStop:
        """The org itself refused a call (REQUEST_LIMIT_EXCEEDED, TotalRequests): stop every later call of
        this run before it is sent, and say when to come back."""
        if self.org_max is not None:
            self.org_used = max(self.org_used or 0, self.org_max)
        self.resume_after = utc_text(self._clock() + WINDOW_SECONDS)
        return BudgetStop(
            f"{exc}; resume after {self.resume_after} (UTC) at the latest, earlier as other users' calls age out",
            resume_after=self.resume_after,
        )

    def spend(self, calls: int = 1) -> None:
        """Count ``calls`` about to be sent, or raise ``BudgetExhausted`` (nothing counted, nothing sent) if
        they would pass the share over the last 24 h or the org's allocation."""
        now = self._clock()
        if self.org_used is not None and self.org_max is not None and self.org_max - self.org_used < calls:
            raise self._org_spent(now)
        allowed = self.allowed
        bucket, since = bucket_of(now), window_start(now)
        if self._ledger is not None:
            taken, _ = self._ledger.take(bucket, calls, cap=allowed, since=since)
            if not taken:
                self._reload(self._ledger.buckets(since))  # other processes' calls included
                raise self._share_spent(now, calls)
        elif allowed is not None and self.spent_24h(now) + calls > allowed:
            raise self._share_spent(now, calls)
        self._buckets[bucket] += calls
        self.spent += calls
        if self.org_used is not None:
            # Until the next header arrives, assume our call was counted (never under-count).
            self.org_used += calls

    # ------------------------------------------------------------------ decisions

    @property
    def allowed(self) -> int | None:
        """Calls this pipeline may spend per rolling 24 h, or None when only the org's allocation caps it."""
        return self.share.allowed(self.org_max) if self.share is not None else None

    def spent_24h(self, now: float | None = None) -> int:
        since = window_start(self._clock() if now is None else now)
        return sum(n for b, n in self._buckets.items() if b >= since)

    def remaining(self) -> int | None:
        """Calls left before the guard stops: min(our share left, the org's allocation left); None if unknown."""
        left: list[int] = []
        allowed = self.allowed
        if allowed is not None:
            left.append(allowed - self.spent_24h())
        if self.org_used is not None and self.org_max is not None:
            left.append(self.org_max - self.org_used)
        return max(0, min(left)) if left else None

    def status(self) -> BudgetStatus:
        return BudgetStatus(
            str(self.share) if self.share is not None else None,
            self.allowed,
            self.spent_24h(),
            self.spent,
            self.remaining(),
            self.org_used,
            self.org_max,
            self.resume_after,
        )

    def share_resumes_at(self, now: float, calls: int = 1) -> float:
        """The first moment ``calls`` more fit in the share: when enough of the window's oldest calls have
        aged out (not merely this run's first call + 24 h: earlier runs' calls count too)."""
        allowed = self.allowed or 0
        since = window_start(now)
        window = sorted((b, n) for b, n in self._buckets.items() if b >= since)
        excess = sum(n for _, n in window) + calls - allowed
        if excess <= 0:
            return now
        if calls > allowed:  # more than the whole share at once: never fits
            return now + WINDOW_SECONDS
        freed = 0
        for bucket, n in window:
            freed += n
            if freed >= excess:
                return ages_out(bucket)
        return now + WINDOW_SECONDS  # unreachable while the window holds the calls counted above

    # ------------------------------------------------------------------ errors

    def _share_spent(self, now: float, calls: int) -> BudgetStop:
        self.resume_after = utc_text(self.share_resumes_at(now, calls))
        spent = self.spent_24h(now)
        return BudgetStop(
            f"this pipeline's api_budget ({self.share}: {self.allowed:,} calls per rolling 24 h) is spent "
            f"({spent:,} in the last 24 h, {self.spent:,} by this run); stopped before the next call. "
            f"Resume after {self.resume_after} (UTC), when enough of the window's oldest calls age out, "
            "or raise api_budget",
            resume_after=self.resume_after,
        )

    def _org_spent(self, now: float) -> BudgetStop:
        # Others' calls are invisible to us: all of today's usage has aged out 24 h from now at the latest.
        self.resume_after = utc_text(now + WINDOW_SECONDS)
        return BudgetStop(
            f"the org's daily API allocation is spent ({self.org_used:,}/{self.org_max:,}); stopped before "
            f"the next call. Salesforce counts a rolling 24-hour window: resume after {self.resume_after} "
            "(UTC) at the latest, earlier as other users' calls age out",
            resume_after=self.resume_after,
        )


def pipeline_guard(
    share: ApiBudget | None, ledger: ApiLedger | None, pipeline: str, *, clock: Clock | None = None
) -> BudgetGuard:
    """The guard of one pipeline, backed by the store's API ledger (the sink's ``SinkContext.ledger``): its
    share holds across runs. Without a ledger it counts this process's calls only."""
    return BudgetGuard(
        share, ledger=CallLedger(ledger, pipeline) if ledger is not None else None, clock=clock or time.time
    )
