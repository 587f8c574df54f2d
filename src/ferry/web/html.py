"""Small HTML helpers: every value is escaped where it is put into markup, so no record can inject a tag."""

from __future__ import annotations

import json
from collections.abc import Iterable
from html import escape
from typing import Any
from urllib.parse import urlencode

NAV = (("/", "Runs"), ("/letters", "Dead letters"), ("/pipelines", "Pipelines"))


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else e(value)


def when(value: str | None) -> str:
    return e(value[:19].replace("T", " ")) if value else "-"


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], *, cls: str = "", body_id: str = "") -> str:
    """``rows`` cells are markup already (escaped by the caller)."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    tbody_id = f' id="{e(body_id)}"' if body_id else ""
    return f'<table class="{e(cls)}"><thead><tr>{head}</tr></thead><tbody{tbody_id}>{body}</tbody></table>'


def link(href: str, text: Any, **params: Any) -> str:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return f'<a href="{e(href + ("?" + query if query else ""))}">{e(text)}</a>'


def status_badge(status: str) -> str:
    return f'<span class="status status-{e(status)}">{e(status)}</span>'


def pretty_json(value: Any) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)
    return f'<pre class="json">{e(text)}</pre>'


def json_script(element_id: str, value: Any) -> str:
    """Data for the page's script, in a JSON script block: ``</`` escaped so the block cannot be closed early."""
    text = json.dumps(value, default=str).replace("</", "<\\/")
    return f'<script id="{e(element_id)}" type="application/json">{text}</script>'


def hidden(name: str, value: Any) -> str:
    return f'<input type="hidden" name="{e(name)}" value="{e(value)}">'


def layout(title: str, body: str, *, active: str = "/", notice: str = "") -> str:
    current = ' class="active"'
    nav = "".join(f'<a href="{href}"{current if href == active else ""}>{e(label)}</a>' for href, label in NAV)
    note = f'<p class="notice">{notice}</p>' if notice else ""
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{e(title)} · ferry</title>"
        "<link rel=\"stylesheet\" href=\"/static/dashboard.css\">"
        "<script src=\"/static/dashboard.js\" defer></script></head><body>"
        f"<header><span class=\"brand\">ferry</span><nav>{nav}</nav></header>"
        f"<main><h1>{e(title)}</h1>{note}{body}</main></body></html>"
    )
