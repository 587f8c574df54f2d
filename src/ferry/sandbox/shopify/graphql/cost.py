"""Shopify's calculated query cost and the points bucket it is charged to (reference §2).

Field costs (https://shopify.dev/docs/apps/build/apis/graphql-admin/rate-limits): scalars and enums 0,
objects 1, interfaces and unions the most expensive of their possible selections, a mutation's root field 10,
and a connection sized by ``first``/``last``: 2 + n x (cost of one node), which is the linear rule most
clients budget with (Shopify does not publish the exact formula; recent versions report lower costs for big
pages, so this errs towards throttling a client early). ``edges``/``node`` count as the node's object, and
``pageInfo`` is inside the connection's 2. A plain list field (``refunds(first:)``) counts one element per
``first`` (one when absent: Shopify documents no sizing for lists).

``requestedQueryCost`` is computed before running the query from the selection and its arguments;
``actualQueryCost`` after, from what came back (a short page costs less). The bucket must hold the requested
cost to run; afterwards it is charged the actual cost.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLAbstractType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    get_named_type,
    is_abstract_type,
    is_leaf_type,
    value_from_ast,
)

MAX_QUERY_COST = 1000
MUTATION_COST = 10

# Restore rate (points/s) per plan from Shopify's current rate-limit page; the bucket is 20 s of restore,
# the size every recorded response shows (Standard 2000.0, Plus 20000.0; reference §2.4).
PLANS: dict[str, tuple[float, float]] = {
    "standard": (2000.0, 100.0),
    "advanced": (4000.0, 200.0),
    "plus": (20000.0, 1000.0),
    "enterprise": (40000.0, 2000.0),
}


class CostCalculator:
    def __init__(self, schema: GraphQLSchema, fragments: Mapping[str, FragmentDefinitionNode],
                 variables: dict[str, Any]) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables

    def operation(self, op: OperationDefinitionNode, data: Any = None, *, actual: bool = False) -> int:
        root = self.schema.mutation_type if op.operation == OperationType.MUTATION else self.schema.query_type
        assert root is not None
        if op.operation == OperationType.MUTATION:
            return MUTATION_COST * len(self._fields(root, op.selection_set))
        return self._selection(root, op.selection_set, data, actual)

    # -- selection sets
    def _fields(self, obj: GraphQLObjectType, sel: SelectionSetNode) -> list[FieldNode]:
        return collect_fields(self.schema, self.fragments, obj, sel)

    def _selection(self, parent: Any, sel: SelectionSetNode | None, data: Any, actual: bool) -> int:
        if sel is None:
            return 0
        if is_abstract_type(parent):
            # The most expensive possible type (for actual cost too: the response need not name its type).
            return max((self._selection(t, sel, data, actual) for t in self.schema.get_possible_types(parent)),
                       default=0)
        total = 0
        for node in self._fields(parent, sel):
            name = node.name.value
            if name.startswith("__"):
                continue
            fdef = parent.fields.get(name)
            if fdef is None:
                continue
            key = node.alias.value if node.alias else name
            value = data.get(key) if isinstance(data, dict) else None
            total += self._field(fdef, node, value if actual else None, actual)
        return total

    def _field(self, fdef: Any, node: FieldNode, value: Any, actual: bool) -> int:
        named = get_named_type(fdef.type)
        if is_leaf_type(named):
            return 0
        if is_connection(named):
            return self._connection(fdef, named, node, value, actual)
        if is_list(fdef.type):
            size = self._arg(fdef, node, "first") or self._list_arg_length(fdef, node, "ids") or 1
            if actual:
                items = value if isinstance(value, list) else []
                return sum(1 + self._selection(named, node.selection_set, item, True) for item in items[:size])
            return size * (1 + self._selection(named, node.selection_set, None, False))
        if actual and value is None:
            return 0
        return 1 + self._selection(named, node.selection_set, value, actual)

    def _connection(self, fdef: Any, conn: Any, node: FieldNode, value: Any, actual: bool) -> int:
        """2 + n x one node's cost; ``edges { node }`` and ``nodes`` price the same node (the larger wins)."""
        # (type, selection, extra): a node costs 1 + its selection through ``nodes``; through ``edges`` the edge
        # selection holds ``node``, which costs its 1 as an object field.
        pricings: list[tuple[Any, SelectionSetNode | None, int]] = []
        for sub in self._fields(conn, node.selection_set) if node.selection_set else []:
            if sub.name.value == "nodes":
                pricings.append((get_named_type(conn.fields["nodes"].type), sub.selection_set, 1))
            elif sub.name.value == "edges":
                pricings.append((get_named_type(conn.fields["edges"].type), sub.selection_set, 0))

        def per_node(item: Any) -> int:
            return max((extra + self._selection(t, s, item, actual) for t, s, extra in pricings), default=0)

        if not actual:
            n = self._arg(fdef, node, "first") or self._arg(fdef, node, "last") or 0
            return 2 + n * per_node(None)
        if value is None:
            return 0
        items = _connection_items(self.fragments, node, value)
        return 2 + sum(per_node(item) for item in items)

    def _list_arg_length(self, fdef: Any, node: FieldNode, name: str) -> int | None:
        """How many items a list argument holds (``nodes(ids:)`` costs per id)."""
        arg_def = fdef.args.get(name)
        arg_node = next((a for a in node.arguments or () if a.name.value == name), None)
        if arg_def is None or arg_node is None:
            return None
        value = value_from_ast(arg_node.value, arg_def.type, self.variables)
        return len(value) if isinstance(value, list) and value else None

    def _arg(self, fdef: Any, node: FieldNode, name: str) -> int | None:
        """An integer argument's value (literal or variable); None when absent or invalid (execution reports it)."""
        arg_def = fdef.args.get(name)
        arg_node = next((a for a in node.arguments or () if a.name.value == name), None)
        if arg_def is None or arg_node is None:
            return None
        value = value_from_ast(arg_node.value, arg_def.type, self.variables)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def collect_fields(schema: GraphQLSchema, fragments: Mapping[str, FragmentDefinitionNode], obj: GraphQLObjectType,
                   sel: SelectionSetNode) -> list[FieldNode]:
    """The field nodes of ``sel`` that apply to ``obj``, fragments (inline and named) spread in, in order."""
    out: list[FieldNode] = []
    for node in sel.selections:
        if isinstance(node, FieldNode):
            out.append(node)
        elif isinstance(node, InlineFragmentNode):
            cond = node.type_condition.name.value if node.type_condition else None
            if cond is None or _applies(schema, cond, obj):
                out += collect_fields(schema, fragments, obj, node.selection_set)
        elif isinstance(node, FragmentSpreadNode):
            frag = fragments.get(node.name.value)
            if frag is not None and _applies(schema, frag.type_condition.name.value, obj):
                out += collect_fields(schema, fragments, obj, frag.selection_set)
    return out


