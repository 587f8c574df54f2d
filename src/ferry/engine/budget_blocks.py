"""API budget in blocks: a ``ferry worker`` reserves several calls at once from the shared ledger.

Every Salesforce call is counted in the state store's ledger before it is sent (``ApiLedger.take_api_calls``: one
transaction that locks the pipeline's ledger row). With many workers that row lock is taken once per API call by
every process, and the take runs on the worker's event loop. ``BlockLedger`` wraps the shared ledger and takes
``block`` calls at a time, then hands them out locally; the budget still holds across all workers together,
because a block is counted against the cap when it is reserved, exactly like single calls were:

* **never exceeded**: the shared ledger's sum (reservations included) never passes the cap, so the calls
  actually sent (a subset of the reservations) cannot either. When a whole block no longer fits, the take falls
  back to exactly the calls asked for, so the last calls of a share are not lost to rounding;
* **counted in the right minute**: a block is only used within the minute it was counted in. At the first take in
  a later minute (and at ``close``) the unused rest is given back to its own minute, so a call is never counted
  earlier than it is sent (an earlier count would age out of the rolling window before Salesforce's does);
* **a crash over-counts, never under-counts**: a worker killed while holding a block leaves those calls counted
  (as a crash between the count and the send always did).

Only rolling-window budgets are taken in blocks (the window starts before this minute: Salesforce's 24 h share).
A per-minute pacing window (QuickBooks's 40 calls a minute, ``since_minute == minute``) passes straight through:
calls reserved and not sent there would hold the other workers back within the very minute that is paced.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ferry.core.ports import ApiLedger

DEFAULT_BLOCK = 20


@dataclass(slots=True)
class _Held:
    minute: int
    calls: int  # reserved in ``minute`` and not handed out yet
    spent: int  # the window's count the shared ledger reported at the reservation


class BlockLedger:
    """An ``ApiLedger`` that reserves rolling-window calls ``block`` at a time from ``ledger`` (see module doc)."""

    def __init__(self, ledger: ApiLedger, block: int = DEFAULT_BLOCK) -> None:
        if block < 1:
            raise ValueError(f"block must be 1 or more, not {block}")
        self.ledger = ledger
        self.block = block
        self._held: dict[tuple[str, str], _Held] = {}
        # The Salesforce client takes on its event loop, store work runs in threads: one take at a time.
        self._lock = threading.Lock()

    def take_api_calls(
        self, pipeline: str, system: str, minute: int, calls: int, *, cap: int | None, since_minute: int
    ) -> tuple[bool, int]:
        if self.block == 1 or calls <= 0 or since_minute >= minute:
            return self.ledger.take_api_calls(pipeline, system, minute, calls, cap=cap, since_minute=since_minute)
        with self._lock:
            key = (pipeline, system)
            held = self._held.get(key)
            if held is not None and held.minute == minute and held.calls >= calls:
                held.calls -= calls
                return True, held.spent
            self._give_back(key)  # a past minute's rest, or too few for this take
            want = max(calls, self.block)
            taken, spent = self.ledger.take_api_calls(pipeline, system, minute, want, cap=cap,
                                                      since_minute=since_minute)
            if taken:
                self._held[key] = _Held(minute, want - calls, spent)
                return True, spent
            if want == calls:
                return False, spent
            # The block does not fit any more: the exact calls may (the share's last few).
            return self.ledger.take_api_calls(pipeline, system, minute, calls, cap=cap, since_minute=since_minute)

    def held(self) -> int:
        """Calls reserved and not handed out yet (all pipelines)."""
        with self._lock:
            return sum(h.calls for h in self._held.values())

    def close(self) -> None:
        """Give every unused reservation back to the shared ledger (a worker stopping cleanly)."""
        with self._lock:
            for key in list(self._held):
                self._give_back(key)

    def _give_back(self, key: tuple[str, str]) -> None:
        held = self._held.pop(key, None)
        if held is None or held.calls == 0:
            return
        # A negative count in the minute it was reserved in (never capped: it only lowers the sum).
        self.ledger.take_api_calls(key[0], key[1], held.minute, -held.calls, cap=None, since_minute=held.minute)

    # The rest of the port, unchanged.
    def api_call_buckets(self, pipeline: str, system: str, since_minute: int) -> list[tuple[int, int]]:
        return self.ledger.api_call_buckets(pipeline, system, since_minute)

    def prune_api_calls(self, before_minute: int) -> int:
        return self.ledger.prune_api_calls(before_minute)

    def save_api_allocation(self, pipeline: str, system: str, daily_max: int) -> None:
        self.ledger.save_api_allocation(pipeline, system, daily_max)

    def api_allocation(self, pipeline: str, system: str) -> int | None:
        return self.ledger.api_allocation(pipeline, system)
