"""In-memory record storage: dicts keyed by id, value indexes for upsert keys, an undo journal.

Everything runs on the server's single event-loop thread, so there is no locking:
a request's writes are atomic with respect to other requests by construction.
The journal exists only inside `transaction()` (allOrNone collections, composite, and
Bulk's 200-row transactions, which only group commits and change events and never roll back).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ferry.sandbox.salesforce.schema import FieldSchema, Schema, SObjectSchema

if TYPE_CHECKING:
    from ferry.sandbox.salesforce.cdc import ChangeCapture as ChangeSink

Record = dict[str, Any]
_EMPTY: list[str] = []  # shared "no match" answer of Table.lookup; never mutated


def index_key(f: FieldSchema, value: Any) -> Any:
    """External ids and other indexed text match case-insensitively unless the field is case-sensitive."""
    if isinstance(value, str) and not f.case_sensitive:
        return value.lower()
    return value


class Table:
    def __init__(self, schema: SObjectSchema) -> None:
        self.schema = schema
        self.rows: dict[str, Record] = {}
        self.deleted: dict[str, Record] = {}
        self.indexed_fields = [f for f in schema.fields.values() if f.indexed and f.name != "Id"]
        self.indexes: dict[str, dict[Any, list[str]]] = {f.name: {} for f in self.indexed_fields}
        # child-side index of lookup fields (parent id -> child ids): cascade deletes and price-book
        # rules need "children of X" without a scan. Audit/owner lookups are left out: every record has one.
        self.cascade_fields = [
            f.name for f in schema.fields.values()
            if f.type == "reference" and f.name not in ("OwnerId", "CreatedById", "LastModifiedById")
        ]
        self.children: dict[str, dict[str, set[str]]] = {name: {} for name in self.cascade_fields}

    def lookup(self, f: FieldSchema, value: Any) -> list[str]:
        if value.__class__ is str and not f.case_sensitive:
            value = value.lower()
        return self.indexes[f.name].get(value, _EMPTY)

    def _add(self, f: FieldSchema, record_id: str, value: Any) -> None:
        if value is None:
            return
        if value.__class__ is str and not f.case_sensitive:
            value = value.lower()
        ids = self.indexes[f.name].get(value)
        if ids is None:
            self.indexes[f.name][value] = [record_id]
        else:
            ids.append(record_id)

    def _drop(self, f: FieldSchema, record_id: str, value: Any) -> None:
        if value is None:
            return
        key = index_key(f, value)
        ids = self.indexes[f.name].get(key)
        if ids is not None and record_id in ids:
            ids.remove(record_id)
            if not ids:
                del self.indexes[f.name][key]

    def _link(self, name: str, record_id: str, parent: Any) -> None:
        if parent is not None:
            self.children[name].setdefault(parent, set()).add(record_id)

    def _unlink(self, name: str, record_id: str, parent: Any) -> None:
        kids = self.children[name].get(parent) if parent is not None else None
        if kids is not None:
            kids.discard(record_id)

    def _index(self, record_id: str, record: Record) -> None:
        for f in self.indexed_fields:
            self._add(f, record_id, record.get(f.name))
        for name in self.cascade_fields:
            self._link(name, record_id, record.get(name))

    def _unindex(self, record_id: str, record: Record) -> None:
        for f in self.indexed_fields:
            self._drop(f, record_id, record.get(f.name))
        for name in self.cascade_fields:
            self._unlink(name, record_id, record.get(name))

    def _reindex(self, record_id: str, old: Record, new: Record) -> None:
        # Only indexes whose value changed are touched, so updating non-key fields stays cheap.
        for f in self.indexed_fields:
            before, after = old.get(f.name), new.get(f.name)
            if before != after:
                self._drop(f, record_id, before)
                self._add(f, record_id, after)
        for name in self.cascade_fields:
            before, after = old.get(name), new.get(name)
            if before != after:
                self._unlink(name, record_id, before)
                self._link(name, record_id, after)

    def clear(self) -> None:
        self.rows.clear()
        self.deleted.clear()
        for idx in self.indexes.values():
            idx.clear()
        for kids in self.children.values():
            kids.clear()


class Store:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.tables: dict[str, Table] = {name: Table(obj) for name, obj in schema.objects.items()}
        self._by_prefix = {t.schema.key_prefix: t for t in self.tables.values()}
        self._journal: list[tuple[str, Table, str, Record | None]] | None = None
        # ids written since the last persistence flush; None when the sandbox does not persist
        self.dirty: set[str] | None = None
        # Change Data Capture (cdc.ChangeCapture): told of every change, commit and rollback; None: off
        self.changes: ChangeSink | None = None

    def table(self, name: str) -> Table:
        return self.tables[name]

    def table_for_id(self, record_id: str) -> Table | None:
        return self._by_prefix.get(record_id[:3])

    def child_ids(self, child: str, field: str, parent_id: str) -> set[str]:
        return self.tables[child].children.get(field, {}).get(parent_id, set())

    def get_live(self, record_id: str) -> tuple[Table, Record] | None:
        table = self.table_for_id(record_id)
        if table is None:
            return None
        record = table.rows.get(record_id)
        return (table, record) if record is not None else None

    # --- mutations (all journaled inside a transaction) -------------------------------------------

    def insert(self, table: Table, record: Record) -> None:
        record_id = record["Id"]
        table.rows[record_id] = record
        table._index(record_id, record)
        self._changed("CREATE", table, record_id, None, record)
        if self._journal is not None:
            self._journal.append(("insert", table, record_id, None))
        if self.dirty is not None:
            self.dirty.add(record_id)

    def replace(self, table: Table, record_id: str, new: Record) -> None:
        old = table.rows[record_id]
        table.rows[record_id] = new
        table._reindex(record_id, old, new)
        self._changed("UPDATE", table, record_id, old, new)
        if self._journal is not None:
            self._journal.append(("update", table, record_id, old))
        if self.dirty is not None:
            self.dirty.add(record_id)

    def soft_delete(self, table: Table, record_id: str, deleted_stamp: dict[str, Any]) -> list[tuple[Table, str]]:
        """Move a record (and its cascade children) to the recycle bin; returns every record deleted."""
        done: list[tuple[Table, str]] = []
        self._delete_one(table, record_id, deleted_stamp, done)
        self._commit_outside_transaction()
        return done

    def _delete_one(self, table: Table, record_id: str, stamp: dict[str, Any], done: list[tuple[Table, str]]) -> None:
        old = table.rows.pop(record_id, None)
        if old is None:
            return
        table._unindex(record_id, old)
        table.deleted[record_id] = {**old, **stamp}
        done.append((table, record_id))
        self._changed("DELETE", table, record_id, old, None, commit=False)
        if self._journal is not None:
            self._journal.append(("delete", table, record_id, old))
        if self.dirty is not None:
            self.dirty.add(record_id)
        for rel in self.schema.children.get(table.schema.name, []):
            if not rel.cascade_delete:
                continue
            for child_id in list(self.child_ids(rel.child, rel.field, record_id)):
                self._delete_one(self.tables[rel.child], child_id, stamp, done)

    def hard_delete(self, table: Table, record_id: str) -> None:
        self.soft_delete(table, record_id, {})
        table.deleted.pop(record_id, None)

    def undelete(self, table: Table, record_id: str, stamp: dict[str, Any]) -> Record | None:
        """Restore a record from the recycle bin (the org's undelete); None when it is not there."""
        old = table.deleted.pop(record_id, None)
        if old is None:
            return None
        record = {**old, "IsDeleted": False, **stamp}
        table.rows[record_id] = record
        table._index(record_id, record)
        self._changed("UNDELETE", table, record_id, None, record)
        if self.dirty is not None:
            self.dirty.add(record_id)
        return record

    def _changed(self, change_type: str, table: Table, record_id: str, old: Record | None, new: Record | None,
                 commit: bool = True) -> None:
        changes = self.changes
        if changes is None:
            return
        journal = self._journal
        if journal is None:
            changes.record(0, table.schema, change_type, record_id, old, new, autocommit=commit)
        else:
            changes.record(len(journal), table.schema, change_type, record_id, old, new)

    def _commit_outside_transaction(self) -> None:
        # A write outside transaction() is its own transaction: it is committed as soon as it is made.
        if self.changes is not None and self._journal is None:
            self.changes.commit()

    def purge(self, table: Table, record_id: str) -> None:
        """Empty a record out of the recycle bin (hard delete of an already deleted record)."""
        table.deleted.pop(record_id, None)
        if self.dirty is not None:
            self.dirty.add(record_id)

    def restore(self, table: Table, record: Record, deleted: bool) -> None:
        """Put back a record loaded from persistence, indexes included (not journaled, not dirty)."""
        record_id = record["Id"]
        if deleted:
            table.deleted[record_id] = record
        else:
            table.rows[record_id] = record
            table._index(record_id, record)

    # --- transactions ------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Savepoint]:
        """Journal writes; nested transactions share the outer journal and roll back to their savepoint."""
        outer = self._journal is not None
        if not outer:
            self._journal = []
        assert self._journal is not None
        sp = Savepoint(self, len(self._journal))
        try:
            yield sp
        finally:
            if not outer:
                self._journal = None
                if self.changes is not None:
                    self.changes.commit()

    def rollback_to(self, mark: int) -> None:
        journal = self._journal
        if journal is None:
            return
        if self.changes is not None:
            self.changes.discard_from(mark)
        while len(journal) > mark:
            op, table, record_id, old = journal.pop()
            if self.dirty is not None:
                self.dirty.add(record_id)
            if op == "insert":
                rec = table.rows.pop(record_id)
                table._unindex(record_id, rec)
            elif op == "update":
                assert old is not None
                cur = table.rows[record_id]
                table.rows[record_id] = old
                table._reindex(record_id, cur, old)
            else:  # delete
                assert old is not None
                table.deleted.pop(record_id, None)
                table.rows[record_id] = old
                table._index(record_id, old)

    def counts(self) -> dict[str, int]:
        return {name: len(t.rows) for name, t in self.tables.items()}

    def clear(self) -> None:
        for t in self.tables.values():
            t.clear()


class Savepoint:
    def __init__(self, store: Store, mark: int) -> None:
        self._store = store
        self._mark = mark

    def rollback(self) -> None:
        self._store.rollback_to(self._mark)
