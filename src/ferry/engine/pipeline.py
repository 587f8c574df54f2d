"""Pipeline files: YAML with ``${VAR}`` / ``${VAR:-default}`` from the environment, validated once by pydantic.

Interpolation happens on parsed string values, never on the YAML text, so an
environment value can never change the structure of the pipeline.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from ferry.connectors import registry
from ferry.errors import ConfigError
from ferry.mapping.spec import ObjectMapping

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class RetrySpec(BaseModel):
    """``retry:`` in a pipeline: how often one record is tried before a transient error dead-letters it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(4, ge=1, le=50)
    backoff_max_seconds: float = Field(8.0, ge=0, le=600)


def _block_union(models: list[type[BaseModel]], role: str) -> Any:
    """The config models of one role as a union told apart by ``system`` (one model needs no discriminator)."""
    if not models:
        raise ConfigError(f"no connector can be a {role}: is ferry installed completely?")
    if len(models) == 1:
        return models[0]
    union: Any = models[0]
    for model in models[1:]:
        union = union | model
    return Annotated[union, Field(discriminator="system")]


if TYPE_CHECKING:
    # Built from the registry when the module loads; to a type checker, any connector's config block.
    SourceBlock = Any
    TargetBlock = Any
else:
    SourceBlock = _block_union(registry.source_configs(), "source")
    TargetBlock = _block_union(registry.sink_configs(), "target")


DEFAULT_MAX_DEAD_LETTER_SHARE = 0.1


Owner = Literal["source", "target", "both"]


