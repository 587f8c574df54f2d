"""``QuickBooksSandbox``: a generated (or persisted) company served as the QuickBooks Online Accounting API v3,
with Intuit's OAuth 2.0 server in front of it."""

from __future__ import annotations

import json
import secrets
import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from ferry.sandbox.quickbooks.app import SandboxState, build_app
from ferry.sandbox.quickbooks.company import Company, save_json
from ferry.sandbox.quickbooks.faults import FaultGate, Faults
from ferry.sandbox.quickbooks.generator import generate_company
from ferry.sandbox.quickbooks.oauth import ACCESS_TTL, ROTATE_AFTER, ROTATION_GRACE, OAuthServer
from ferry.sandbox.quickbooks.ratelimit import RateLimits
from ferry.sandbox.serve import RunningSandbox, start_in_thread

MINOR_VERSION = 75
REDIRECT_URI = "https://127.0.0.1/callback"


class QuickBooksSandbox:
    """Serve a company (generated from ``seed`` and sizes) at ``/v3/company/{realm_id}/``.

    ``sb.app`` is the ASGI app (faults around the FastAPI routes); ``sb.start()`` serves it over HTTPS from
    a thread. Client id and secret are random per instance unless given; a first refresh token is issued at
    start (``sb.refresh_token``), as the OAuth Playground gives a developer one. ``persist=True`` keeps the
    company and the tokens in ``<state_dir>/quickbooks/company.json`` across restarts (written after every
    change). ``access_ttl``, ``rotate_after`` and ``rotation_grace`` (seconds) shape token lifetimes;
    ``limits`` the throttles (``ratelimit.RateLimits`` fields); ``faults`` the fault configuration.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        seed: int = 7,
        customers: int = 60,
        products: int = 20,
        orders: int = 120,
        realm_id: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        persist: bool = False,
        access_ttl: float = ACCESS_TTL,
        rotate_after: float = ROTATE_AFTER,
        rotation_grace: float = ROTATION_GRACE,
        requestid_window: float = 86400.0,
        limits: dict[str, Any] | None = None,
        faults: dict[str, Any] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.persist_path = self.state_dir / "quickbooks" / "company.json" if persist else None
        saved = self._load()
        realm = realm_id or (saved["company"]["realm_id"] if saved else str(9130350000000000 + seed))
        self.company = Company.from_json(saved["company"]) if saved else generate_company(
            realm, seed=seed, customers=customers, products=products, orders=orders)
        keys = saved.get("client", {}) if saved else {}
        self.oauth = OAuthServer(client_id or keys.get("client_id") or f"AB{secrets.token_hex(21)}",
                                 client_secret or keys.get("client_secret") or secrets.token_hex(20),
                                 self.company.realm_id, access_ttl=access_ttl, rotate_after=rotate_after,
                                 rotation_grace=rotation_grace)
        if saved:
            self.oauth.load(saved.get("oauth", {}))
        self.refresh_token = self.oauth.issue_grant().token
        self.limits = RateLimits()
        if limits:
            self.limits.configure(limits)
        self.faults = Faults()
        if faults:
            self.faults.configure(faults)  # the POST /__sandbox/faults body; ValueError when it is not valid
        self._lock = threading.Lock()
        self.state = SandboxState(self.company, self.oauth, self.limits, self.faults,
                                  requestid_window=requestid_window, on_change=self.save)
        self.api: FastAPI = build_app(self.state)
        self.app: Any = FaultGate(self.api, self.faults)
        self.save()

    @property
    def realm_id(self) -> str:
        return self.company.realm_id

    @property
    def client_id(self) -> str:
        return self.oauth.client_id

    @property
    def client_secret(self) -> str:
        return self.oauth.client_secret

    def _load(self) -> dict[str, Any] | None:
        if self.persist_path is None or not self.persist_path.exists():
            return None
        doc: dict[str, Any] = json.loads(self.persist_path.read_text())
        return doc

    def save(self) -> None:
        """Write the company and the OAuth state (when persisting); called after every change."""
        if self.persist_path is None:
            return
        with self._lock:
            save_json(self.persist_path, {
                "company": self.company.to_json(),
                "oauth": self.oauth.to_json(),
                "client": {"client_id": self.oauth.client_id, "client_secret": self.oauth.client_secret},
            })

    def credentials(self, base_url: str) -> dict[str, Any]:
        return {
            "url": base_url,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "realm_id": self.realm_id,
            "refresh_token": self.refresh_token,
            "redirect_uri": REDIRECT_URI,
            "discovery_url": f"{base_url}/.well-known/openid_configuration",
            "api_url": f"{base_url}/v3",
            "minor_version": MINOR_VERSION,
        }

    def start(self, state_dir: Path | None = None, *, port: int = 0) -> RunningSandbox:
        """Serve over HTTPS from a background thread (tests, the demo)."""
        return start_in_thread(self.app, state_dir or self.state_dir, port)
