"""A faithful local emulator of the QuickBooks Online Accounting API v3 and Intuit's OAuth 2.0 server, with a
seeded generator of a company.

    from ferry.sandbox.quickbooks import QuickBooksSandbox, generate_company
"""

from __future__ import annotations

from ferry.sandbox.quickbooks.company import Company
from ferry.sandbox.quickbooks.generator import generate_company
from ferry.sandbox.quickbooks.sandbox import MINOR_VERSION, QuickBooksSandbox

__all__ = ["MINOR_VERSION", "Company", "QuickBooksSandbox", "generate_company"]
