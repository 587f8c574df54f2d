"""The budget guard: a pipeline never spends more of the org's daily API requests than it was given.

Two sources of truth are combined, and the stricter wins:

* ferry's own count of the calls this sink sent (it knows them before the org reports them), and
* the org's ``Sforce-Limit-Info: api-usage=used/max`` on every answer (it knows what *others* spent).

``check()`` runs before every attempt of every call (retries spend budget too). When the next call
would pass the pipeline's share, or the org's whole allocation, it raises ``BudgetExhausted`` *before*
sending: the caller is at a clean point (no request half made) and the runner records a paused run.
Salesforce's daily limit is a rolling 24-hour window, so calls made now free up 24 h after they were
made; the error says when this pipeline's earliest call of the window ages out.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

from ferry.connectors.salesforce.config import ApiBudget
from ferry.errors import BudgetExhausted

WINDOW_SECONDS = 24 * 3600


class BudgetGuard:
    def __init__(self, share: ApiBudget | None, *, clock: Callable[[], float] = time.time) -> None:
        self.share = share
        self._clock = clock
        self.spent = 0  # calls sent by this sink (every attempt)
        self.org_used: int | None = None
        self.org_max: int | None = None
        self._first_call_at: float | None = None

    # ------------------------------------------------------------------ inputs

    def observe(self, usage: tuple[int, int]) -> None:
        """The org's latest ``api-usage=used/max``."""
        self.org_used, self.org_max = usage

    def record_call(self) -> None:
        if self._first_call_at is None:
            self._first_call_at = self._clock()
        self.spent += 1
        if self.org_used is not None:
            # Until the next header arrives, assume our call was counted (never under-count).
            self.org_used += 1

    # ------------------------------------------------------------------ decisions

    @property
    def allowed(self) -> int | None:
        """Calls this pipeline may spend in all, or None when only the org's own allocation caps it."""
        return self.share.allowed(self.org_max) if self.share is not None else None

    def remaining(self) -> int | None:
        """Calls left before the guard stops: min(our share left, the org's allocation left); None if unknown."""
        left: list[int] = []
        allowed = self.allowed
        if allowed is not None:
            left.append(allowed - self.spent)
        if self.org_used is not None and self.org_max is not None:
            left.append(self.org_max - self.org_used)
        return max(0, min(left)) if left else None

    def check(self, calls: int = 1) -> None:
        """Raise ``BudgetExhausted`` if ``calls`` more would pass the share or the org's allocation."""
        remaining = self.remaining()
        if remaining is None or remaining >= calls:
            return
        resume = self.resume_at()
        allowed = self.allowed
        if allowed is not None and allowed - self.spent < calls:
            why = f"this pipeline's api_budget ({self.share}: {allowed:,} calls) is spent ({self.spent:,} used)"
        else:
            why = f"the org's daily API allocation is spent ({self.org_used:,}/{self.org_max:,})"
        raise BudgetExhausted(
            f"{why}; stopped before the next call. Salesforce counts a rolling 24-hour window: resume after "
            f"{resume} (UTC), when this run's first calls age out, or raise api_budget",
            resume_after=resume,
        )

    def resume_at(self) -> str:
        start = self._first_call_at if self._first_call_at is not None else self._clock()
        when = dt.datetime.fromtimestamp(start + WINDOW_SECONDS, dt.UTC)
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")
