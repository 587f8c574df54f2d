"""Is the configured bus usable? What ``ferry doctor`` reports for ``FERRY_BUS_URL``, and what to fix.

``check_bus(url)`` connects (failing fast, not after nats-py's two minutes of reconnect attempts), asks JetStream
for the account (is JetStream on?), and looks for ferry's streams and consumers: all present, or none at all (a
fresh bus, which is fine: the first ``ferry worker`` creates them); some but not all is a failure. Each finding is
a ``BusCheck`` with the same fields as the doctor's ``Check``.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass

import nats
import nats.errors
import nats.js.api
import nats.js.errors

from ferry.bus.config import BUS_URL_ENV, bus_settings
from ferry.bus.jetstream import JetStreamSettings, _safe_url, consumer_name
from ferry.core.bus import BusConfigError

START_HINT = "start nats-server with JetStream: `nats-server -js -sd /var/lib/nats` (README, 'Scale out')"


@dataclass(frozen=True, slots=True)
class BusCheck:
    name: str
    ok: bool
    detail: str  # never carries the URL's credentials
    fix: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def check_configured_bus() -> list[BusCheck]:
    """``FERRY_BUS_URL`` checked; embedded mode (unset) is fine and says so."""
    try:
        settings = bus_settings()
    except BusConfigError as exc:
        return [BusCheck("bus", False, str(exc), f"fix {BUS_URL_ENV} / FERRY_BUS_* (docs/bus.md)")]
    if settings is None:
        return [BusCheck("bus", True, f"none ({BUS_URL_ENV} unset: embedded mode, work runs in-process)")]
    return check_bus(settings)


def check_bus(target: str | JetStreamSettings, timeout: float = 3.0) -> list[BusCheck]:
    """Reachable, JetStream enabled, ferry's streams and consumers present. Synchronous (doctor is)."""
    settings = target if isinstance(target, JetStreamSettings) else JetStreamSettings(url=target)
    return asyncio.run(_check(settings, timeout))


async def _said_in_the_check(_: Exception) -> None:
    """nats-py's default error callback logs each failed connect with a traceback; the check's line says it."""


async def _check(settings: JetStreamSettings, timeout: float) -> list[BusCheck]:
    where = _safe_url(settings.url)
    try:
        nc = await asyncio.wait_for(
            nats.connect(settings.url, connect_timeout=timeout, max_reconnect_attempts=1, allow_reconnect=False,
                         reconnect_time_wait=0.1, error_cb=_said_in_the_check),
            timeout * 2,
        )
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        return [BusCheck("bus", False, f"{where}: cannot connect ({type(exc).__name__})", START_HINT)]
    try:
        server = f"nats-server {nc.connected_server_version} at {where}"
        js = nc.jetstream(timeout=timeout)
        try:
            account = await js.account_info()
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError, nats.js.errors.Error) as exc:
            return [
                BusCheck("bus", True, server),
                BusCheck("bus jetstream", False, f"JetStream is not enabled ({type(exc).__name__})",
                         "restart nats-server with -js and a store dir (-sd DIR), or jetstream {} in its config"),
            ]
        found = [BusCheck("bus", True, server), BusCheck("bus jetstream", True, "enabled")]
        return found + await _check_layout(js, settings, account)
    finally:
        await nc.close()


async def _check_layout(
    js: nats.js.JetStreamContext, settings: JetStreamSettings, account: nats.js.api.AccountInfo
) -> list[BusCheck]:
    missing: list[str] = []
    streams = (settings.stream, settings.exhausted_stream)
    for stream in streams:
        try:
            await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            missing.append(f"stream {stream}")
    if len(missing) == len(streams):
        # A fresh bus: ferry creates its streams and consumers itself (every `ferry worker` at start, and a
        # distributed `ferry run`: JetStreamBus.setup), so none yet is a valid set-up, as long as the account may
        # hold them (a JetStream account can be limited to fewer streams).
        room = account.limits.max_streams
        if room is not None and room >= 0 and account.streams + len(streams) > room:
            return [BusCheck("bus streams", False, f"none yet, and this JetStream account may hold {room} streams "
                             f"({account.streams} in use); ferry needs {len(streams)}",
                             "raise the account's max_streams (nats-server config), or use another account")]
        return [BusCheck("bus streams", True, f"none yet (a fresh bus): the first `ferry worker` or distributed "
                         f"`ferry run` creates {settings.stream} with {settings.partitions} partition consumers")]
    if not missing:
        for p in range(settings.partitions):
            try:
                await js.consumer_info(settings.stream, consumer_name(p))
            except nats.js.errors.NotFoundError:
                missing.append(f"consumer {consumer_name(p)}")
    if missing:
        return [BusCheck("bus streams", False, "missing: " + ", ".join(missing[:5]) + ("..." if len(missing) > 5
                         else ""), "start a `ferry worker` (it creates them), or run JetStreamBus.setup()")]
    return [BusCheck("bus streams", True, f"{settings.stream} with {settings.partitions} partition consumers")]


def main() -> int:
    """``python -m ferry.bus.check``: the checks as lines; exit 6 (doctor's code) when one fails."""
    checks = check_configured_bus()
    for c in checks:
        print(f"{'ok ' if c.ok else 'FAIL'} {c.name}: {c.detail}" + (f"\n     fix: {c.fix}" if c.fix else ""))
    return 0 if all(c.ok for c in checks) else 6


if __name__ == "__main__":
    raise SystemExit(main())
