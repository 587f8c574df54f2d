"""WooCommerce webhooks: the ``wc/v3/webhooks`` resource and delivery on every change, as ``WC_Webhook`` does it.

Read from WooCommerce's source (``includes/class-wc-webhook.php``, ``includes/wc-webhook-functions.php``,
``rest-api/Controllers/Version1|2|3/class-wc-rest-webhooks-*controller.php``):

* A webhook is ``{id, name, status, topic, resource, event, hooks, delivery_url, date_created(_gmt),
  date_modified(_gmt)}``; ``secret`` is write-only (never in a response; 50 random characters when not given).
  Ids come from the ``wc_webhooks`` table (1, 2, ...). A webhook made through the API is always ``active`` (the
  controller ignores ``status`` on create); a missing ``topic``/``delivery_url`` is WordPress's missing-parameter
  error, an invalid one ``woocommerce_rest_shop_webhook_invalid_topic``/``..._invalid_delivery_url``. ``GET``
  of an unknown id answers 400 "ID is invalid.", ``DELETE`` needs ``force=true`` (501 otherwise).
* After creating a webhook the controller sends the ping: a POST with the form body ``webhook_id=<id>``, no
  signature, 5 s timeout; its result does not change the API's answer.
* Deliveries run in the background (Action Scheduler), one per webhook and resource while one is still
  pending (a later change to the same record is carried by the pending one), with the payload as
  ``GET /wc/v3/<resource>s/<id>`` returns it (``{"id": N}`` for a ``deleted`` event), JSON-encoded as PHP's
  ``wp_json_encode`` does (``\\/`` for ``/``, ``\\uXXXX`` for non-ASCII), so a receiver that re-encodes before
  checking the signature fails as it would against WooCommerce.
* Headers: ``X-WC-Webhook-Source`` (the site URL with a trailing slash), ``-Topic``, ``-Resource``, ``-Event``,
  ``-Signature`` (base64 HMAC-SHA256 of the body with the secret), ``-ID`` and ``-Delivery-ID``:
  ``wp_hash(id . time())``, made when the request goes out, so two deliveries of one webhook in the same second
  carry the same delivery id (as they do in WooCommerce: a receiver that deduplicates by it alone loses one).
* 60 s timeout, no redirects followed; success is a status from 200 to 302. **No retries**: a failure adds one
  to ``failure_count`` (a success resets it), and a failure arriving when the count is already above
  ``woocommerce_max_webhook_delivery_failures`` (5) sets the status to ``disabled``: the 7th consecutive one.
  Only ``active`` webhooks get new deliveries.

The site URL is the address the first API call reached (the sandbox has no ``home_url`` setting of its own).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from starlette.responses import Response

from ferry.sandbox.webhooks import Delivery, Dispatcher, RetryPolicy, hmac_sha256_base64, is_loopback_url
from ferry.sandbox.woocommerce import records as rec
from ferry.sandbox.woocommerce.app import API, base_url, json_body, require, with_links
from ferry.sandbox.woocommerce.errors import WpError, invalid_params, json_response, missing_params, not_in_enum
from ferry.sandbox.woocommerce.query import link_header, page_of, parse_list, php_params, select
from ferry.sandbox.woocommerce.state import StoreState
from ferry.sandbox.woocommerce.store import Record
from ferry.sandbox.woocommerce.writes import run_batch

# WC_Webhook::get_default_topic_hooks
TOPIC_HOOKS: dict[str, list[str]] = {
    "coupon.created": ["woocommerce_process_shop_coupon_meta", "woocommerce_new_coupon"],
    "coupon.updated": ["woocommerce_process_shop_coupon_meta", "woocommerce_update_coupon"],
    "coupon.deleted": ["wp_trash_post"],
    "coupon.restored": ["untrashed_post"],
    "customer.created": ["user_register", "woocommerce_created_customer", "woocommerce_new_customer"],
    "customer.updated": ["profile_update", "woocommerce_update_customer"],
    "customer.deleted": ["delete_user"],
    "order.created": ["woocommerce_new_order"],
    "order.updated": ["woocommerce_update_order", "woocommerce_order_refunded", "woocommerce_delete_order_refund"],
    "order.deleted": ["wp_trash_post", "woocommerce_trash_order"],
    "order.restored": ["untrashed_post", "woocommerce_untrash_order"],
    "product.created": ["woocommerce_process_product_meta", "woocommerce_new_product",
                        "woocommerce_new_product_variation"],
    "product.updated": ["woocommerce_process_product_meta", "woocommerce_update_product",
                        "woocommerce_update_product_variation"],
    "product.deleted": ["wp_trash_post"],
    "product.restored": ["untrashed_post"],
    "product.published": ["woocommerce_product_published"],
}
STATUSES = ("active", "paused", "disabled")
RESOURCE_OF = {"customers": "customer", "orders": "order", "products": "product", "coupons": "coupon"}
MAX_FAILURES = 5  # woocommerce_max_webhook_delivery_failures
PING_TIMEOUT = 5.0  # wp_safe_remote_post's default
WP_VERSION = "6.8.1"
POLICY = RetryPolicy(delays=(), connect_timeout=60.0, timeout=60.0, success_from=200, success_below=303)
INVALID_URL = "Webhook delivery URL must be a valid URL starting with http:// or https://."
LOOPBACK_NOTE = "the sandbox delivers only to loopback addresses (127.0.0.1, ::1, localhost)"
_INVALID_TOPICS = ("action.woocommerce_login_credentials",
                   "action.woocommerce_product_csv_importer_check_import_file_path",
                   "action.woocommerce_webhook_should_deliver")


def valid_topic(topic: str) -> bool:
    """wc_is_webhook_valid_topic: a known resource.event pair, or a custom ``action.woocommerce_*``/``action.wc_*``."""
    if topic in _INVALID_TOPICS:
        return False
    return topic.startswith(("action.woocommerce_", "action.wc_")) or topic in TOPIC_HOOKS


def valid_url(url: str) -> bool:
    """wc_is_valid_url: starts with http:// or https:// and passes FILTER_VALIDATE_URL (a host is needed)."""
    if not url.startswith(("http://", "https://")):
        return False
    try:
        return bool(urlsplit(url).hostname)
    except ValueError:
        return False


