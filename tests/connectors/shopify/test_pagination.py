from __future__ import annotations

from ferry.connectors.shopify.pagination import next_page_url, parse_link_header

BASE = "https://acme.myshopify.com/admin/api/2025-07/orders.json"


def test_next_and_previous() -> None:
    header = f'<{BASE}?limit=50&page_info=abc>; rel="next", <{BASE}?limit=50&page_info=xyz>; rel="previous"'
    assert parse_link_header(header) == {"next": f"{BASE}?limit=50&page_info=abc",
                                         "previous": f"{BASE}?limit=50&page_info=xyz"}


def test_previous_only_means_last_page() -> None:
    assert next_page_url(f'<{BASE}?limit=50&page_info=xyz>; rel="previous"') is None


def test_no_header_means_single_page() -> None:
    assert next_page_url(None) is None
    assert next_page_url("") is None


def test_page_info_is_kept_verbatim() -> None:
    opaque = "eyJsYXN0X2lkIjo0NTAsImRpcmVjdGlvbiI6Im5leHQifQ%3D%3D"
    assert next_page_url(f'<{BASE}?page_info={opaque}&limit=250>; rel="next"') == \
        f"{BASE}?page_info={opaque}&limit=250"


def test_tolerates_spacing_and_unquoted_rel() -> None:
    assert next_page_url(f"<{BASE}?page_info=a>;rel=next") == f"{BASE}?page_info=a"
