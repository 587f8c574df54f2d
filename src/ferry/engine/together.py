"""Run coroutines at the same time; the first failure cancels the others and is raised as itself."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any


async def run_together(coroutines: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Await all of them concurrently. Callers catch ferry's error types (BudgetExhausted, AuthError...), so the
    first real error is raised, not an ExceptionGroup; what the cancelled ones committed stays committed."""
    todo = list(coroutines)
    if len(todo) == 1:
        await todo[0]
        return
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in todo:
                group.create_task(coroutine)
    except BaseExceptionGroup as grouped:
        raise _first_leaf(grouped) from None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
