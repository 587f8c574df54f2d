"""A lean executor for the pages of a bulk operation: the same data as graphql-core's ``execute``, less CPU.

A bulk run executes its query once per page of 100 root objects, and graphql-core's executor spends ~30
Python calls on every field (resolve info, path, completion, awaitable checks) while almost every field of
the sandbox's views is a plain attribute. Profiled on 2,000 orders (~148 fields each), the executor was
~90% of a bulk run's CPU: with five operations at once (API 2026-01+) the sandbox's one core, not its
modeled pace, set the end of every operation. This executor walks a plan compiled once per (type,
selection) and calls resolvers directly; it changes the sandbox's CPU, not its model (the modeled pace in
``bulk.py`` is unchanged).

It handles what the documents ``check_bulk_query`` accepts use: fields, aliases, arguments as literals
(bulk queries take no variables), inline and named fragments, ``__typename``, abstract types with a
``resolve_type``. A document with directives is left to graphql-core (``Unsupported`` at compile time), and
anything unexpected on a page (a resolver raising, a null in a non-null field, an abstract type it cannot
resolve) raises ``Unsupported``: the caller runs that page through graphql-core, which then gives its own
result and errors exactly as before. ``tests/sandbox/shopify/test_bulk_lean.py`` compares both executors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DirectiveNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLAbstractType,
    GraphQLEnumType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLSchema,
    OperationDefinitionNode,
    SelectionSetNode,
    Undefined,
    get_argument_values,
    get_named_type,
    visit,
)
from graphql.language import Visitor
from graphql.pyutils import Path

from ferry.sandbox.shopify.graphql.cost import collect_fields


class Unsupported(Exception):
    """This document or page is graphql-core's to execute."""


Complete = Callable[[Any, "Path | None", GraphQLObjectType, Any], Any]  # (value, path, parent type, context)


@dataclass(slots=True)
class _Field:
    key: str  # the response key (alias or name)
    name: str
    nodes: list[FieldNode]
    resolve: Callable[..., Any] | None  # None: the default resolver (attribute or mapping key)
    args: dict[str, Any]
    type: GraphQLOutputType | None  # None for __typename
    leaf: bool
    selections: list[SelectionSetNode]
    complete: Complete | None = None  # the value's completion, compiled from ``type``


class _Info:
    """What the sandbox's resolvers read of ``GraphQLResolveInfo`` (and the rest of its fields)."""

    __slots__ = ("context", "field_name", "field_nodes", "fragments", "operation", "parent_type", "path",
                 "return_type", "root_value", "schema", "variable_values")

    def __init__(self, lean: LeanExecutor, f: _Field, parent: GraphQLObjectType, path: Path, context: Any) -> None:
        self.context = context
        self.field_name = f.name
        self.field_nodes = f.nodes
        self.return_type = f.type
        self.parent_type = parent
        self.path = path
        self.schema = lean.schema
        self.fragments = lean.fragments
        self.root_value = None
        self.operation = lean.operation
        self.variable_values: dict[str, Any] = {}


class _Directives(Visitor):
    found = False

    def enter_directive(self, node: DirectiveNode, *_: Any) -> None:
        self.found = True


