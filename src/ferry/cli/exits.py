"""The exit codes of every `ferry` command: what a scheduler (cron, Airflow, a CI job) acts on.

Documented in README.md ("Exit codes") and docs/cli.md; tests/cli/test_bad_inputs.py holds them to it.
"""

from __future__ import annotations

import sqlite3
from enum import IntEnum

from ferry.errors import BudgetExhausted, ConfigError, FerryError, PipelineBusy, StateError


class Exit(IntEnum):
    OK = 0  # done; a run wrote everything it read (or nothing needed writing)
    FAILED = 1  # an error stopped the command (network, credentials, the target refused); `plan` found problems
    USAGE = 2  # nothing was done: a bad option, pipeline file or name, or a run stopped by what `plan` sees
    DEAD_LETTERS_OVER_SHARE = 3  # a run finished, but an object's dead letters exceed max_dead_letter_share
    DEAD_LETTERS = 4  # a run finished with some dead letters, each object within max_dead_letter_share
    TRY_LATER = 5  # paused by the API budget, or another run holds the pipeline; the next run resumes
    STATE = 6  # the state directory or database cannot be used (FERRY_HOME, ferry.db)
    INTERRUPTED = 130  # SIGINT (128 + 2); SIGTERM exits 143 (128 + 15); the run is marked interrupted


def exit_code_of(exc: BaseException) -> int:
    """The exit code an error ends a command with."""
    if isinstance(exc, StateError | sqlite3.DatabaseError):
        return Exit.STATE
    if isinstance(exc, PipelineBusy | BudgetExhausted):
        return Exit.TRY_LATER
    if isinstance(exc, ConfigError):
        return Exit.USAGE
    if isinstance(exc, FerryError):
        return Exit.FAILED
    return Exit.FAILED


# A run that got to its end (whatever its dead letters): what a harness waiting for "the run is done" accepts.
RUN_FINISHED = frozenset({Exit.OK, Exit.DEAD_LETTERS, Exit.DEAD_LETTERS_OVER_SHARE})
