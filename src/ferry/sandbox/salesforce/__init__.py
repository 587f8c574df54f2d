"""A faithful local Salesforce org: REST, sObject Collections, Composite, SOQL, Bulk API 2.0, OAuth,
Change Data Capture over the Streaming API (CometD) and the Pub/Sub API (gRPC, with platform events).

    sb = SalesforceSandbox(state_dir, seed=0)
    running = ferry.sandbox.serve.start_in_thread(sb.app, state_dir)
    creds = sb.credentials(running.url)

See docs/sandbox/salesforce.md for what is emulated and how to point a client at it.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from ferry.sandbox.salesforce.app import build_app, endpoint_fault
from ferry.sandbox.salesforce.auth import OAuthServer, ensure_app_keys
from ferry.sandbox.salesforce.bulk import BulkApi
from ferry.sandbox.salesforce.cdc import RETENTION_SECONDS, CdcConfig, ChangeCapture, ChangeEvent
from ferry.sandbox.salesforce.composite import CollectionsApi
from ferry.sandbox.salesforce.dml import Org
from ferry.sandbox.salesforce.faults import Faults
from ferry.sandbox.salesforce.graph import GraphApi, TreeApi
from ferry.sandbox.salesforce.ids import IdFactory
from ferry.sandbox.salesforce.latency import LatencyProfile
from ferry.sandbox.salesforce.limits import DEFAULT_CONCURRENT_LIMIT, LONG_RUNNING_SECONDS, ApiBudget
from ferry.sandbox.salesforce.login import register_login_routes
from ferry.sandbox.salesforce.persist import OrgDb, db_path
from ferry.sandbox.salesforce.pubsub import (
    DEFAULT_PLATFORM_EVENTS,
    KEEPALIVE_SECONDS,
    PlatformEvents,
    PubSubServer,
    PubSubService,
)
from ferry.sandbox.salesforce.query import Executor
from ferry.sandbox.salesforce.rest import RestApi
from ferry.sandbox.salesforce.routing import Router
from ferry.sandbox.salesforce.schema import load_schema
from ferry.sandbox.salesforce.search import SearchApi
from ferry.sandbox.salesforce.state import OrgState
from ferry.sandbox.salesforce.store import Store
from ferry.sandbox.salesforce.streaming import (
    CONNECT_TIMEOUT_SECONDS,
    StreamingApi,
    register_cdc_admin_routes,
    register_streaming_routes,
)

__all__ = ["SalesforceSandbox"]

API_VERSION = "62.0"
INTEGRATION_USERNAME = "integration@ferry.sandbox"
STANDARD_PRICE_BOOK = "Standard Price Book"


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SalesforceSandbox:
    def __init__(
        self,
        state_dir: Path,
        *,
        seed: int = 0,
        daily_api_limit: int = 1_000_000,
        session_ttl_seconds: float = 7200,
        bulk_chunk_rows: int = 10_000,
        extra_schema: Path | None = None,
        persist: bool = False,
        latency: str = "off",
        cdc_entities: Iterable[str] | None = None,
        cdc_retention_seconds: float = RETENTION_SECONDS,
        cdc_max_events: int = 100_000,
        streaming_timeout_seconds: float = CONNECT_TIMEOUT_SECONDS,
        faults: dict[str, Any] | None = None,
        concurrent_long_running_limit: int = DEFAULT_CONCURRENT_LIMIT,
        long_running_seconds: float = LONG_RUNNING_SECONDS,
        pubsub_port: int | None = None,
        pubsub_keepalive_seconds: float = KEEPALIVE_SECONDS,
        platform_events: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.latency = LatencyProfile(latency, seed)
        self.keys = ensure_app_keys(self.state_dir)
        schema = load_schema(extra_schema)
        ids = IdFactory(seed)
        store = Store(schema)
        org = Org(schema, store, ids, _utc_now)
        org_id = IdFactory(seed).new("00D")
        self.faults = Faults(self.latency)
        if faults:
            self.faults.configure(faults)
        org.lock_fails = self.faults.lock_fails
        self.state = OrgState(
            schema=schema, store=store, ids=ids, org=org, executor=Executor(schema, store, _utc_now),
            budget=ApiBudget(daily_api_limit, concurrent_long_running_limit, long_running_seconds),
            oauth=OAuthServer(self.keys, org_id, session_ttl_seconds),
            org_id=org_id, clock=_utc_now, bulk_chunk_rows=max(1, bulk_chunk_rows),
        )
        # Change Data Capture: the store reports every committed change; the Streaming API delivers them
        self.cdc = ChangeCapture(schema, CdcConfig(cdc_retention_seconds, cdc_max_events),
                                 default_user=lambda: org.user_id)
        self.cdc.select_entities(cdc_entities)
        store.changes = self.cdc
        # platform events (/event/<Name>__e): published over Pub/Sub, delivered over Pub/Sub and CometD
        self.platform_events = PlatformEvents({**DEFAULT_PLATFORM_EVENTS, **(platform_events or {})},
                                              self.cdc.config)
        self.streaming = StreamingApi(self.state.oauth, schema, self.cdc, connect_timeout=streaming_timeout_seconds,
                                      platform_events=self.platform_events)
        self.router = Router()
        self.rest = RestApi(self.state)
        self.collections = CollectionsApi(self.state, self.router)
        self.bulk = BulkApi(self.state)
        self.search = SearchApi(self.state)
        trees, graphs = TreeApi(self.state), GraphApi(self.state, self.router, self.collections)
        for api in (self.rest, self.collections, self.bulk, self.search, trees, graphs):
            api.register(self.router)
        self.bulk.queue_delay = self.latency.bulk_queue_delay
        self.bulk.chunk_delay = self.latency.bulk_chunk_delay
        self.bulk.query_delay = self.latency.bulk_query_delay
        self.db: OrgDb | None = None
        self._flushed_api_calls = -1
        if persist:
            self._open_db()
        else:
            self._seed()
        self.app: FastAPI = build_app(self)
        # Pub/Sub API: the same change event log over gRPC, plus platform events; a server only with a port
        self.pubsub = PubSubService(self.state.oauth, self.cdc, self.platform_events, pubsub_keepalive_seconds)
        self.pubsub_server: PubSubServer | None = None
        if pubsub_port is not None:
            self.pubsub_server = PubSubServer(self.pubsub, self.state_dir, pubsub_port)
            self.app.router.on_startup.append(self.pubsub_server.start)
            self.app.router.on_shutdown.append(self.pubsub_server.stop)

    # --- persistence (persist.py) ------------------------------------------------------------------

    def _open_db(self) -> None:
        self.db = db = OrgDb(db_path(self.state_dir))
        self.state.store.dirty = set()
        self.bulk.dirty_jobs = set()
        self.bulk.after_chunk = self.flush
        if db.is_empty():
            self._seed()
            db.put_meta("oauth", self._oauth_meta())
        else:
            self._load(db)
        self.flush(force=True)

    def _load(self, db: OrgDb) -> None:
        state = self.state
        store = state.store
        for obj, deleted, record in db.load_records():
            if obj in store.tables:
                store.restore(store.table(obj), record, deleted)
        state.ids.restore(db.counters("id"))
        state.org.restore_auto_numbers(db.counters("auto"))
        budget = db.meta("budget") or {}
        state.budget.used = int(budget.get("used", 0))
        state.budget.by_endpoint.update(budget.get("by_endpoint", {}))
        state.budget.bulk_batches = int(budget.get("bulk_batches", 0))
        state.budget.bulk_query_jobs = int(budget.get("bulk_query_jobs", 0))
        oauth = db.meta("oauth")
        if oauth:
            state.oauth.client_id, state.oauth.client_secret = oauth["client_id"], oauth["client_secret"]
        users = store.table("User").rows.values()
        user_id = next((u["Id"] for u in users if u.get("Username") == INTEGRATION_USERNAME), "")
        state.org.user_id = user_id
        state.oauth.users = {INTEGRATION_USERNAME: user_id}
        self._restore_logins(oauth or {}, user_id)
        cdc_meta = db.meta("cdc") or {}
        self.cdc.bus.restore((ChangeEvent(*row) for row in db.load_events()),
                             int(cdc_meta.get("last_replay_id", 0)), int(cdc_meta.get("last_pruned_id", 0)))
        for kind, info, data, rows in db.load_jobs():
            if kind == "ingest":
                self.bulk.restore_ingest_job(info, data, rows)
            else:
                self.bulk.restore_query_job(info)

    def flush(self, force: bool = False) -> None:
        """Make everything changed since the last flush durable (a no-op without persist=True)."""
        db = self.db
        if db is None:
            return
        used = self.state.budget.used
        if not force and used == self._flushed_api_calls and not self.state.store.dirty and not self.bulk.dirty_jobs:
            return
        db.flush(self)
        self._flushed_api_calls = used

    def close(self) -> None:
        """Flush and close org.db; the sandbox must not serve requests afterwards."""
        if self.db is not None:
            self.flush(force=True)
            self.db.close()
            self.db = None

    def _oauth_meta(self) -> dict[str, Any]:
        oauth = self.state.oauth
        secret = oauth.user_secrets.get(INTEGRATION_USERNAME)
        return {"client_id": oauth.client_id, "client_secret": oauth.client_secret,
                "password": secret.password if secret else None,
                "security_token": secret.security_token if secret else None,
                "refresh_tokens": dict(oauth.refresh_tokens)}

    def _restore_logins(self, meta: dict[str, Any], user_id: str) -> None:
        """The integration user's password and refresh tokens: from org.db, else kept, else new."""
        oauth = self.state.oauth
        if meta.get("password"):
            oauth.set_password(INTEGRATION_USERNAME, meta["password"], meta["security_token"])
        elif INTEGRATION_USERNAME not in oauth.user_secrets:
            oauth.set_password(INTEGRATION_USERNAME, secrets.token_urlsafe(12))
        tokens = list(meta.get("refresh_tokens") or oauth.refresh_tokens)
        oauth.refresh_tokens = {token: user_id for token in tokens}
        if not tokens:
            oauth.issue_refresh_token(user_id)

    def login_credentials(self) -> dict[str, str]:
        """The integration user's password, security token and a refresh token (username-password,
        SOAP login and refresh-token grants); kept across restarts with persist=True."""
        oauth = self.state.oauth
        secret = oauth.user_secrets[INTEGRATION_USERNAME]
        return {"username": INTEGRATION_USERNAME, "password": secret.password,
                "security_token": secret.security_token, "refresh_token": next(iter(oauth.refresh_tokens), ""),
                "client_id": oauth.client_id, "client_secret": oauth.client_secret}

    def register_event_and_login_routes(self, app: FastAPI) -> None:
        register_login_routes(app, self.state, after_change=lambda: self.flush(force=True))
        register_streaming_routes(app, self.streaming, lambda request: endpoint_fault(self, request))
        register_cdc_admin_routes(app, self)

    def undelete(self, record_id: str) -> bool:
        """Restore a record from the recycle bin, as a user does in the UI, with the children its delete
        cascaded to; one transaction, one UNDELETE event per record."""
        store = self.state.store
        table = store.table_for_id(record_id)
        if table is None or record_id not in table.deleted:
            return False
        now = self.state.org.now_text()
        stamp = {"LastModifiedDate": now, "SystemModstamp": now, "LastModifiedById": self.state.org.user_id}
        with store.transaction():
            self._undelete_tree(table.schema.name, record_id, stamp)
        self.flush(force=True)
        return True

    def _undelete_tree(self, obj_name: str, record_id: str, stamp: dict[str, Any]) -> None:
        store = self.state.store
        store.undelete(store.table(obj_name), record_id, stamp)
        for rel in self.state.schema.children.get(obj_name, []):
            if not rel.cascade_delete:
                continue
            bin_ = store.table(rel.child).deleted
            for child_id in [cid for cid, child in bin_.items() if child.get(rel.field) == record_id]:
                self._undelete_tree(rel.child, child_id, stamp)

    def _seed(self) -> None:
        """The records every org starts with: the integration user and the standard price book."""
        with self.cdc.paused():  # an org's own setup is no change a subscriber sees
            self._seed_records()

    def _seed_records(self) -> None:
        org = self.state.org
        admin = org.seed_record("Profile", {"Name": "System Administrator", "UserType": "Standard"})
        org.seed_record("Profile", {"Name": "Standard User", "UserType": "Standard"})
        user_id = org.seed_record("User", {
            "Username": INTEGRATION_USERNAME, "LastName": "Integration", "FirstName": "Ferry",
            "Email": INTEGRATION_USERNAME, "Alias": "ferry", "CommunityNickname": "ferry.integration",
            "IsActive": True, "TimeZoneSidKey": "GMT", "LocaleSidKey": "en_US", "EmailEncodingKey": "UTF-8",
            "LanguageLocaleKey": "en_US", "ProfileId": admin,
        })
        org.user_id = user_id
        self.state.oauth.users = {INTEGRATION_USERNAME: user_id}
        self._restore_logins({}, user_id)
        org.seed_record("Pricebook2", {"Name": STANDARD_PRICE_BOOK, "IsActive": True, "IsStandard": True})

    def reset(self) -> None:
        """Forget every record, job, cursor and API count; keep the keys and live sessions."""
        self.bulk.reset()
        self.rest.reset()
        self.state.store.clear()
        self.state.ids.reset()
        self.state.org.reset_counters()
        self.state.budget.reset()
        self.cdc.bus.clear()
        self.cdc.config.gap_next = 0  # a pending gap switch is a fault of the last run, not a setting
        self.platform_events.bus.clear()
        self.faults.reset_counts()  # the rules stay: a reset starts a fresh run under the same faults
        if self.db is not None:
            self.db.wipe()
            self.state.store.dirty = set()
            self.bulk.dirty_jobs = set()
        self._seed()
        if self.db is not None:
            self.db.put_meta("oauth", self._oauth_meta())
        self.flush(force=True)

    def credentials(self, base_url: str) -> dict[str, Any]:
        return {
            "url": base_url,
            "login_url": base_url,
            "client_id": self.state.oauth.client_id,
            "client_secret": self.state.oauth.client_secret,
            "username": INTEGRATION_USERNAME,
            "private_key_file": str(self.keys.private_key_file),
            "api_version": API_VERSION,
            **({"pubsub_endpoint": self.pubsub_server.endpoint} if self.pubsub_server is not None else {}),
        }
