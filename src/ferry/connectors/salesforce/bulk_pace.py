"""When a Bulk ingest job will be done, from what its polls have shown so far.

An org processes an ingest job in internal chunks (10,000 records in Salesforce) at a roughly steady
pace, and a poll reports ``numberRecordsProcessed`` at chunk granularity. Each poll therefore bounds
two unknowns, when processing began (``start``) and the seconds it takes per record (``per_row``):
a poll at ``t`` that saw ``p`` records done says the frontier ``(t - start) / per_row`` had reached
``p`` but not yet ``p + chunk``. Both bounds are linear in (start, per_row), so the latest completion
time ``start + total * per_row`` consistent with every poll is a two-variable linear programme,
solved here by checking the corners of the feasible polygon (a handful of polls: a few hundred
corners at most).

Polling at that latest consistent time sees the job done unless its pace changed; a miss adds a
poll that narrows the window, so the next aim is closer. When the polls contradict a steady pace
(the org slowed down, chunks of very different sizes), the window is widened by assuming coarser
chunks, and if that still fails there is no estimate: the caller falls back to plain backoff.

A job's own polls pin its pace loosely while they are few (two counts leave a chunk's time open by a factor of
two or more). An earlier job of the same org and run bounds it better: it was seen not yet started at one time
and done at another, so its records took at most that long each (``slowest_per_row``), and its job info says how
long the org processed it (``totalProcessingTime``; ``pace_prior`` takes the smaller). That pace is taken as a
prior on the next job's (``max_per_row``): the same org, at the same hour, under the same load. It is a
guess, not a fact (another object may cost more a record): when the job's own polls contradict it, it is
dropped, and an aim it made too early costs one poll, which then narrows the window as any miss does.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

_EPS = 1e-9
LAST_POLL_SLIP = 0.25  # the budget's last poll goes this share of a chunk's time past the latest end
_WIDEN_STEPS = 3  # chunk x2, x4, x8 before giving up on a steady pace


@dataclass(slots=True)
class JobPace:
    total: int  # records uploaded to the job
    opened_at: float  # when the job was closed (UploadComplete): processing cannot start earlier
    seen: list[tuple[float, int]] = field(default_factory=list)  # (time of a poll, records processed)
    max_per_row: float | None = None  # prior: seconds a record took at most in an earlier job (slowest_per_row)
    _guessed: bool = False  # the one early aim at a finishing job was taken

    def observe(self, when: float, processed: int) -> None:
        self.seen.append((when, min(max(0, processed), self.total)))

    @property
    def chunk(self) -> int | None:
        """Smallest step seen between distinct processed counts (0 is where every job starts)."""
        counts = sorted({0, *(p for _, p in self.seen)})
        steps = [b - a for a, b in itertools.pairwise(counts)]
        return min(steps) if steps else None

    def aim(self, *, polls_left: int = 3) -> float | None:
        """When to poll next to see the job done: None while nothing was processed (no pace to go by).

        Until a poll has seen every record processed: the latest time the last chunk can be reported at
        the pace seen. After one has (the org still finishing, as it commits the last chunk), finishing
        is allowed one chunk's time; the first such poll goes halfway through the window of possible
        ends (its width is mostly the uncertainty of that chunk time), any later one to its end, so a
        job costs at most one poll more than aiming at the latest end every time. With ``polls_left`` (of the
        job's poll budget, this one included) at 2 or fewer there is no early poll, and the last one goes a
        quarter of a chunk's time past the latest end, so a pace that slipped a little (a loaded org) still
        finds the job done.
        """
        window = self.end_window()
        if window is None:
            return None
        earliest, latest = window
        earliest = max(earliest, self.seen[-1][0])  # the last poll saw it still running
        if self.finishing and not self._guessed and polls_left >= 3:
            self._guessed = True
            return (earliest + latest) / 2
        if polls_left <= 1:
            return latest + LAST_POLL_SLIP * self.chunk_seconds()
        return latest

    def chunk_seconds(self) -> float:
        """The longest time one chunk can take at a pace the polls allow (0 when unknown)."""
        chunk = self.chunk
        corners = self._feasible(chunk) if chunk else []
        return max((per_row * chunk for _, per_row in corners), default=0.0) if chunk else 0.0

    @property
    def finishing(self) -> bool:
        return any(p >= self.total for _, p in self.seen)

    def end_window(self) -> tuple[float, float] | None:
        """(earliest, latest) time the job can end at a steady pace; None while nothing was processed."""
        chunk = self.chunk
        if chunk is None or self.total <= 0 or max(p for _, p in self.seen) <= chunk:
            return None  # one step seen: it may have come at any pace (the first count may show at once)
        # The last count shows when the frontier reaches the chunk boundary past the total (a short last chunk
        # may show its count as it starts); the job ends by then, or one chunk's time after (see ``aim``).
        records = self.total + chunk if self.finishing else -(-self.total // chunk) * chunk
        for widen in range(_WIDEN_STEPS + 1):
            corners = self._feasible(chunk * 2**widen)
            if corners:
                ends = [start + records * per_row for start, per_row in corners]
                return min(ends), max(ends)
        return None

    def rate(self) -> float | None:
        """Records a second at the slowest steady pace the polls allow (for the next job's first aim)."""
        chunk = self.chunk
        if chunk is None:
            return None
        corners = self._corners(chunk)
        slowest = max((per_row for _, per_row in corners), default=None)
        return 1 / slowest if slowest else None

    # ------------------------------------------------------------------ the linear programme

    def _feasible(self, chunk: int) -> list[tuple[float, float]]:
        """The corners with the prior on the pace, or without it when the polls contradict it."""
        if self.max_per_row is not None:
            corners = self._corners(chunk, prior=True)
            if corners:
                return corners
        return self._corners(chunk)

    def _constraints(self, chunk: int, prior: bool = False) -> list[tuple[float, float, float]]:
        """Half-planes ``a * start + b * per_row <= c``. The count of a chunk may show when the chunk starts
        or when it ends (orgs differ), so the first chunk shows no sooner than the job was closed."""
        rows: list[tuple[float, float, float]] = [(-1.0, -float(chunk), -self.opened_at), (0.0, -1.0, 0.0)]
        if prior and self.max_per_row is not None:
            rows.append((0.0, 1.0, self.max_per_row))
        for when, processed in self.seen:
            if processed > 0:  # a count of 0 does not say processing has begun
                rows.append((1.0, float(processed), when))  # the frontier had reached `processed` by `when`
            if processed < self.total:
                rows.append((-1.0, -float(processed + chunk), -when))  # ... but not the next chunk
        return rows

    def _corners(self, chunk: int, prior: bool = False) -> list[tuple[float, float]]:
        rows = self._constraints(chunk, prior)
        corners = []
        for (a1, b1, c1), (a2, b2, c2) in itertools.combinations(rows, 2):
            det = a1 * b2 - a2 * b1
            if abs(det) < _EPS:
                continue
            start = (c1 * b2 - c2 * b1) / det
            per_row = (a1 * c2 - a2 * c1) / det
            if per_row > 0 and all(a * start + b * per_row <= c + _slack(a * start, b * per_row, c)
                                   for a, b, c in rows):
                corners.append((start, per_row))
        return corners


def _slack(*terms: float) -> float:
    """Rounding room for one half-plane, relative to its own terms: times are seconds of a monotonic clock (large),
    the prior's bound is seconds a record (small), and one room for both let a corner pass the prior by far."""
    return 1e-6 * max(abs(t) for t in terms) + _EPS * _EPS


def slowest_per_row(records: int, not_started_at: float, done_at: float) -> float | None:
    """The most seconds a record of a finished job can have taken: it was seen not started (closed, or still
    queued) at ``not_started_at`` and terminal at ``done_at``, so all its processing fits between them."""
    if records <= 0 or done_at <= not_started_at:
        return None
    return (done_at - not_started_at) / records


def pace_prior(records: int, not_started_at: float, done_at: float, processing_ms: object) -> float | None:
    """Seconds a record, for the next job's prior: the finished job's ``totalProcessingTime`` (milliseconds the org
    says it took to process the job, its queue apart) per record, when it reports one below what the polls bound
    (``slowest_per_row``: that bound holds the queue after the last look and the look's own lateness too); else the
    bound. A job processed in parallel batches reports their sum, which the bound then caps."""
    bound = slowest_per_row(records, not_started_at, done_at)
    if bound is None or not isinstance(processing_ms, int | float) or processing_ms <= 0:
        return bound
    return min(bound, processing_ms / 1000 / records)
