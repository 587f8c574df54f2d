"""Error taxonomy shared by every layer.

Retryability is a property of the error type, never guessed from a message: the
HTTP core and the engine only ask ``err.transient``. This mirrors how Singer SDK
(RetriableAPIError / FatalAPIError), dlt and Temporal (non-retryable flags) do it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class FerryError(Exception):
    """Base of every error ferry raises on purpose."""

    transient: bool = False


class TransientError(FerryError):
    """Worth retrying: network faults, 5xx, 429, lock contention, expired session."""

    transient = True

    def __init__(self, message: str, *, retry_after: float | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.code = code


class PermanentError(FerryError):
    """Retrying cannot help: bad request, validation, missing permission."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class ConfigError(PermanentError):
    """The pipeline or environment is wrong; the message says what to change."""


class AuthError(PermanentError):
    """Credentials were refused for a reason a human must fix."""


class BudgetExhausted(FerryError):
    """The API budget granted to this pipeline is spent; the run stops at a checkpoint."""

    def __init__(self, message: str, *, resume_after: str | None = None) -> None:
        super().__init__(message)
        self.resume_after = resume_after


@dataclass(slots=True)
class RecordError:
    """Why one record failed: the code a system (or ferry's validator) gave, a message, the fields."""

    code: str
    message: str
    fields: list[str] = field(default_factory=list)
    transient: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "fields": list(self.fields)}


class StateError(FerryError):
    """The state directory or its database cannot be used (unwritable FERRY_HOME, a file that is not a database)."""


class ReadSuperseded(FerryError):
    """A read of an earlier run tried to move a stream's read state that a later run has taken over (its prepare or
    its own read saved it): the page is not staged. The stale reader (a worker still reading for a killed
    coordinator) stops; the later run reads on from its own state."""

    def __init__(self, pipeline: str, stream: str, run_id: int) -> None:
        super().__init__(f"{pipeline}: the read of {stream} for run {run_id} is superseded: a later run has saved "
                         "its read state; this page is not staged")
        self.stream = stream
        self.run_id = run_id


class PipelineBusy(FerryError):
    """Another process is running this pipeline now (it holds the pipeline's lock)."""


class PlanProblems(ConfigError):
    """`ferry run` stopped before any write: the mapping has problems `ferry plan` reports (``--force`` runs anyway)."""

    def __init__(self, pipeline: str, problems: list[str]) -> None:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        super().__init__(
            f"{pipeline}: not started, the mapping has {len(problems)} problem(s) `ferry plan` shows: {shown} "
            "(fix them, or run with --force to write anyway)"
        )
        self.problems = problems


# Errors that stop the caller's whole step, never one record's failure: a spent API budget (the run pauses),
# refused credentials or a wrong configuration (the run fails), a state store that cannot be used or is away
# (the run fails, a worker's item is retried). A sink that turns per-call errors into per-record results must let
# these through: a record dead-lettered because PostgreSQL was restarting is a valid record lost to the DLQ.
STOPS_THE_STEP: tuple[type[FerryError], ...] = (BudgetExhausted, AuthError, ConfigError, StateError)

