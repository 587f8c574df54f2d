"""The web dashboard: runs, throughput, dead letters (replay, discard) and pipeline plans, read from the state store.

``build_dashboard(...)`` is an ``APIRouter`` another app (``ferry serve``) mounts at ``/``; ``create_app(...)`` is
the stand-alone app ``ferry dashboard`` and ``ferry demo --serve`` run. Server-rendered HTML, one small JS and one
CSS file shipped in the package: no CDN, no build step, works offline.
"""

from ferry.web.app import Dashboard, build_dashboard, create_app
from ferry.web.security import DashboardAccess, check_bind

__all__ = ["Dashboard", "DashboardAccess", "build_dashboard", "check_bind", "create_app"]