class PeerSpec(BaseModel):
    """The pipeline syncing the other way, for ``latest_wins``: its version map knows when the target side last
    changed a record. ``via`` is this pipeline's object whose target id is the peer's key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pipeline: str
    object: str  # the peer's target object (its version map's object)
    via: str  # this pipeline's object whose target id is the peer's source key


class TwoWaySpec(BaseModel):
    """``two_way:`` in a pipeline that is one direction of a two-way sync (docs/serve.md, "Two-way sync").

    Turns on echo suppression (a record whose mapped payload is what ferry last wrote for its key is not sent:
    ferry's own write coming back through the other direction) and field ownership: per target object and
    field, which side owns it. ``source``: this pipeline writes it (the default for fields not listed);
    ``target``: the other side owns it, this pipeline writes it only when it creates the record; ``both``:
    either side may edit it, and ``conflict`` decides what this pipeline does with it on an update."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    owners: dict[str, dict[str, Owner]] = Field(default_factory=dict)
    # source_wins: always write a `both` field; target_wins: only on create; latest_wins: write it unless the
    # peer pipeline has written a change of the target record stamped later than this record's version.
    conflict: Literal["source_wins", "target_wins", "latest_wins"] = "latest_wins"
    peer: PeerSpec | None = None

    @model_validator(mode="after")
    def _latest_wins_has_a_peer(self) -> TwoWaySpec:
        both = any(o == "both" for fields in self.owners.values() for o in fields.values())
        if both and self.conflict == "latest_wins" and self.peer is None:
            raise ValueError("conflict: latest_wins needs `peer:` (the pipeline syncing the other way)")
        return self


class RealtimeSpec(BaseModel):
    """``realtime:`` in a pipeline: how ``ferry serve`` cuts events into micro-batches and write calls, i.e. the
    trade between latency and the target's API calls (docs/serve.md, "Latency or API calls").

    The defaults lean to latency (p95 well under a second at 200 events/s). Leaning to calls: wait longer and
    carry more per call, e.g. ``{max_wait_ms: 5000, max_records: 1000, records_per_call: 1000}``: about 2
    Salesforce calls per 1,000 events, at the price of ~5 s more latency."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A micro-batch gathers events this long after its first one...
    max_wait_ms: int = Field(150, ge=0, le=600_000)
    # ...or starts at once when this many events wait; a micro-batch takes at most this many (the rest wait for
    # the next one, at once), so a batch sized to the target's calls fills them (1,000 events = 2 calls).
    max_records: int = Field(2000, ge=1, le=100_000)
    # Records one write call carries at most (the sink may carry fewer: Salesforce's Composite, 5 x 200); a
    # larger batch goes in that many calls at the same time.
    records_per_call: int = Field(100, ge=1, le=100_000)


class WebhooksSpec(BaseModel):
    """``webhooks:`` in a pipeline: how ``ferry serve`` takes the source's events in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The signing secret (Shopify: the app's client secret; WooCommerce: the webhook secret ferry sets). From the
    # environment (``${SHOPIFY_WEBHOOK_SECRET:-}``), never written in the file; never logged. Unset: the pipeline
    # takes no webhooks (no endpoint exists to forge requests to).
    secret: SecretStr | None = None
    # Who deliveries must come from: Shopify's shop domain (acme.myshopify.com), WooCommerce's site URL. Unset:
    # the source URL's (a Shopify URL that is not a myshopify domain then checks only that one is named).
    origin: str | None = None
    enabled: bool = True

    @field_validator("secret", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if value is None or (isinstance(value, str) and not value.strip()) else value

    @property
    def active(self) -> bool:
        """Whether `ferry serve` takes this pipeline's webhooks: enabled, with a secret to verify them by."""
        return self.enabled and self.secret is not None

    @field_validator("origin", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value in ("", None) else value


def _valid_cron(value: str | None) -> str | None:
    if value in (None, ""):
        return None
    from croniter import croniter  # only pipelines with a schedule pay for the import

    if not croniter.is_valid(value):
        raise ValueError(f"{value!r} is not a cron expression (five fields, e.g. '*/15 * * * *')")
    return value


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    source: SourceBlock
    target: TargetBlock
    objects: list[ObjectMapping] = Field(min_length=1)
    retry: RetrySpec = Field(default_factory=lambda: RetrySpec(max_attempts=4, backoff_max_seconds=8.0))
    # Above this share of an object's records dead-lettered in one run, the run counts as failed (exit 3);
    # "5%" or 0.05. A share up to it still exits 4 ("finished with dead letters"), none exits 0.
    max_dead_letter_share: float = Field(DEFAULT_MAX_DEAD_LETTER_SHARE, ge=0, le=1)
    # `ferry serve`: the source's webhooks in (None: the pipeline takes no events), and a cron schedule of
    # incremental batch runs (reconciliation sweeps that catch what webhooks missed).
    webhooks: WebhooksSpec | None = None
    schedule: str | None = None
    # `ferry serve`'s micro-batches: how long they gather, how many records a write call carries.
    realtime: RealtimeSpec = Field(
        default_factory=lambda: RealtimeSpec(max_wait_ms=150, max_records=2000, records_per_call=100)
    )
    # One direction of a two-way sync: echo suppression and field ownership (None: a one-way pipeline).
    two_way: TwoWaySpec | None = None

    @model_validator(mode="after")
    def _two_way_names_objects(self) -> PipelineSpec:
        """``two_way`` owners and ``peer.via`` name objects of this pipeline (a typo would silently own nothing)."""
        if self.two_way is None:
            return self
        names = {o.name for o in self.objects}
        named = [*self.two_way.owners, *([self.two_way.peer.via] if self.two_way.peer else [])]
        unknown = sorted({n for n in named if n not in names})
        if unknown:
            raise ValueError(f"two_way names {', '.join(unknown)}, not an object of this pipeline "
                             f"(objects: {', '.join(sorted(names))})")
        return self

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return _valid_cron(value)

    @field_validator("max_dead_letter_share", mode="before")
    @classmethod
    def _percent(cls, value: Any) -> Any:
        """ "5%" -> 0.05; a bare number is a fraction (0.05)."""
        if isinstance(value, str) and value.strip().endswith("%"):
            number = value.strip()[:-1].strip()
            try:
                return float(number) / 100
            except ValueError:
                raise ValueError(f"{value!r} is not a percentage such as 5%") from None
        return value

    @model_validator(mode="before")
    @classmethod
    def _known_systems(cls, data: Any) -> Any:
        """An unknown or missing ``system:`` is named with the systems that are known, before the blocks'
        own validation (whose message for a union would list every variant's fields)."""
        if isinstance(data, dict):
            for role, known in (("source", registry.source_systems()), ("target", registry.sink_systems())):
                block = data.get(role)
                if not isinstance(block, dict):
                    continue
                system = block.get("system")
                if system not in known:
                    what = f"unknown system {system!r}" if system is not None else "no system given"
                    raise ValueError(f"{role}.system: {what}; a {role} is one of: {', '.join(known)}")
        return data


def interpolate(value: Any, env: Mapping[str, str], where: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` inside string values, recursively."""
    if isinstance(value, str):
        return _interpolate_str(value, env, where)
    if isinstance(value, list):
        return [interpolate(v, env, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    return value


def _interpolate_str(text: str, env: Mapping[str, str], where: str) -> Any:
    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{where}: environment variable {name} is not set (the pipeline reads it as ${{{name}}})")

    replaced = _VAR.sub(sub, text)
    # A value that was only a variable and came out empty means "not given".
    if replaced == "" and _VAR.fullmatch(text):
        return None
    return replaced


def packaged_examples() -> dict[str, Path]:
    """The example pipelines shipped in the package (ferry/examples/*.yml), by name."""
    root = resources.files("ferry.examples")
    return {Path(e.name).stem: Path(str(e)) for e in root.iterdir() if e.name.endswith(".yml")}


def resolve_pipeline_file(path: Path) -> Path:
    """``path`` itself when it exists; else a packaged example named by it (``shopify-to-salesforce``, or the
    repository path ``examples/shopify-to-salesforce.yml`` from any directory)."""
    if path.exists():
        return path
    text = str(path)
    name = text.removeprefix("examples/").removesuffix(".yml") if text.startswith("examples/") else text
    return packaged_examples().get(name, path)


def load_pipeline(path: Path, env: Mapping[str, str] | None = None) -> PipelineSpec:
    """Read, interpolate and validate a pipeline file; every problem becomes a ConfigError naming the field."""
    path = resolve_pipeline_file(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        examples = ", ".join(sorted(packaged_examples()))
        raise ConfigError(f"pipeline file not found: {path} (the packaged examples are named: {examples})") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a directory, not a pipeline file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the pipeline file as UTF-8") from None
    except OSError as exc:  # permission denied, a device, an I/O error
        raise ConfigError(f"{path}: cannot read the pipeline file: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a pipeline is a YAML mapping with name, source, target and objects")
    data = interpolate(raw, os.environ if env is None else env)
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        lines = _describe_errors(exc)
        if len(lines) == 1:  # one problem, one line
            raise ConfigError(f"{path}: invalid pipeline: {lines[0].removeprefix('  - ')}") from None
        raise ConfigError(f"{path}: invalid pipeline, {len(lines)} problems:\n" + "\n".join(lines)) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's message spans lines (context, a quote of the line, a caret): one line with where and what."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        context = f" ({exc.context})" if exc.context else ""
        return f"{where}{exc.problem}{context}"
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def _describe_errors(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  - {loc}: {msg}" if loc else f"  - {msg}")
    return lines
