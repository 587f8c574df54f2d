"""sObject Tree (`composite/tree/{Obj}`) and Composite Graph (`composite/graph`): all-or-nothing record graphs.

Both are one API call, both save through the same `Org` as every other write path, and both roll back
on the first failure: the tree as a whole, a graph on its own (other graphs of the request still commit).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Any

from ferry.sandbox.salesforce.composite import _REF, CollectionsApi
from ferry.sandbox.salesforce.errors import ApiError, RecordError
from ferry.sandbox.salesforce.rest import mark_call
from ferry.sandbox.salesforce.routing import Call, Reply, Router, parse_sub_url
from ferry.sandbox.salesforce.schema import FieldSchema, SObjectSchema
from ferry.sandbox.salesforce.state import OrgState
from ferry.sandbox.salesforce.validate import check_json_types, parse_body

# sObject Tree limits (REST API guide, "sObject Tree"): 200 records across all trees, five levels, five types.
MAX_TREE_RECORDS = 200
MAX_TREE_DEPTH = 5
MAX_TREE_TYPES = 5
# Composite Graph limits (REST API guide, "Composite Graph Limits").
MAX_GRAPHS = 75
MAX_GRAPH_NODES = 500  # per payload, and so per graph
MAX_GRAPH_DEPTH = 15
MAX_NODE_TYPES = 15  # distinct (API version, method, object) among the payload's nodes
MAX_GRAPH_FAILURES = 14  # past this many failed graphs the rest are PROCESSING_HALTED
_REFERENCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")
_GRAPH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]{0,39}$")
# The record resources a graph node may use (method, route template), as the guide lists them;
# sObject Collections are accepted too (later API versions list them).
_GRAPH_ROUTES = {
    ("POST", "sobjects/{sobject}"), ("GET", "sobjects/{sobject}/{id}"), ("PATCH", "sobjects/{sobject}/{id}"),
    ("DELETE", "sobjects/{sobject}/{id}"), ("GET", "sobjects/{sobject}/{field}/{value}"),
    ("PATCH", "sobjects/{sobject}/{field}/{value}"), ("POST", "sobjects/{sobject}/{field}/{value}"),
    ("DELETE", "sobjects/{sobject}/{field}/{value}"), ("POST", "composite/sobjects"),
    ("PATCH", "composite/sobjects"), ("DELETE", "composite/sobjects"),
    ("PATCH", "composite/sobjects/{sobject}/{field}"),
}
GRAPH_HALTED = [{"errorCode": "PROCESSING_HALTED",
                 "message": "Processing halted: the request had more than 14 failed graphs."}]


@dataclass(slots=True)
class _TreeNode:
    obj: SObjectSchema
    ref_id: str
    body: dict[str, Any]  # the record's own fields (children taken out)
    level: int
    parent: _TreeNode | None = None
    parent_field: FieldSchema | None = None  # the child's lookup to ``parent``
    record_id: str | None = None


def _tree_error(ref_id: str, err: RecordError) -> dict[str, Any]:
    return {"referenceId": ref_id, "errors": [err.as_collection_error()]}


def _invalid(message: str) -> RecordError:
    return RecordError("INVALID_INPUT", message, [])


class TreeApi:
    """`POST composite/tree/{Obj}`: nested parent-child records created level by level, all or nothing."""

    def __init__(self, state: OrgState) -> None:
        self.state = state

    def register(self, router: Router) -> None:
        router.add("POST", "composite/tree/{sobject}", self.create_tree)

    def create_tree(self, call: Call, p: dict[str, str]) -> Reply:
        root = self.state.sobject(p["sobject"])
        body = call.json()
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list) or not records:
            raise ApiError(400, "JSON_PARSER_ERROR", "Cannot deserialize the request: expected an object with "
                           "a non-empty 'records' list")
        nodes: list[_TreeNode] = []
        try:
            for rec in records:
                self._flatten(call, root, rec, 1, None, None, nodes)
            self._check_limits(nodes)
        except _TreeFailure as failure:
            return Reply(400, {"hasErrors": True, "results": failure.results})
        return self._save(call, nodes)

    def _flatten(self, call: Call, expected: SObjectSchema, rec: Any, level: int, parent: _TreeNode | None,
                 parent_field: FieldSchema | None, out: list[_TreeNode]) -> None:
        """Walk one record and its children (keys holding ``{"records": [...]}`` under a child relationship name)."""
        attrs = rec.get("attributes") if isinstance(rec, dict) else None
        ref_id = str(attrs.get("referenceId", "")) if isinstance(attrs, dict) else ""
        if not isinstance(attrs, dict) or not attrs.get("type") or not ref_id:
            raise _TreeFailure([_tree_error(ref_id, _invalid(
                "Each record must have attributes with its type and a referenceId"))])
        if not _REFERENCE_ID.match(ref_id):
            raise _TreeFailure([_tree_error(ref_id, _invalid(
                f"Provided referenceId ('{ref_id}') must start with a letter or a number, and it can contain only "
                "letters, numbers and underscores ('_')."))])
        if str(attrs["type"]).lower() != expected.name.lower():
            raise _TreeFailure([_tree_error(ref_id, _invalid(
                f"The record type {attrs['type']} does not match the expected type {expected.name}"))])
        if level > MAX_TREE_DEPTH:
            raise _TreeFailure([_tree_error(ref_id, _invalid(
                f"sObject trees can be at most {MAX_TREE_DEPTH} levels deep"))])
        own: dict[str, Any] = {}
        children: list[tuple[SObjectSchema, FieldSchema, list[Any]]] = []
        for key, value in rec.items():
            child = self._child_relationship(expected, key) if isinstance(value, dict) else None
            if child is None:
                own[key] = value
                continue
            kids = value.get("records")
            if not isinstance(kids, list):
                raise _TreeFailure([_tree_error(ref_id, _invalid(f"{key} must hold a 'records' list"))])
            children.append((child[0], child[1], kids))
        check_json_types(expected, own, call.body)
        node = _TreeNode(expected, ref_id, own, level, parent, parent_field)
        out.append(node)
        for child_obj, lookup, kids in children:
            for kid in kids:
                self._flatten(call, child_obj, kid, level + 1, node, lookup, out)

    def _child_relationship(self, parent: SObjectSchema, name: str) -> tuple[SObjectSchema, FieldSchema] | None:
        schema = self.state.schema
        for rel in schema.children.get(parent.name, []):
            if rel.relationship_name and rel.relationship_name.lower() == name.lower():
                child = schema.objects[rel.child]
                return child, child.fields[rel.field]
        return None

    @staticmethod
    def _check_limits(nodes: list[_TreeNode]) -> None:
        seen: dict[str, int] = {}
        for node in nodes:
            seen[node.ref_id] = seen.get(node.ref_id, 0) + 1
        dupes = [n for n in nodes if seen[n.ref_id] > 1]
        if dupes:
            # "In the case of duplicate reference IDs, results contains one item for each instance."
            raise _TreeFailure([_tree_error(n.ref_id, _invalid(f"Duplicate ReferenceId provided in the request: "
                                                                f"{n.ref_id}")) for n in dupes])
        if len(nodes) > MAX_TREE_RECORDS:
            raise _TreeFailure([_tree_error(nodes[MAX_TREE_RECORDS].ref_id, RecordError(
                "EXCEEDED_ID_LIMIT", f"Request cannot contain more than {MAX_TREE_RECORDS} records", []))])
        types: list[str] = []
        for node in nodes:
            if node.obj.name not in types:
                types.append(node.obj.name)
                if len(types) > MAX_TREE_TYPES:
                    raise _TreeFailure([_tree_error(node.ref_id, _invalid(
                        f"Request cannot contain records of more than {MAX_TREE_TYPES} different types"))])

    def _save(self, call: Call, nodes: list[_TreeNode]) -> Reply:
        """Create level by level (roots of every tree first), as the org does; the first failure undoes all."""
        order = deque(sorted(nodes, key=lambda n: n.level))  # sorted() is stable: request order within a level
        results: list[dict[str, Any]] = []
        org, schema = self.state.org, self.state.schema
        with self.state.store.transaction() as savepoint:
            while order:
                node = order.popleft()
                try:
                    body = mark_call(parse_body(schema, node.obj, node.body), call)
                    if node.parent is not None and node.parent_field is not None:
                        body.values = [(f, v) for f, v in body.values if f is not node.parent_field]
                        body.values.append((node.parent_field, node.parent.record_id))
                except RecordError as err:
                    savepoint.rollback()
                    return Reply(400, {"hasErrors": True, "results": [_tree_error(node.ref_id, err)]})
                result = org.create(node.obj, body)
                if not result.success:
                    savepoint.rollback()
                    return Reply(400, {"hasErrors": True, "results": [
                        {"referenceId": node.ref_id, "errors": [e.as_collection_error() for e in result.errors]}]})
                node.record_id = result.id
                results.append({"referenceId": node.ref_id, "id": result.id})
        return Reply(201, {"hasErrors": False, "results": results})


class _TreeFailure(Exception):
    def __init__(self, results: list[dict[str, Any]]) -> None:
        super().__init__(results)
        self.results = results


class GraphApi:
    """`POST composite/graph`: several graphs of Composite subrequests, each graph all-or-nothing on its own."""

    def __init__(self, state: OrgState, router: Router, collections: CollectionsApi) -> None:
        self.state = state
        self.router = router
        self.collections = collections

    def register(self, router: Router) -> None:
        router.add("POST", "composite/graph", self.run_graphs)

    def run_graphs(self, call: Call, _: dict[str, str]) -> Reply:
        graphs = self._graphs_of(call.json())
        out: list[dict[str, Any]] = []
        failures = 0
        for graph in graphs:
            graph_id, subs = str(graph["graphId"]), graph["compositeRequest"]
            if failures > MAX_GRAPH_FAILURES:
                halted = [self.collections.sub_result(str(s.get("referenceId", "")) if isinstance(s, dict) else "",
                                                       400, GRAPH_HALTED) for s in subs]
                out.append(self._graph_result(graph_id, halted, False))
                continue
            results, failed = self.collections.run_subrequests(subs, True, self._allowed)
            failures += failed
            out.append(self._graph_result(graph_id, results, not failed))
        return Reply(200, {"graphs": out})

    @staticmethod
    def _graph_result(graph_id: str, results: list[dict[str, Any]], ok: bool) -> dict[str, Any]:
        return {"graphId": graph_id, "graphResponse": {"compositeResponse": results}, "isSuccessful": ok}

    def _allowed(self, call: Call) -> bool:
        try:
            route, _ = self.router.find(call.method, call.segments)
        except ApiError:
            return True  # let the router answer its own 404/405
        return (call.method, route.template) in _GRAPH_ROUTES

    def _graphs_of(self, body: Any) -> list[dict[str, Any]]:
        """The request's graphs after the payload-wide checks; a breach fails the whole request with 400."""
        graphs = body.get("graphs") if isinstance(body, dict) else None
        if not isinstance(graphs, list) or not graphs:
            raise ApiError(400, "JSON_PARSER_ERROR", "graphs is required: a list of {graphId, compositeRequest}")
        if len(graphs) > MAX_GRAPHS:
            raise ApiError(400, "LIMIT_EXCEEDED", f"A composite graph request can contain at most {MAX_GRAPHS} "
                           "graphs")
        ids: set[str] = set()
        nodes = 0
        node_types: set[tuple[str, str, str]] = set()
        for graph in graphs:
            subs = graph.get("compositeRequest") if isinstance(graph, dict) else None
            graph_id = str(graph.get("graphId", "")) if isinstance(graph, dict) else ""
            if not isinstance(subs, list) or not subs:
                raise ApiError(400, "JSON_PARSER_ERROR", f"Graph '{graph_id}' needs a non-empty compositeRequest")
            if not _GRAPH_ID.match(graph_id):
                raise ApiError(400, "INVALID_INPUT", f"Invalid graphId '{graph_id}': it must start with a letter "
                               "or a number, contain only letters, numbers and underscores, and have at most 40 "
                               "characters")
            if graph_id in ids:
                raise ApiError(400, "INVALID_INPUT", f"Duplicate graphId '{graph_id}': graph ids must be unique")
            ids.add(graph_id)
            nodes += len(subs)
            node_types.update(_node_type(sub) for sub in subs)
            depth = _graph_depth(subs)
            if depth > MAX_GRAPH_DEPTH:
                raise ApiError(400, "LIMIT_EXCEEDED", f"Graph '{graph_id}' is {depth} nodes deep; the maximum "
                               f"depth of a graph is {MAX_GRAPH_DEPTH}")
        if nodes > MAX_GRAPH_NODES:
            raise ApiError(400, "LIMIT_EXCEEDED", f"A composite graph request can contain at most {MAX_GRAPH_NODES} "
                           f"nodes; this one has {nodes}")
        if len(node_types) > MAX_NODE_TYPES:
            raise ApiError(400, "LIMIT_EXCEEDED", f"A composite graph request can contain at most {MAX_NODE_TYPES} "
                           "different nodes (API version, method and object)")
        return graphs


def _node_type(sub: Any) -> tuple[str, str, str]:
    """A node's (API version, method, object): nodes differing in any of these count as different."""
    if not isinstance(sub, dict):
        return ("", "", "")
    try:
        version, segments, _ = parse_sub_url(_REF.sub("x", str(sub.get("url", ""))))
    except ApiError:
        return ("", str(sub.get("method", "")), "")
    obj = segments[1].lower() if len(segments) > 1 and segments[0].lower() == "sobjects" else "/".join(segments[:2])
    return (version, str(sub.get("method", "")), obj)


def _graph_depth(subs: list[Any]) -> int:
    """The longest chain of `@{ref...}` dependencies among a graph's nodes (a lone node is depth 1)."""
    depth: dict[str, int] = {}
    deepest = 0
    for sub in subs:
        if not isinstance(sub, dict):
            continue
        text = str(sub.get("url", "")) + repr(sub.get("body"))
        parents = {m.group(1) for m in _REF.finditer(text)}
        level = 1 + max((depth.get(p, 0) for p in parents), default=0)
        depth[str(sub.get("referenceId", ""))] = level
        deepest = max(deepest, level)
    return deepest
