"""Fault injection: make the sandbox misbehave the way a real org (or the network in front of it) does.

One configuration, three ways in: `ferry sandbox serve salesforce --fault ...` (CLI), `POST /__sandbox/faults`
(admin route; `PATCH` merges) and `SalesforceSandbox.faults.configure(...)` (Python). Its JSON form:

    {"seed": 1,
     "rules": [{"kind": "503", "rate": 0.05},
               {"kind": "reset", "rate": 0.02, "path": "composite/sobjects", "method": "PATCH"},
               {"kind": "timeout", "rate": 0.01, "hold_seconds": 30},
               {"kind": "429", "rate": 1.0, "retry_after": 2, "count": 1},
               {"kind": "latency", "rate": 0.5, "latency_ms": 200}],
     "lock_row_rate": 0.03,
     "expire_session_every": 500,
     "timeout_hold_seconds": 30}

A rule applies to API calls whose path (after /services/data/vXX.X/) contains `path` (case-insensitive) and
whose method matches; a rule whose `path` starts with `/` is matched against the whole URL path instead,
which is how the OAuth token endpoint (`/services/oauth2/token`) and the Streaming API (`/cometd`) are
reached: rules without an absolute path never touch those two. A rule with `body` applies only to calls whose
request body contains that text (one record's external id: the call that writes it). `rate` is the share of
matching calls it fires on, `count` bounds how many times it fires. Rules are tried in order; a latency
rule delays the call and lets the next rule run, any other rule that fires decides the call's fate.

`lock_row_rate` fails that share of record saves with UNABLE_TO_LOCK_ROW: per record in Collections,
Composite and Bulk results, as a 400 on single-record calls. `expire_session_every: N` invalidates the
token of every Nth authenticated API call (that call and every later one with the token get 401
INVALID_SESSION_ID until the client authenticates again).

Every injected fault is counted by kind (`injected`), so a chaos run can print what it survived. All draws
come from one `random.Random(seed)`: the same seed and call order give the same faults.

The same hook applies the latency profile (latency.py): `after_call` sleeps for the profile's per-endpoint
delay once the handler has computed the reply.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import asdict, dataclass, fields
from typing import Any

from ferry.sandbox.salesforce.latency import LatencyProfile
from ferry.sandbox.salesforce.routing import Reply

LOCK_MESSAGE = "unable to obtain exclusive access to this record"
MAX_HOLD_SECONDS = 600.0  # an org times a REST call out after 10 minutes; a held call never outlives that
DEFAULT_HOLD_SECONDS = 30.0

# kind -> (HTTP status, errorCode, message): the bodies an org (or its load balancer) answers with.
STATUS_FAULTS: dict[str, tuple[int, str, str]] = {
    "500": (500, "UNKNOWN_EXCEPTION", "An unexpected error occurred. Please include this ErrorId if you contact "
            "support: 1234567890-12345 (-1234567890)"),
    "502": (502, "SERVER_UNAVAILABLE", "Bad gateway"),
    "503": (503, "SERVER_UNAVAILABLE", "Server is temporarily unavailable; please retry"),
    "504": (504, "SERVER_UNAVAILABLE", "Gateway timeout"),
    "429": (429, "REQUEST_LIMIT_EXCEEDED", "Too many requests"),
    "limit": (403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
    "concurrent": (403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentRequests (Concurrent API Requests) Limit exceeded."),
    "lock": (400, "UNABLE_TO_LOCK_ROW", LOCK_MESSAGE),
    "expire": (401, "INVALID_SESSION_ID", "Session expired or invalid"),
}
# "cut": the call is processed and its answer starts, then the connection is reset halfway through the body
# (a load balancer or proxy dropping a long download: the client sees a response shorter than its length).
CONNECTION_FAULTS = ("reset", "timeout", "cut")
KINDS = (*STATUS_FAULTS, *CONNECTION_FAULTS, "latency")
_KIND_OF_STATUS = {401: "expire", 403: "limit", 400: "lock"}


@dataclass
class FaultRule:
    kind: str = ""  # one of KINDS; "" means: derived from `status` (or "latency" when only latency_ms is set)
    rate: float = 1.0
    path: str = ""
    method: str = ""
    count: int | None = None
    status: int | None = None  # any status; overrides the kind's status
    latency_ms: int = 0
    retry_after: int | None = None  # adds a Retry-After header (an org sends none; off by default)
    hold_seconds: float | None = None  # timeout: how long to hold before dropping (default: timeout_hold_seconds)
    processed: bool = False  # reset/timeout after the handler ran: the write happened, the answer is lost
    error_code: str | None = None
    message: str | None = None
    body: str = ""  # only calls whose request body contains this text (one record's external id, say)

    def __post_init__(self) -> None:
        if not self.kind:
            if self.status is not None:
                self.kind = _KIND_OF_STATUS.get(self.status, str(self.status))
            elif self.latency_ms:
                self.kind = "latency"
        if self.kind not in KINDS and not (self.kind.isdigit() and self.status is not None):
            raise ValueError(f"unknown fault kind {self.kind!r}: choose one of {', '.join(KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be between 0 and 1, got {self.rate}")
        if self.count is not None and self.count < 0:
            raise ValueError("fault count must be >= 0")
        if self.kind == "latency" and self.latency_ms <= 0:
            raise ValueError("a latency fault needs latency_ms > 0")
        if self.hold_seconds is not None and not 0 < self.hold_seconds <= MAX_HOLD_SECONDS:
            raise ValueError(f"hold_seconds must be in (0, {MAX_HOLD_SECONDS:g}]")
        self.method = self.method.upper()

    def applies(self, method: str, path: str, full_path: str, body: bytes = b"") -> bool:
        if self.count is not None and self.count <= 0:
            return False
        if self.method and self.method != method:
            return False
        if self.body and self.body.encode() not in body:
            return False
        if self.path.startswith("/"):
            return self.path.lower() in full_path.lower()
        return self.path.lower() in path.lower()


@dataclass(frozen=True)
class Drop:
    """Close the connection without an answer (`reset`), after holding it `hold` seconds (`timeout`), or
    halfway through the answer's body (`cut`, which carries the `reply` it cuts short)."""

    kind: str
    hold: float
    processed: bool
    reply: Reply | None = None


