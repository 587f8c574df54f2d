"""QuickBooks Fault bodies, read and classified by code.

``{"Fault": {"Error": [{"Message", "Detail", "code", "element"}], "type": "ValidationFault"}}`` (the
gateway's 401 uses lowercase ``fault``/``error``). What retrying can fix is decided by the code, not the
wording: a system fault, a throttle, an expired token; 5010 (a stale SyncToken) is the sink's to clear by
reading the record again. The duplicate-name/number codes tell the sink a create may already have happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from ferry.connectors.http import SessionExpired, default_classify, describe_failure
from ferry.errors import FerryError, RecordError, TransientError

STALE_OBJECT = "5010"
DUPLICATE_NAME = "6240"
DUPLICATE_DOC_NUMBER = "6140"
DUPLICATES = frozenset({DUPLICATE_NAME, DUPLICATE_DOC_NUMBER})
# System fault, throttles, an expired/invalid token (the HTTP core refreshes on 401 first).
TRANSIENT_CODES = frozenset({"10000", "3001", "3003", "3200", STALE_OBJECT})
_MAX = 300


@dataclass(frozen=True, slots=True)
class Fault:
    code: str
    message: str
    detail: str
    element: str
    type: str

    @property
    def transient(self) -> bool:
        return self.code in TRANSIENT_CODES

    def text(self) -> str:
        words = f"{self.message}: {self.detail}" if self.detail and self.detail != self.message else self.message
        return words if len(words) <= _MAX else words[: _MAX - 1] + "…"

    def record_error(self) -> RecordError:
        fields = [self.element] if self.element else []
        return RecordError(f"QBO_{self.code}", self.text(), fields, transient=self.transient)


def parse_fault(body: Any) -> Fault | None:
    """The first error of a ``Fault`` (or the gateway's ``fault``) object or answer, else None."""
    if not isinstance(body, dict):
        return None
    fault = body.get("Fault") or body.get("fault")
    if not isinstance(fault, dict):
        fault = body if "Error" in body or "error" in body else None
    if fault is None:
        return None
    errors = fault.get("Error") or fault.get("error") or []
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    return Fault(
        str(first.get("code") or "UNKNOWN"),
        str(first.get("Message") or first.get("message") or ""),
        str(first.get("Detail") or first.get("detail") or ""),
        str(first.get("element") or ""),
        str(fault.get("type") or ""),
    )


def response_fault(response: httpx.Response) -> Fault | None:
    try:
        return parse_fault(orjson.loads(response.content)) if response.content else None
    except orjson.JSONDecodeError:
        return None


def classify(response: httpx.Response) -> FerryError | None:
    """Success and a 400 Fault are answers (the caller reads the Fault: a record's failure, not the call's);
    401 is an expired session (refreshed once by the core); 429/5xx transient; the rest by status."""
    status = response.status_code
    if status < 400:
        return None
    fault = response_fault(response)
    if status == 400 and fault is not None:
        return None
    if status == 401:
        return SessionExpired(describe_failure(response, fault.code if fault else None, "AuthenticationFailed"),
                              code=fault.code if fault else "HTTP_401")
    if fault is not None and status in (429, 500, 502, 503, 504):
        error = default_classify(response)
        return TransientError(describe_failure(response, fault.code, fault.text()),
                              retry_after=getattr(error, "retry_after", None), code=fault.code)
    return default_classify(response)
