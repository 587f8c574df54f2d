"""Map and validate one record in a single generated function per target object.

``CompiledMapping.map`` builds a dict through one closure per field, and ``RecordValidator.validate``
then reads it back key by key. On the per-record path that is two passes, an intermediate dict and
two calls per field. ``fuse`` writes the pair as one Python function instead (the way dataclasses
writes ``__init__``): plain attribute reads for plain paths, the validator's two shortcuts (absent
value, short plain text) inline, the field's checker called only otherwise, and constants
(``value:`` and ``query:``) validated once, here.

The generated function answers exactly what ``validator.validate(mapping.map(record), str(record.key))``
answers, same keys in the same order, same errors in the same order. Whenever a record is not the
kind it was written for (a plain dict from a Python pipeline, a path that needs the careful walk), an
``AttributeError`` on the fast reads hands the record to that general pair instead; a mapping whose
shape the generator does not cover is not fused at all (``fuse`` returns None).
"""

from __future__ import annotations

import keyword
from collections.abc import Callable
from typing import Any

from ferry.core.records import MappedRecord
from ferry.errors import RecordError
from ferry.mapping.compile import CompiledMapping
from ferry.mapping.spec import EachExpr, FieldExpr, PathExpr, QueryExpr, RefExpr, ValueExpr
from ferry.mapping.validate import _OMIT, REQUIRED_FIELD_MISSING, FastPath, RecordValidator, _Invalid
from ferry.model.values import MISSING_KEY_PREFIX

MapAndValidate = Callable[[Any], tuple[MappedRecord, list[RecordError]]]


def general(mapping: CompiledMapping, validator: RecordValidator) -> MapAndValidate:
    """The unfused pair: map to a dict, then validate it."""
    to_dict, validate = mapping.map, validator.validate

    def map_and_validate(record: Any) -> tuple[MappedRecord, list[RecordError]]:
        return validate(to_dict(record), str(record.key))

    return map_and_validate


def fuse(
    mapping: CompiledMapping, validator: RecordValidator, exprs: tuple[FieldExpr, ...]
) -> MapAndValidate | None:
    """The generated map-and-validate function, or None when this mapping is one it does not cover.

    ``exprs`` are the mapping's field expressions in field order (one per ``mapping.items``).
    """
    keys = mapping.keys
    steps = validator.steps
    if any(isinstance(e, EachExpr) for e in exprs):
        return None  # sub-record lists go through the general pair
    if len(exprs) != len(keys) or len(set(keys)) != len(keys) or tuple(s[0] for s in steps) != keys:
        return None  # repeated payload keys, or keys the validator does not see as the mapping writes them
    ns: dict[str, Any] = {
        "_general": general(mapping, validator),
        "_error": validator._error,
        "_Invalid": _Invalid,
        "_OMIT": _OMIT,
        "_unmapped": validator.unmapped_required,
        "_REQUIRED": REQUIRED_FIELD_MISSING,
    }
    reads = _Reads()
    checks: list[str] = []
    fields = zip(mapping.items, exprs, steps, validator.fast_paths, strict=True)
    for i, ((key, getter), expr, step, fast) in enumerate(fields):
        ns[f"_G{i}"], ns[f"_C{i}"], ns[f"_F{i}"] = getter, step[2], step[1]
        if isinstance(expr, ValueExpr | QueryExpr):  # the compiled getter ignores the record
            checks += _constant_check(i, key, getter(None), step, ns)
            continue
        reads.value(i, expr)
        checks += _value_check(i, key, step, fast, ns)
    lines = ["def map_and_validate(record):", "    try:", "        skey = record.key"]
    lines += [f"        {line}" for line in reads.lines]
    lines += ["    except AttributeError:", "        return _general(record)"]
    lines += ["    skey = str(skey)", "    out = {}", "    errors = []"]
    lines += [f"    {line}" for line in checks]
    lines += [
        "    for name in _unmapped:",
        "        errors.append(_error(skey, name, _Invalid(_REQUIRED, 'is required but not mapped')))",
        "    return out, errors",
    ]
    source = "\n".join(lines) + "\n"
    exec(compile(source, f"<ferry map_and_validate {mapping.name}>", "exec"), ns)  # text built above, not input
    fused: MapAndValidate = ns["map_and_validate"]
    fused.__doc__ = source  # what was generated, for anyone debugging a mapping
    return fused