def _applies(schema: GraphQLSchema, cond: str, obj: GraphQLObjectType) -> bool:
    if cond == obj.name:
        return True
    cond_type = schema.get_type(cond)
    return isinstance(cond_type, GraphQLAbstractType) and schema.is_sub_type(cond_type, obj)


def _connection_items(fragments: Mapping[str, FragmentDefinitionNode], node: FieldNode, value: Any) -> list[Any]:
    """The returned elements of a connection, as edges (dicts with ``node``) or nodes, whichever was selected."""
    if not isinstance(value, dict):
        return []
    for sub in node.selection_set.selections if node.selection_set else ():
        if isinstance(sub, FieldNode) and sub.name.value in ("edges", "nodes"):
            key = sub.alias.value if sub.alias else sub.name.value
            items = value.get(key)
            if isinstance(items, list):
                return items
    return []


def is_connection(named: Any) -> bool:
    return isinstance(named, GraphQLObjectType) and named.name.endswith("Connection") and "pageInfo" in named.fields


def is_list(t: GraphQLOutputType) -> bool:
    inner = t.of_type if isinstance(t, GraphQLNonNull) else t
    return isinstance(inner, GraphQLList)


# ---------------------------------------------------------------------- the bucket
@dataclass
class Throttle:
    maximum: float
    available: float
    restore_rate: float

    def status(self) -> dict[str, Any]:
        # As recorded responses show: floats for maximum and rate, an integer for what is left.
        return {"maximumAvailable": float(self.maximum), "currentlyAvailable": math.floor(self.available),
                "restoreRate": float(self.restore_rate)}


class PointsBucket:
    """Per app and shop (here: per access token). Refills continuously at ``restore_rate`` up to ``maximum``;
    time is monotonic, so wall-clock jumps neither refill nor drain it."""

    def __init__(self, maximum: float, restore_rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if maximum <= 0 or restore_rate <= 0:
            raise ValueError("a GraphQL bucket needs maximum > 0 and restore_rate > 0")
        self.maximum = maximum
        self.restore_rate = restore_rate
        self._clock = clock
        self._available = maximum
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._available = min(self.maximum, self._available + (now - self._last) * self.restore_rate)
        self._last = now

    def reserve(self, requested: int) -> bool:
        """Take ``requested`` points if the bucket holds them (Shopify throttles when it does not)."""
        self._refill()
        if self._available < requested:
            return False
        self._available -= requested
        return True

    def settle(self, requested: int, actual: int) -> None:
        """Refund what the query did not use (requested was taken by ``reserve``)."""
        self._refill()
        self._available = min(self.maximum, self._available + requested - actual)

    def snapshot(self) -> Throttle:
        self._refill()
        return Throttle(self.maximum, self._available, self.restore_rate)


class Buckets:
    def __init__(self, maximum: float, restore_rate: float) -> None:
        PointsBucket(maximum, restore_rate)  # validate now
        self.maximum = maximum
        self.restore_rate = restore_rate
        self._buckets: dict[str, PointsBucket] = {}

    def get(self, token: str) -> PointsBucket:
        bucket = self._buckets.get(token)
        if bucket is None:
            bucket = self._buckets[token] = PointsBucket(self.maximum, self.restore_rate)
        return bucket

    def configure(self, maximum: float, restore_rate: float) -> None:
        PointsBucket(maximum, restore_rate)
        self.maximum, self.restore_rate = maximum, restore_rate
        self._buckets.clear()
