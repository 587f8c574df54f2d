"""QuickBooks Online's error bodies: the ``Fault`` of the Accounting API, the lowercase ``fault`` of its
gateway (401), the throttle fault (429) and the OAuth server's ``{"error": ...}``.

Messages and details are the ones Intuit returns, as documented on developer.intuit.com (error codes page)
and as they appear in bodies quoted by integrators; docs/sandbox/quickbooks.md says which is which.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.responses import Response

from ferry.sandbox.quickbooks.times import qbo_now

JSON = "application/json;charset=UTF-8"

STALE_DETAIL = ("Stale Object Error : You and sandbox user were working on this at the same time. sandbox user "
                "finished before you did, so your work was not saved.")
INACTIVE_DETAIL = ("Object Not Found : Something you're trying to use has been made inactive. Check the fields "
                   "with accounts, customers, items, vendors or employees.")
DUPLICATE_NAME_DETAIL = ("The name supplied already exists. : Another customer, vendor or employee is already "
                         "using this name. Please use a different name.")
REQUIRED_MESSAGE = "Required param missing, need to supply the required value for the API"
BUSINESS_MESSAGE = "A business validation error has occurred while processing your request"


class QboFault(Exception):
    """A ``Fault`` answer: HTTP 400 unless said otherwise, one or more errors, a fault type."""

    def __init__(self, code: str, message: str, detail: str, element: str = "", *,
                 fault_type: str = "ValidationFault", status: int = 400) -> None:
        super().__init__(f"{code} {message}: {detail}")
        self.errors = [{"Message": message, "Detail": detail, "code": code, "element": element}]
        self.fault_type = fault_type
        self.status = status

    @property
    def code(self) -> str:
        return str(self.errors[0]["code"])

    def fault(self) -> dict[str, Any]:
        return {"Error": self.errors, "type": self.fault_type}

    def body(self) -> dict[str, Any]:
        return {"Fault": self.fault(), "time": qbo_now()}

    def response(self) -> Response:
        return json_response(self.body(), self.status)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type=JSON)


def required(param: str, element: str = "") -> QboFault:
    return QboFault("2020", REQUIRED_MESSAGE, f"Required parameter {param} is missing in the request", element)


def invalid_characters(value: str, element: str) -> QboFault:
    """2040: a name holding ':' (QuickBooks' parent:child separator), a tab or a newline. Message and detail as
    integrators quote them (``ERROR CODE:2040, ERROR MESSAGE:Invalid String. The String may contain
    unsupported or illegal chars, ERROR DETAIL:Element contains invalid characters. Rob:Barnett:Company``)."""
    return QboFault("2040", "Invalid String. The String may contain unsupported or illegal chars",
                    f"Element contains invalid characters. {value}", element)


def stale_object() -> QboFault:
    return QboFault("5010", "Stale Object Error", STALE_DETAIL)


def not_found(detail: str = INACTIVE_DETAIL) -> QboFault:
    return QboFault("610", "Object Not Found", detail)


def invalid_reference(entity: str, rid: str, element: str = "") -> QboFault:
    return QboFault("2500", "Invalid Reference Id", f"Invalid Reference Id : {entity} element id {rid} not found",
                    element)


def duplicate_name(existing_id: str) -> QboFault:
    return QboFault("6240", "Duplicate Name Exists Error", f"{DUPLICATE_NAME_DETAIL} Id={existing_id}")


def duplicate_doc_number(doc: str, txn_type: str, txn_id: str) -> QboFault:
    return QboFault("6140", "Duplicate Document Number Error",
                    f"Duplicate Document Number Error : You must specify a different number. This number has already "
                    f"been used. DocNumber={doc} is assigned to TxnType={txn_type} with TxnId={txn_id}")


def string_length(element: str, maximum: int, supplied: int) -> QboFault:
    return QboFault("2050", "String length is either shorter or longer than supported by specification",
                    f"String length specified does not match the supported length. Min:0 Max:{maximum} supported. "
                    f"Supplied length:{supplied}", element)


def business(detail: str, code: str = "6000", element: str = "") -> QboFault:
    return QboFault(code, BUSINESS_MESSAGE, f"Business Validation Error: {detail}", element)


def unsupported(detail: str) -> QboFault:
    return QboFault("500", "Unsupported Operation", f"Operation {detail} is not supported.")


def bad_request(detail: str, element: str = "") -> QboFault:
    return QboFault("2010", "Request has invalid or unsupported property",
                    f"Property Name:{detail} specified is unsupported or invalid", element)


def query_parse_error(detail: str) -> QboFault:
    return QboFault("4000", "Error parsing query", f"QueryParserError: {detail}")


def query_validation_error(detail: str) -> QboFault:
    return QboFault("4001", "Invalid query", f"QueryValidationError: {detail}")


def authentication_failed(detail: str = "Token expired") -> Response:
    """The gateway's 401: lowercase ``fault``/``error`` keys and an epoch-millisecond ``time`` (it is not the
    Accounting API's own Fault; python-quickbooks raises AuthorizationException on any 401 without reading it)."""
    body: dict[str, Any] = {
        "warnings": None,
        "intuitObject": None,
        "fault": {"error": [{"message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                             "detail": detail, "code": "3200", "element": None}],
                  "type": "AUTHENTICATION"},
        "report": None,
        "queryResponse": None,
        "batchItemResponse": [],
        "attachableResponse": [],
        "syncErrorResponse": None,
        "requestId": None,
        "time": int(time.time() * 1000),
        "status": None,
        "cdcresponse": [],
    }
    return json_response(body, 401, {"WWW-Authenticate": 'Bearer realm="Intuit"'})


def throttled(retry_after: int | None = None) -> Response:
    """HTTP 429, ``ThrottleExceeded`` (code 3001, fault type ``SERVICE``)."""
    body = {"Fault": {"Error": [{"Message": "message=ThrottleExceeded; errorCode=003001; statusCode=429",
                                 "Detail": "The request limit was reached.  Try again later", "code": "3001"}],
                      "type": "SERVICE"},
            "time": qbo_now()}
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return json_response(body, 429, headers)


def system_fault(status: int = 500) -> Response:
    body = {"Fault": {"Error": [{"Message": "An application error has occurred while processing your request",
                                 "Detail": "System Failure Error: An unexpected error occurred while accessing or "
                                           "saving your data. Please wait a few minutes and try again. If the "
                                           "problem persists, contact customer support.",
                                 "code": "10000"}],
                      "type": "SystemFault"},
            "time": qbo_now()}
    return json_response(body, status)


def oauth_error(error: str, description: str | None = None, status: int = 400) -> Response:
    """The OAuth server's answer to a bad token request, e.g. ``{"error":"invalid_grant"}`` (HTTP 400)."""
    body: dict[str, str] = {"error": error}
    if description:
        body["error_description"] = description
    return json_response(body, status, {"Cache-Control": "no-store"})
