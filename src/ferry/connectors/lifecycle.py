"""The async context-manager shape every connector shares: `async with Source(...) as s:` closes its HTTP pool."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class AsyncResource:
    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
