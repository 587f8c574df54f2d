"""Pipeline files: YAML with ``${VAR}`` / ``${VAR:-default}`` from the environment, validated once by pydantic.

Interpolation happens on parsed string values, never on the YAML text, so an
environment value can never change the structure of the pipeline.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    source: SourceBlock
    target: TargetBlock
    objects: list[ObjectMapping] = Field(min_length=1)
    retry: RetrySpec = Field(default_factory=lambda: RetrySpec(max_attempts=4, backoff_max_seconds=8.0))

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


def load_pipeline(path: Path, env: Mapping[str, str] | None = None) -> PipelineSpec:
    """Read, interpolate and validate a pipeline file; every problem becomes a ConfigError naming the field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"pipeline file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a pipeline is a YAML mapping with name, source, target and objects")
    data = interpolate(raw, os.environ if env is None else env)
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid pipeline:\n{_describe_errors(exc)}") from None


def _describe_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  - {loc}: {msg}" if loc else f"  - {msg}")
    return "\n".join(lines)