def _attr(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


class _Reads:
    """The fast attribute reads, each intermediate object read once (``record.address`` for three fields)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._parents: dict[str, str] = {}

    def value(self, i: int, expr: FieldExpr) -> None:
        inner = expr.value if isinstance(expr, RefExpr) else expr
        plain = isinstance(inner, PathExpr) and inner.default is None and not inner.transform
        read = self._path(inner) if isinstance(inner, PathExpr) and plain else None
        if read is None:
            self.lines.append(f"v{i} = _G{i}(record)")  # the compiled closure: forms other than a plain path
            return
        self.lines.append(f"v{i} = {read}")
        if isinstance(expr, RefExpr):
            # compile._reference: the parent's external id as text, "" meaning no reference
            self.lines.append(f"if v{i} is not None: v{i} = str(v{i}) or None")

    def _path(self, expr: PathExpr) -> str | None:
        parts = expr.path.split(".")
        if not all(_attr(p) for p in parts) or len(parts) > 2:
            return None
        if len(parts) == 1:
            return f"record.{parts[0]}"
        head, tail = parts
        parent = self._parents.get(head)
        if parent is None:
            parent = self._parents[head] = f"p{len(self._parents)}"
            self.lines.append(f"{parent} = record.{head}")
        return f"None if {parent} is None else {parent}.{tail}"


def _slow(i: int, key: str, indent: str) -> list[str]:
    """The field's checker, as RecordValidator.validate calls it."""
    return [
        f"{indent}try:",
        f"{indent}    c = _C{i}(v{i})",
        f"{indent}except _Invalid as bad:",
        f"{indent}    errors.append(_error(skey, _F{i}, bad))",
        f"{indent}else:",
        f"{indent}    if c is not _OMIT: out[{key!r}] = c",
    ]


def _value_check(
    i: int, key: str, step: tuple[str, str, Any, int, bool], fast: FastPath, ns: dict[str, Any]
) -> list[str]:
    """RecordValidator.validate's loop body for one field: the shortcuts its FastPath allows, else the checker.

    None.__class__ is not str: a None that does not pass on its own goes to the checker.
    """
    put = f"out[{key!r}]"
    short = f"v{i}.__class__ is str and 0 < len(v{i}) <="
    shortcuts: list[tuple[str, list[str]]] = []
    if step[4]:
        shortcuts.append((f"v{i} is None", [f"{put} = None"]))
    if step[3] > 0:
        shortcuts.append((f"{short} {step[3]}", [f"{put} = v{i}"]))
    if fast.key_limit > 0:
        ns["_MISSING"] = MISSING_KEY_PREFIX
        shortcuts.append((f"{short} {fast.key_limit} and not v{i}.startswith(_MISSING)", [f"{put} = v{i}"]))
    if fast.convert is not None and fast.convert_limit > 0:
        ns[f"_V{i}"] = fast.convert  # a converter never answers _OMIT
        convert = ["try:", f"    {put} = _V{i}(v{i})", "except _Invalid as bad:"]
        shortcuts.append((f"{short} {fast.convert_limit}", [*convert, f"    errors.append(_error(skey, _F{i}, bad))"]))
    if fast.convert is not None and fast.convert_scalars:
        # A quantity (int), a mapped flag (bool): the converter is the whole check for these exact classes.
        ns[f"_V{i}"] = fast.convert
        convert = ["try:", f"    {put} = _V{i}(v{i})", "except _Invalid as bad:"]
        scalar = f"v{i}.__class__ is int or v{i}.__class__ is float or v{i}.__class__ is bool"
        shortcuts.append((scalar, [*convert, f"    errors.append(_error(skey, _F{i}, bad))"]))
    if not shortcuts:
        return _slow(i, key, "")
    lines = []
    for n, (test, action) in enumerate(shortcuts):
        lines += [f"{'elif' if n else 'if'} {test}:", *(f"    {a}" for a in action)]
    return [*lines, "else:", *_slow(i, key, "    ")]


def _constant_check(
    i: int, key: str, value: Any, step: tuple[str, str, Any, int, bool], ns: dict[str, Any]
) -> list[str]:
    """A constant's answer is the same for every record: work it out now (only a failure is redone per record)."""
    _, _, check, text_limit, none_passes = step
    if value is None and none_passes:
        answer: Any = None
    elif value.__class__ is str and 0 < len(value) <= text_limit:
        answer = value
    else:
        try:
            answer = check(value)
        except _Invalid:
            ns[f"_K{i}"] = value  # the error names the record, so it is made per record
            return [f"v{i} = _K{i}", *_slow(i, key, "")]
    if answer is _OMIT:
        return []
    ns[f"_A{i}"] = answer
    return [f"out[{key!r}] = _A{i}"]


__all__ = ["MapAndValidate", "fuse", "general"]
