"""What every resolver can reach: the shop's live state, the request's version and token, lookup caches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ferry.sandbox.shopify.state import ShopState
from ferry.sandbox.shopify.store import Record

if TYPE_CHECKING:
    from ferry.sandbox.shopify.graphql.bulk import BulkOperations

_GID_PREFIX = "gid://shopify/"
# The store's single location (fulfillments and refund line items already name it).
LOCATION_ID = 65_540_000_001


@dataclass
class Context:
    state: ShopState
    bulk: BulkOperations
    api_version: str
    token: str
    base_url: str
    warnings: list[dict[str, Any]] = field(default_factory=list)
    # Set while a bulk operation runs its query: (after cursor, page size) of the root connection; every
    # nested connection is then read whole. ``bulk_next`` receives the root page's (has_next, end cursor).
    bulk_page: tuple[str | None, int] | None = None
    bulk_next: tuple[bool, str | None] = (False, None)
    _variants: dict[int, tuple[Record, Record]] | None = None
    _items: dict[int, tuple[Record, Record]] | None = None

    @property
    def in_bulk(self) -> bool:
        return self.bulk_page is not None

    def variant(self, vid: int) -> tuple[Record, Record] | None:
        """(product, variant) of a variant id, from an index built once per request."""
        if self._variants is None:
            self._index_variants()
        assert self._variants is not None
        return self._variants.get(vid)

    def inventory_item(self, iid: int) -> tuple[Record, Record] | None:
        """(product, variant) owning an inventory item id."""
        if self._items is None:
            self._index_variants()
        assert self._items is not None
        return self._items.get(iid)

    def _index_variants(self) -> None:
        variants: dict[int, tuple[Record, Record]] = {}
        items: dict[int, tuple[Record, Record]] = {}
        for product in self.state.table("products").records:
            for v in product.get("variants") or ():
                variants[v["id"]] = (product, v)
                if isinstance(v.get("inventory_item_id"), int):
                    items[v["inventory_item_id"]] = (product, v)
        self._variants, self._items = variants, items

    def variant_index(self) -> tuple[dict[int, tuple[Record, Record]], dict[int, tuple[Record, Record]]] | None:
        """The variant and inventory-item index, if this request built it (a bulk run hands it to its next page)."""
        if self._variants is None or self._items is None:
            return None
        return self._variants, self._items

    def adopt_variant_index(
        self, index: tuple[dict[int, tuple[Record, Record]], dict[int, tuple[Record, Record]]]
    ) -> None:
        self._variants, self._items = index

    def forget_variants(self) -> None:
        """Drop the index after a write that changes variants."""
        self._variants = self._items = None


def parse_gid(value: str, kind: str | None = None) -> tuple[str, int] | None:
    """(type, numeric id) of ``gid://shopify/Type/123`` (a ``?...`` tail is ignored); None if malformed."""
    if not isinstance(value, str) or not value.startswith(_GID_PREFIX):
        return None
    kind_part, _, rest = value[len(_GID_PREFIX):].partition("/")
    digits = rest.partition("?")[0]
    if not digits.isdigit() or (kind is not None and kind_part != kind):
        return None
    return kind_part, int(digits)
