"""Contender (b): page Shopify with ShopifyAPI, upsert into Salesforce one record at a time.

Run: python bench/contenders/script_per_record.py (configured by the example pipeline's environment variables).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any
from urllib.parse import quote

import shop_to_sf as m
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceError


def upsert(sf: Salesforce, obj: str, ext: str, record: dict[str, Any], written: Counter[str],
           failed: Counter[str]) -> None:
    body = {k: v for k, v in record.items() if k != ext}
    try:
        getattr(sf, obj).upsert(f"{ext}/{quote(record[ext], safe='')}", body)
        written[obj] += 1
    except SalesforceError:
        failed[obj] += 1


def main() -> None:
    started = time.monotonic()
    m.connect_shopify()
    sf = m.connect_salesforce()
    customers, products, orders = m.read_store()
    pricebook = m.standard_pricebook(sf)
    written: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    everyone = m.people(customers, orders)
    for p in everyone:
        upsert(sf, "Account", "Shopify_Customer_Id__c", m.account(p), written, failed)
    for p in everyone:
        upsert(sf, "Contact", "Shopify_Customer_Id__c", m.contact(p), written, failed)
    for product, v in m.variants(products):
        upsert(sf, "Product2", "Shopify_Product_Id__c", m.product2(product, v), written, failed)
    for _, v in m.variants(products):
        upsert(sf, "PricebookEntry", "Shopify_Variant_Id__c", m.pricebook_entry(v, pricebook), written, failed)
    for o in orders:
        upsert(sf, "Order", "Shopify_Order_Id__c", m.order(o, pricebook), written, failed)
    for o, line in m.order_lines(orders):
        upsert(sf, "OrderItem", "Shopify_Line_Item_Id__c", m.order_item(o, line), written, failed)
    m.report(dict(written), dict(failed), started)


if __name__ == "__main__":
    main()