def php_json(value: Any) -> bytes:
    """``wp_json_encode`` with PHP's default flags: ``/`` escaped, non-ASCII as ``\\uXXXX``, no spaces."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/").encode()


def specialchars_decode(text: str) -> str:
    """wp_specialchars_decode(ENT_QUOTES): the secret is decoded so before signing."""
    for entity, char in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#039;", "'"), ("&#x27;", "'"),
                         ("&amp;", "&")):
        text = text.replace(entity, char)
    return text


class Webhooks:
    """The site's webhooks (the ``wc_webhooks`` table) and their delivery."""

    def __init__(self, state: StoreState, *, ca_files: list[Path], time_scale: float = 1.0) -> None:
        self.state = state
        self.records: dict[int, Record] = {}
        self._next_id = 0
        self.site_url: str | None = None
        self._salt = secrets.token_bytes(32)  # wp_salt('auth'), per site
        user_agent = f"WooCommerce/{rec.WC_VERSION} Hookshot (WordPress/{WP_VERSION})"
        self.dispatcher = Dispatcher("woocommerce", POLICY, self, ca_files=ca_files, time_scale=time_scale,
                                     user_agent=user_agent)
        state.listeners.append(self.on_change)

    # -- the resource --------------------------------------------------------------------------------------
    def create(self, body: dict[str, Any]) -> Record:
        if body.get("id"):
            raise WpError("woocommerce_rest_shop_webhook_exists", "Cannot create existing shop_webhook.", 400)
        missing = [k for k in ("topic", "delivery_url") if body.get(k) is None]
        if missing:
            raise missing_params(missing)
        topic = str(body.get("topic") or "")
        if not topic or not valid_topic(topic.lower()):
            raise WpError("woocommerce_rest_shop_webhook_invalid_topic", "Webhook topic is required and must be valid.",
                          400)
        url = str(body.get("delivery_url") or "")
        self._check_url(url)
        now = self.state.clock.tick()
        self._next_id += 1
        local = datetime.fromisoformat(self.state.st.local(now))  # the site's timezone, as WordPress formats it
        name = body.get("name") or local.strftime("Webhook created on %b %d, %Y @ %I:%M %p")
        record: Record = {
            "id": self._next_id, "name": str(name), "status": "active", "topic": topic, "delivery_url": url,
            "secret": str(body.get("secret") or secrets.token_urlsafe(38)[:50]), "api_version": 3,
            "failure_count": 0, "pending_delivery": True,
            **rec.dates(self.state.st, "date_created", now), **rec.dates(self.state.st, "date_modified", now),
        }
        self.records[record["id"]] = record
        return record

    def update(self, wid: int, body: dict[str, Any]) -> Record:
        record = self.records.get(wid)
        if record is None:
            raise WpError("woocommerce_rest_shop_webhook_invalid_id", "ID is invalid.", 400)
        if body.get("topic"):
            if not valid_topic(str(body["topic"]).lower()):
                raise WpError("woocommerce_rest_shop_webhook_invalid_topic", "Webhook topic must be valid.", 400)
            record["topic"] = str(body["topic"])
        if body.get("delivery_url"):
            self._check_url(str(body["delivery_url"]))
            record["delivery_url"] = str(body["delivery_url"])
        if body.get("secret"):
            record["secret"] = str(body["secret"])
        if body.get("status"):
            if str(body["status"]).lower() not in STATUSES:
                raise WpError("woocommerce_rest_shop_webhook_invalid_status", "Webhook status must be valid.", 400)
            record["status"] = str(body["status"])
        if body.get("name"):
            record["name"] = str(body["name"])
        record.update(rec.dates(self.state.st, "date_modified", self.state.clock.tick()))
        return record

    def delete(self, wid: int, force: bool) -> Record:
        if not force:
            raise WpError("woocommerce_rest_trash_not_supported", "Webhooks do not support trashing.", 501)
        record = self.records.pop(wid, None)
        if record is None:
            raise WpError("woocommerce_rest_shop_webhook_invalid_id", "Invalid ID.", 404)
        return record

    @staticmethod
    def _check_url(url: str) -> None:
        if not url or not valid_url(url):
            raise WpError("woocommerce_rest_shop_webhook_invalid_delivery_url", INVALID_URL, 400)
        if not is_loopback_url(url):
            raise WpError("woocommerce_rest_shop_webhook_invalid_delivery_url", INVALID_URL, 400,
                          {"sandbox": LOOPBACK_NOTE})

    def view(self, record: Record, base: str) -> Record:
        """The webhook as the v2/v3 controller's prepare_item_for_response returns it (never the secret)."""
        resource, _, event = record["topic"].partition(".")
        return {
            "id": record["id"], "name": record["name"], "status": record["status"], "topic": record["topic"],
            "resource": resource, "event": event,
            "hooks": [event] if resource == "action" else TOPIC_HOOKS.get(record["topic"], []),
            "delivery_url": record["delivery_url"],
            **{k: record[k] for k in ("date_created", "date_created_gmt", "date_modified", "date_modified_gmt")},
            "_links": rec.links(base, "webhooks", record["id"]),
        }

    async def ping(self, record: Record) -> Delivery:
        """WC_Webhook::deliver_ping: ``webhook_id=<id>`` as a form, no signature; a 200 clears pending_delivery."""
        delivery = Delivery(subscription=str(record["id"]), topic=record["topic"], url=record["delivery_url"],
                            body=f"webhook_id={record['id']}".encode(), timeout=PING_TIMEOUT,
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
        await self.dispatcher.send_now(delivery)
        if delivery.state == "delivered":
            record["pending_delivery"] = False
        return delivery

    # -- deliveries ----------------------------------------------------------------------------------------
    def on_change(self, resource: str, event: str, record: Record) -> None:
        kind = RESOURCE_OF.get(resource)
        if kind is None or not self.records:
            return
        topic = f"{kind}.{event}"
        for hook in [h for h in self.records.values() if h["status"] == "active" and h["topic"] == topic]:
            payload = {"id": record["id"]} if event == "deleted" else with_links(self.site_url or "", resource,
                                                                                  record)
            body = php_json(payload)
            headers = {
                "Content-Type": "application/json",
                "X-WC-Webhook-Source": f"{self.site_url}/",
                "X-WC-Webhook-Topic": topic,
                "X-WC-Webhook-Resource": kind,
                "X-WC-Webhook-Event": event,
                "X-WC-Webhook-Signature": hmac_sha256_base64(body, specialchars_decode(hook["secret"])),
                "X-WC-Webhook-ID": str(hook["id"]),
            }
            self.dispatcher.enqueue(Delivery(subscription=str(hook["id"]), topic=topic, url=hook["delivery_url"],
                                             body=body, headers=headers, resource_id=record["id"],
                                             coalesce_key=f"{hook['id']}:{record['id']}"))

    def delivery_id(self, wid: int) -> str:
        """wp_hash($id . time()): an HMAC-MD5 keyed with the site's salt, of the id and the current second."""
        return hmac.new(self._salt, f"{wid}{int(time.time())}".encode(), hashlib.md5).hexdigest()

    # DeliveryHooks
    def active(self, delivery: Delivery) -> bool:
        return int(delivery.subscription) in self.records

    def finalize(self, delivery: Delivery) -> None:
        delivery.headers["X-WC-Webhook-Delivery-ID"] = self.delivery_id(int(delivery.subscription))

    def settled(self, delivery: Delivery, delivered: bool) -> None:
        """WC_Webhook::log_delivery then failed_delivery: count consecutive failures, disable past the maximum."""
        record = self.records.get(int(delivery.subscription))
        if record is None:
            return
        if delivered:
            record["failure_count"] = 0
        elif record["failure_count"] > MAX_FAILURES:
            record["status"] = "disabled"
        else:
            record["failure_count"] += 1


def install_webhook_routes(app: FastAPI, webhooks: Webhooks) -> None:
    """``/wp-json/wc/v3/webhooks``: list, create (then ping), get, update, delete (force) and batch."""
    path = f"{API}/webhooks"

    def remember_site(request: Request) -> str:
        base = base_url(request)
        if webhooks.site_url is None:
            webhooks.site_url = base
        return base

    async def list_webhooks(request: Request) -> Response:
        require(request, "list")
        base = remember_site(request)
        items = list(request.query_params.multi_items())
        q = parse_list("webhooks", php_params(items), webhooks.state.st)
        rows = select("webhooks", list(webhooks.records.values()), q)
        page, total, pages = page_of(rows, q)
        headers = {"X-WP-Total": str(total), "X-WP-TotalPages": str(pages)}
        link = link_header(f"{base}{request.url.path}", items, q.page, pages)
        if link:
            headers["Link"] = link
        return json_response([webhooks.view(r, base) for r in page], headers=headers)

    async def create_webhook(request: Request) -> Response:
        require(request, "create")
        base = remember_site(request)
        body = await json_body(request)
        _check_status_param(body)
        record = webhooks.create(body)
        await webhooks.ping(record)
        return json_response(webhooks.view(record, base), 201, {"Location": f"{base}{path}/{record['id']}"})

    async def get_webhook(request: Request, wid: int) -> Response:
        require(request, "view")
        record = webhooks.records.get(wid)
        if record is None:
            raise WpError("woocommerce_rest_shop_webhook_invalid_id", "ID is invalid.", 400)
        return json_response(webhooks.view(record, remember_site(request)))

    async def update_webhook(request: Request, wid: int) -> Response:
        require(request, "edit")
        body = await json_body(request)
        _check_status_param(body)
        return json_response(webhooks.view(webhooks.update(wid, body), remember_site(request)))

    async def delete_webhook(request: Request, wid: int) -> Response:
        require(request, "delete")
        force = str(request.query_params.get("force", "")).lower() in ("1", "true", "yes", "on")
        return json_response(webhooks.view(webhooks.delete(wid, force), remember_site(request)))

    async def batch(request: Request) -> Response:
        require(request, "batch")
        base = remember_site(request)
        result = run_batch(await json_body(request), webhooks.create, webhooks.update,
                           lambda wid: webhooks.delete(wid, True))
        for created in result.get("create", []):
            if "error" not in created:
                await webhooks.ping(created)
        return json_response({action: [r if "error" in r else webhooks.view(r, base) for r in rows]
                              for action, rows in result.items()})

    app.add_api_route(path, list_webhooks, methods=["GET"])
    app.add_api_route(path, create_webhook, methods=["POST"])
    app.add_api_route(f"{path}/batch", batch, methods=["POST", "PUT", "PATCH"])
    app.add_api_route(f"{path}/{{wid:int}}", get_webhook, methods=["GET"])
    app.add_api_route(f"{path}/{{wid:int}}", update_webhook, methods=["PUT", "PATCH", "POST"])
    app.add_api_route(f"{path}/{{wid:int}}", delete_webhook, methods=["DELETE"])


def _check_status_param(body: dict[str, Any]) -> None:
    """The item schema's enum, checked by WordPress before the controller runs."""
    status = body.get("status")
    if status is not None and status not in STATUSES:
        raise invalid_params({"status": not_in_enum("status", STATUSES)})
