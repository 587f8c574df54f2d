"""The event source contract: a system that pushes its changes (a change stream), naming no system.

An ``EventSource`` is the streaming sibling of ``Source.read``: ``events(stream, state)`` is an endless
async iterator of ``SourcePage``s, each the full current records behind a micro-batch of change events,
with the ``state`` to resume from. The caller keeps the same rule as for a batch read: it stages each
page's records and its state in ONE transaction (``Staging.stage(..., state)``) before asking for the next
page, so a position (a replay id, an offset) is saved only once the changes before it are durable, and a
restart with the saved state loses nothing. A page may repeat records a previous page had (a catch-up read
overlaps the live stream); staging keeps one copy per (key, version).

A source keeps the never-lose rule itself: when its stream cannot resume exactly (the position expired,
the system reported dropped or unrenderable changes) it reads what changed since the state's watermark
("catch-up") before it goes live again, never skipping silently.

Each record a page yields carries ``CHANGE_KEY`` (``ChangeInfo``): who made the change and through what,
so a bidirectional pipeline can tell its own writes coming back (echoes) from other people's edits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, TypedDict

from ferry.core.contracts import AsyncContext, SourcePage

CHANGE_KEY = "_change"  # the raw record's key holding its ChangeInfo

# ChangeInfo.kind values every event source uses; a source may add its own system's kinds (e.g. "gap_update").
CREATE, UPDATE, DELETE, UNDELETE = "create", "update", "delete", "undelete"
CATCH_UP = "catch_up"  # read by watermark after a loss, not from an event: origin and user are unknown


class ChangeInfo(TypedDict):
    kind: str  # create / update / delete / undelete / catch_up, or the source's own (lower case)
    origin: str  # what made the change, in the system's words (Salesforce: changeOrigin, "...;client=ferry")
    user: str  # who made it (Salesforce: commitUser, a User id); "" when unknown
    committed_at: str  # when the system committed it, ISO 8601 UTC; "" for catch-up records
    position: str  # where in the stream it came from (Salesforce: the replay id); "" for catch-up records
    transaction: str  # the system's transaction key, to group changes made together; "" when none


class EventSource(AsyncContext, Protocol):
    """A system that streams its changes. ``async with`` opens connections, leaving closes them."""

    system: str

    @property
    def streams(self) -> Sequence[str]:
        """The streams (objects) this source follows."""
        ...

    def events(self, stream: str, state: dict[str, Any] | None) -> AsyncIterator[SourcePage]:
        """Pages of full current records of ``stream`` as changes arrive, from ``state`` (None: from now on).

        Never ends by itself; cancel the iteration to stop. Ask for the next page only after the previous
        one (records and state) is durable. A page, empty if need be, comes as soon as the source is
        subscribed (started or resumed): a follower knows it is live again without waiting for a change.
        Raises TransientError when the system stays unreachable past
        the source's retries (call again later with the last saved state), PermanentError (AuthError,
        ConfigError) when a human must act."""
        ...


def change_of(raw: dict[str, Any]) -> ChangeInfo | None:
    """The ChangeInfo an event source attached to a raw record, if any."""
    info = raw.get(CHANGE_KEY)
    return info if isinstance(info, dict) else None  # type: ignore[return-value]