class LeanExecutor:
    def __init__(self, schema: GraphQLSchema, document: DocumentNode) -> None:
        ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        finder = _Directives()
        visit(document, finder)
        if len(ops) != 1 or finder.found or schema.query_type is None:
            raise Unsupported("directives or several operations")
        self.schema = schema
        self.operation = ops[0]
        self.fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        self.root = schema.query_type
        self._plans: dict[tuple[str, tuple[int, ...]], list[_Field]] = {}
        self._root_plan = self._plan(self.root, [self.operation.selection_set])

    def execute(self, context: Any) -> dict[str, Any]:
        """The query's data for ``context`` (one page of the bulk run), or ``Unsupported``."""
        try:
            return self._object(self.root, self._root_plan, None, None, context)
        except Unsupported:
            raise
        except Exception as exc:  # a resolver's error: graphql-core reports it its own way
            raise Unsupported(repr(exc)) from exc

    # ------------------------------------------------------------------ plans
    def _plan(self, obj: GraphQLObjectType, selections: list[SelectionSetNode]) -> list[_Field]:
        key = (obj.name, tuple(id(s) for s in selections))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._compile(obj, selections)
        return plan

    def _compile(self, obj: GraphQLObjectType, selections: list[SelectionSetNode]) -> list[_Field]:
        grouped: dict[str, list[FieldNode]] = {}  # response key -> its field nodes, in first-seen order
        for sel in selections:
            for node in collect_fields(self.schema, self.fragments, obj, sel):
                grouped.setdefault(node.alias.value if node.alias else node.name.value, []).append(node)
        plan = []
        for key, nodes in grouped.items():
            name = nodes[0].name.value
            subs = [n.selection_set for n in nodes if n.selection_set is not None]
            if name == "__typename":
                plan.append(_Field(key, name, nodes, None, {}, None, True, subs))
                continue
            fdef = obj.fields.get(name)
            if fdef is None:
                raise Unsupported(f"{obj.name}.{name}")
            leaf = isinstance(get_named_type(fdef.type), GraphQLScalarType | GraphQLEnumType)
            args = get_argument_values(fdef, nodes[0], None)
            f = _Field(key, name, nodes, fdef.resolve, args, fdef.type, leaf, subs)
            f.complete = self._completer(f, fdef.type)
            plan.append(f)
        return plan

    def _completer(self, f: _Field, kind: GraphQLOutputType) -> Complete:
        """The completion of a value of type ``kind`` (graphql-core's ``complete_value``, compiled once)."""
        if isinstance(kind, GraphQLNonNull):
            inner = self._completer(f, kind.of_type)

            def non_null(value: Any, path: Path | None, parent: GraphQLObjectType, ctx: Any) -> Any:
                done = inner(value, path, parent, ctx)
                if done is None:
                    raise Unsupported(f"null in non-null {f.name}")
                return done

            return non_null
        if isinstance(kind, GraphQLList):
            item = self._completer(f, kind.of_type)

            def many(value: Any, path: Path | None, parent: GraphQLObjectType, ctx: Any) -> Any:
                if value is None:
                    return None
                if isinstance(value, str | bytes | Mapping):
                    raise Unsupported(f"{f.name} is not a list")
                return [item(v, Path(path, i, None), parent, ctx) for i, v in enumerate(value)]

            return many
        if isinstance(kind, GraphQLScalarType | GraphQLEnumType):
            serialize = kind.serialize

            def leaf(value: Any, path: Path | None, parent: GraphQLObjectType, ctx: Any) -> Any:
                if value is None or value is Undefined:
                    return None
                serialized = serialize(value)
                if serialized is None or serialized is Undefined:
                    raise Unsupported(f"{f.name} did not serialize")
                return serialized

            return leaf
        if isinstance(kind, GraphQLObjectType):
            plan = self._plan(kind, f.selections)

            def one(value: Any, path: Path | None, parent: GraphQLObjectType, ctx: Any) -> Any:
                if value is None or value is Undefined:
                    return None
                return self._object(kind, plan, value, path, ctx)

            return one
        if isinstance(kind, GraphQLAbstractType):
            abstract = kind

            def some(value: Any, path: Path | None, parent: GraphQLObjectType, ctx: Any) -> Any:
                if value is None or value is Undefined:
                    return None
                runtime = self._runtime_type(f, abstract, value, path, parent, ctx)
                return self._object(runtime, self._plan(runtime, f.selections), value, path, ctx)

            return some
        raise Unsupported(f"{f.name}: {kind}")

    # ------------------------------------------------------------------ execution
    def _object(self, obj: GraphQLObjectType, plan: list[_Field], source: Any, path: Path | None, ctx: Any
                ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        mapping = type(source) is dict or isinstance(source, Mapping)
        for f in plan:
            if f.complete is None:
                out[f.key] = obj.name  # __typename
                continue
            field_path = None if f.leaf and f.resolve is None else Path(path, f.key, obj.name)
            if f.resolve is not None:
                assert field_path is not None
                value = f.resolve(source, _Info(self, f, obj, field_path, ctx), **f.args)
            else:
                value = source.get(f.name) if mapping else getattr(source, f.name, None)
                if callable(value):
                    field_path = Path(path, f.key, obj.name)
                    value = value(_Info(self, f, obj, field_path, ctx), **f.args)
            out[f.key] = f.complete(value, field_path, obj, ctx)
        return out

    def _runtime_type(
        self, f: _Field, kind: GraphQLAbstractType, value: Any, path: Path | None, parent: GraphQLObjectType,
        ctx: Any,
    ) -> GraphQLObjectType:
        if kind.resolve_type is None or path is None:
            raise Unsupported(f"{kind.name} has no resolve_type")
        name = kind.resolve_type(value, _Info(self, f, parent, path, ctx), kind)  # type: ignore[arg-type]
        runtime = self.schema.get_type(name) if isinstance(name, str) else None
        if not isinstance(runtime, GraphQLObjectType) or not self.schema.is_sub_type(kind, runtime):
            raise Unsupported(f"{kind.name} resolved to {name!r}")
        return runtime
