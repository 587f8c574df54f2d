"""The consumer loop every worker runs on a bus: dedup, heartbeat, ack after the effect, bounded retries.

For each message: skip it (ack) when the ``DedupStore`` says it was done; otherwise run the handler while a
heartbeat (``in_progress``) keeps the ack wait from running out; on success record the id as done, then ack.
A failure is retried with a growing delay (``nak(delay)``: an immediate nak would burn ``max_deliver`` in
milliseconds); on the last allowed delivery, or on ``PermanentWorkError``, the message becomes a dead letter with
the reason, and only once the dead letter is stored is the message acked away. Items whose deliveries all timed
out (their workers died) are dead-lettered by the bus's own sweep (``sweep``), run here every ``sweep_every``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection

import structlog

from ferry.core.bus import (
    Bus,
    BusDeadLetter,
    BusMessage,
    DeadLetterHandler,
    DedupStore,
    Handler,
    PermanentWorkError,
)
from ferry.observe import metrics

log = structlog.get_logger("ferry.bus")


def retry_delay(attempt: int) -> float:
    """Seconds before delivery ``attempt + 1``: 1, 2, 4... capped at 5 minutes."""
    return float(min(300, 2 ** (attempt - 1)))


class WorkConsumer:
    """Runs ``handler`` over a bus's messages until stopped; concurrency is the bus's in-flight bound.

    ``heartbeat``: seconds between ``in_progress()`` calls while a handler runs (default a third of the bus's ack
    wait; None for none)."""

    def __init__(
        self,
        bus: Bus,
        handler: Handler,
        dead_letters: DeadLetterHandler,
        *,
        dedup: DedupStore | None = None,
        heartbeat: float | None = -1.0,
        delay: Callable[[int], float] = retry_delay,
        sweep: Callable[[DeadLetterHandler], Awaitable[int]] | None = None,
        sweep_every: float = 30.0,
    ) -> None:
        self.bus = bus
        self.handler = handler
        self.dead_letters = dead_letters
        self.dedup = dedup
        # Default: an in_progress() every third of the ack wait; None: no heartbeat (short items).
        self.heartbeat = bus.ack_wait / 3 if heartbeat is not None and heartbeat < 0 else heartbeat
        self.delay = delay
        self.sweep = sweep
        self.sweep_every = sweep_every
        self._running: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event, partitions: Collection[int] | None = None) -> None:
        """Consume until ``stop`` is set, then let the messages in hand finish (nothing is abandoned half-way:
        an unfinished one would come back after the ack wait anyway)."""
        pulling = asyncio.create_task(self._pull(partitions))
        sweeping = asyncio.create_task(self._sweep_loop()) if self.sweep is not None else None
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({pulling, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if pulling.done():
                pulling.result()  # raise what broke the pull loop
        finally:
            for task in (pulling, sweeping, stopped):
                if task is not None:
                    task.cancel()
            await asyncio.gather(*[t for t in (pulling, sweeping, stopped) if t], return_exceptions=True)
            if self._running:
                await asyncio.gather(*self._running, return_exceptions=True)

    async def _pull(self, partitions: Collection[int] | None) -> None:
        async for message in self.bus.messages(partitions):
            task = asyncio.create_task(self.handle(message))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _sweep_loop(self) -> None:
        assert self.sweep is not None
        while True:
            try:
                await self.sweep(self.dead_letters)
            except Exception as exc:  # the bus is away: the next sweep tries again
                log.warning("bus.sweep_failed", error=type(exc).__name__)
            await asyncio.sleep(self.sweep_every)

    async def handle(self, message: BusMessage) -> None:
        try:
            await self._handle(message)
        except Exception as exc:  # settling failed (the bus is away): the item comes back after the ack wait
            log.warning("bus.settle_failed", msg_id=message.msg_id, error=type(exc).__name__)

    async def _handle(self, message: BusMessage) -> None:
        if self.dedup is not None and self.dedup.seen([message.msg_id]):
            metrics.bus_message("duplicate")
            await message.ack()
            return
        beat = asyncio.create_task(self._keep_alive(message)) if self.heartbeat else None
        try:
            await self.handler(message)
        except PermanentWorkError as exc:
            await self._dead_letter(message, f"permanent error: {exc}")
        except Exception as exc:  # any other failure is retried, up to max_deliver
            reason = f"{type(exc).__name__}: {exc}"
            if message.attempt >= self.bus.max_deliver:
                await self._dead_letter(message, f"failed on all {message.attempt} deliveries; last error: {reason}")
            else:
                log.info("bus.retry", msg_id=message.msg_id, attempt=message.attempt, error=reason)
                metrics.bus_message("retried")
                await message.nak(delay=self.delay(message.attempt))
        else:
            if self.dedup is not None:
                self.dedup.remember([message.msg_id])
            await message.ack()
            metrics.bus_message("acked")
        finally:
            if beat is not None:
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat

    async def _dead_letter(self, message: BusMessage, reason: str) -> None:
        letter = BusDeadLetter(
            subject=message.subject,
            msg_id=message.msg_id,
            data=message.data,
            attempts=message.attempt,
            reason=reason,
            sequence=message.sequence,
        )
        try:
            await self.dead_letters(letter)
        except Exception as exc:
            # Not stored, so not acked: a nak brings it back while deliveries remain; past the last one the
            # server gives up on it and the sweep dead-letters it from the MAX_DELIVERIES advisory.
            log.warning("bus.dead_letter_failed", msg_id=message.msg_id, error=f"{type(exc).__name__}: {exc}")
            await message.nak(delay=self.delay(message.attempt))
            return
        await message.ack()  # the dead letter is durable: now the bus may forget the message
        metrics.bus_message("dead_lettered")
        log.warning("bus.dead_letter", msg_id=message.msg_id, attempts=message.attempt, reason=reason)

    async def _keep_alive(self, message: BusMessage) -> None:
        assert self.heartbeat is not None
        while True:
            await asyncio.sleep(self.heartbeat)
            with contextlib.suppress(Exception):
                await message.in_progress()