@dataclass(frozen=True)
class Decision:
    """What the injector decided for one call: an error reply, a dropped connection, an expired session."""

    reply: Reply | None = None
    drop: Drop | None = None
    expire_session: bool = False


_RULE_FIELDS = {f.name for f in fields(FaultRule)}
_SPEC_KEYS = {"ms": "latency_ms", "hold": "hold_seconds", "code": "error_code", "retry-after": "retry_after"}


def parse_fault_spec(spec: str) -> FaultRule:
    """`KIND[:RATE][,key=value...]`, e.g. `503:0.05`, `reset:0.02,path=composite`, `latency:1,ms=250`."""
    head, *options = [part.strip() for part in spec.split(",")]
    kind, _, rate_text = head.partition(":")
    kind = kind.strip().lower()
    # A bare status without a kind of its own (401, 400, 418...) is derived from the status.
    args: dict[str, Any] = {"status": int(kind)} if kind.isdigit() and kind not in STATUS_FAULTS else {"kind": kind}
    try:
        if rate_text:
            args["rate"] = float(rate_text)
        for option in options:
            key, sep, value = option.partition("=")
            key = _SPEC_KEYS.get(key.strip().lower(), key.strip().lower().replace("-", "_"))
            if not sep or key not in _RULE_FIELDS or key in ("kind", "rate"):
                raise ValueError(f"unknown option {option!r}")
            args[key] = _spec_value(key, value.strip())
        return FaultRule(**args)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad fault spec {spec!r}: {exc} (expected KIND[:RATE][,key=value...], KIND one of "
                         f"{', '.join(KINDS)})") from None


def _spec_value(key: str, value: str) -> Any:
    if key in ("count", "latency_ms", "retry_after", "status"):
        return int(value)
    if key == "hold_seconds":
        return float(value)
    if key == "processed":
        return value.lower() in ("1", "true", "yes")
    return value


