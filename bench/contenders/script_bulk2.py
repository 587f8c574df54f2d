"""Contender (c): page Shopify with ShopifyAPI, then one simple-salesforce Bulk API 2.0 upsert per object.

Run: python bench/contenders/script_bulk2.py (configured by the example pipeline's environment variables).
Bulk 2.0 takes CSV: a reference to a parent goes in a ``Parent.External_Id__c`` column, and a null is
written as an empty cell (on a fresh org that is the same as null).
"""

from __future__ import annotations

import time
from typing import Any

import shop_to_sf as m
from simple_salesforce import Salesforce


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """A JSON record as a Bulk CSV row: {"Account": {"Ext__c": "1"}} -> {"Account.Ext__c": "1"}."""
    row: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            for ext, ref in value.items():
                row[f"{key}.{ext}"] = ref
        elif isinstance(value, bool):
            row[key] = "true" if value else "false"
        else:
            row[key] = "" if value is None else value
    return row


def load(sf: Salesforce, obj: str, ext: str, records: list[dict[str, Any]], written: dict[str, int],
         failed: dict[str, int]) -> None:
    if not records:
        return
    results = getattr(sf.bulk2, obj).upsert(records=[flatten(r) for r in records], external_id_field=ext)
    written[obj] = sum(int(r["numberRecordsProcessed"]) - int(r["numberRecordsFailed"]) for r in results)
    failed[obj] = sum(int(r["numberRecordsFailed"]) for r in results)


def main() -> None:
    started = time.monotonic()
    m.connect_shopify()
    sf = m.connect_salesforce()
    customers, products, orders = m.read_store()
    pricebook = m.standard_pricebook(sf)
    written: dict[str, int] = {}
    failed: dict[str, int] = {}
    everyone = m.people(customers, orders)
    load(sf, "Account", "Shopify_Customer_Id__c", [m.account(p) for p in everyone], written, failed)
    load(sf, "Contact", "Shopify_Customer_Id__c", [m.contact(p) for p in everyone], written, failed)
    load(sf, "Product2", "Shopify_Product_Id__c", [m.product2(p, v) for p, v in m.variants(products)], written,
         failed)
    load(sf, "PricebookEntry", "Shopify_Variant_Id__c",
         [m.pricebook_entry(v, pricebook) for _, v in m.variants(products)], written, failed)
    load(sf, "Order", "Shopify_Order_Id__c", [m.order(o, pricebook) for o in orders], written, failed)
    load(sf, "OrderItem", "Shopify_Line_Item_Id__c", [m.order_item(o, li) for o, li in m.order_lines(orders)],
         written, failed)
    m.report(written, failed, started)


if __name__ == "__main__":
    main()
