"""Run coroutines concurrently; if one fails, cancel the rest and raise *its* error (not an ExceptionGroup)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any


async def run_all(coroutines: Iterable[Coroutine[Any, Any, None]]) -> None:
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in coroutines:
                group.create_task(coroutine)
    except BaseExceptionGroup as grouped:
        # Callers catch ferry error types (BudgetExhausted, AuthError); hand them the first real one.
        first = _first_leaf(grouped)
        raise first from None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_leaf(exc)
        return exc
    return group