class Faults:
    def __init__(self, latency: LatencyProfile | None = None) -> None:
        self.latency = latency or LatencyProfile()
        self.rules: list[FaultRule] = []
        self.lock_row_rate = 0.0
        self.expire_session_every = 0
        self.timeout_hold_seconds = DEFAULT_HOLD_SECONDS
        self.seed = 0
        self.rng = random.Random(0)
        self.injected: Counter[str] = Counter()
        self._authenticated_calls = 0

    # --- configuration -----------------------------------------------------------------------------

    def configure(self, config: dict[str, Any]) -> None:
        """Replace the whole configuration (keys left out take their defaults); counts are kept."""
        self._apply(config, merge=False)

    def update(self, config: dict[str, Any]) -> None:
        """Merge into the configuration: `rules` are appended, the other keys given are replaced."""
        self._apply(config, merge=True)

    def add_rule(self, rule: FaultRule | str) -> FaultRule:
        parsed = parse_fault_spec(rule) if isinstance(rule, str) else rule
        self.rules.append(parsed)
        return parsed

    def clear(self) -> None:
        """No faults (the latency profile stays); counts are kept."""
        self.configure({})

    def reset_counts(self) -> None:
        self.injected.clear()
        self._authenticated_calls = 0

    def _apply(self, config: dict[str, Any], *, merge: bool) -> None:
        if not isinstance(config, dict):
            raise ValueError("the fault configuration must be a JSON object")
        unknown = set(config) - {"seed", "rules", "lock_row_rate", "lock_rate", "expire_session_every",
                                 "timeout_hold_seconds", "reset_counts"}
        if unknown:
            raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
        rules = [self._rule(r) for r in config.get("rules", [])]
        rate = float(config.get("lock_row_rate", config.get("lock_rate", self.lock_row_rate if merge else 0.0)) or 0)
        every = int(config.get("expire_session_every", self.expire_session_every if merge else 0))
        hold = float(config.get("timeout_hold_seconds", self.timeout_hold_seconds if merge else DEFAULT_HOLD_SECONDS))
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"lock_row_rate must be between 0 and 1, got {rate}")
        if every < 0:
            raise ValueError("expire_session_every must be >= 0 (0 turns it off)")
        if not 0 < hold <= MAX_HOLD_SECONDS:
            raise ValueError(f"timeout_hold_seconds must be in (0, {MAX_HOLD_SECONDS:g}]")
        self.rules = [*self.rules, *rules] if merge else rules
        self.lock_row_rate, self.expire_session_every, self.timeout_hold_seconds = rate, every, hold
        if "seed" in config or not merge:
            self.seed = int(config.get("seed", 0))
            self.rng = random.Random(self.seed)
        if config.get("reset_counts"):
            self.reset_counts()

    @staticmethod
    def _rule(raw: Any) -> FaultRule:
        if isinstance(raw, str):
            return parse_fault_spec(raw)
        if not isinstance(raw, dict):
            raise ValueError(f"a fault rule must be an object or a spec string, got {raw!r}")
        unknown = set(raw) - _RULE_FIELDS
        if unknown:
            raise ValueError(f"unknown fault rule keys: {', '.join(sorted(unknown))}")
        return FaultRule(**raw)

    @property
    def fired(self) -> int:
        """Every fault injected so far, all kinds together."""
        return sum(self.injected.values())

    def describe(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "rules": [asdict(r) for r in self.rules],
            "lock_row_rate": self.lock_row_rate,
            "expire_session_every": self.expire_session_every,
            "timeout_hold_seconds": self.timeout_hold_seconds,
            "latency": self.latency.name,
            "injected": dict(sorted(self.injected.items())),
            "fired": self.fired,
        }

    # --- decisions ---------------------------------------------------------------------------------

    def lock_fails(self) -> bool:
        """One record save: does it lose the row lock? (Called per record by dml.Org.)"""
        if self.lock_row_rate > 0 and self.rng.random() < self.lock_row_rate:
            self.injected["lock_row"] += 1
            return True
        return False

    def session_expires(self) -> bool:
        """One authenticated API call: is it the Nth, whose token the org now invalidates?"""
        if self.expire_session_every <= 0:
            return False
        self._authenticated_calls += 1
        if self._authenticated_calls % self.expire_session_every == 0:
            self.injected["session_expired"] += 1
            return True
        return False

    async def before_call(
        self, method: str, path: str, full_path: str, *, api: bool = True, body: bytes = b""
    ) -> Decision | None:
        """Try the rules on one call; None lets it through (after any injected latency).

        `path` is the API path after /services/data/vXX.X/, `full_path` the whole URL path, `body` the request's
        (for rules with `body`). Calls outside the data API (`api=False`: the OAuth token endpoint) see only
        rules with an absolute path.
        """
        for rule in self.rules:
            if not api and not rule.path.startswith("/"):
                continue
            if not rule.applies(method, path, full_path, body) or self.rng.random() >= rule.rate:
                continue
            if rule.count is not None:
                rule.count -= 1
            self.injected[rule.kind] += 1
            if rule.latency_ms:
                await asyncio.sleep(rule.latency_ms / 1000)
            if rule.kind == "latency":
                continue
            return self._decision(rule)
        return None

    def _decision(self, rule: FaultRule) -> Decision:
        if rule.kind in CONNECTION_FAULTS:
            hold = 0.0 if rule.kind != "timeout" else (rule.hold_seconds or self.timeout_hold_seconds)
            # A cut answer was computed first: the handler always runs.
            return Decision(drop=Drop(rule.kind, hold, rule.processed or rule.kind == "cut"))
        status, code, message = STATUS_FAULTS.get(rule.kind, (rule.status or 500, "UNKNOWN_EXCEPTION",
                                                              "Injected fault"))
        headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else {}
        entry: dict[str, Any] = {"message": rule.message or message, "errorCode": rule.error_code or code}
        if rule.kind == "lock":
            entry["fields"] = []
        reply = Reply(rule.status or status, [entry], headers=headers)
        return Decision(reply=reply, expire_session=rule.kind == "expire")

    async def after_call(self, method: str, template: str, request_bytes: int, reply: Reply) -> None:
        """The latency profile's delay for this call (nothing with the `off` profile)."""
        delay = self.latency.call_delay(method, template, request_bytes, reply.body)
        if delay > 0:
            await asyncio.sleep(delay)
