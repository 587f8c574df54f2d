"""Shopify cursor pagination: the next page exists only as a ``Link`` header URL."""

from __future__ import annotations

import re

# `<https://shop/admin/api/2025-07/orders.json?limit=50&page_info=abc>; rel="next"`; several are joined by ", ".
_LINK_PART = re.compile(r"<(?P<url>[^>]*)>\s*;\s*(?P<params>[^,<]*)")
_REL = re.compile(r'rel\s*=\s*"?(?P<rel>[^";,\s]+)"?', re.I)


def parse_link_header(value: str | None) -> dict[str, str]:
    """Map each ``rel`` to its URL. Tolerant of spacing; URLs are taken verbatim (page_info is opaque)."""
    links: dict[str, str] = {}
    if not value:
        return links
    for match in _LINK_PART.finditer(value):
        rel = _REL.search(match.group("params"))
        if rel:
            for name in rel.group("rel").split():
                links.setdefault(name.lower(), match.group("url").strip())
    return links


def next_page_url(value: str | None) -> str | None:
    return parse_link_header(value).get("next")
