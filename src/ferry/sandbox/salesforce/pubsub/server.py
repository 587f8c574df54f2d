"""The Pub/Sub API's gRPC server: TLS with the sandbox's CA, on its own loopback port.

It runs on the event loop of the sandbox's HTTPS server (started and stopped with the app), so the
change event log is only ever touched from one thread.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from ferry.sandbox.salesforce.pubsub.service import PubSubService
from ferry.sandbox.serve import LOOPBACK, bind_loopback
from ferry.sandbox.tls import ensure_tls


def free_port() -> int:
    """A loopback port free now, so it can be announced before the server binds it."""
    sock = bind_loopback(0)
    try:
        return int(sock.getsockname()[1])
    finally:
        sock.close()


class PubSubServer:
    def __init__(self, service: PubSubService, state_dir: Path, port: int = 0) -> None:
        self.service = service
        self.state_dir = state_dir
        self.port = port or free_port()
        self._server: grpc.aio.Server | None = None

    @property
    def endpoint(self) -> str:
        """host:port, as clients take it (Salesforce's is api.pubsub.salesforce.com:7443)."""
        return f"{LOOPBACK}:{self.port}"

    async def start(self) -> None:
        tls = ensure_tls(self.state_dir)
        credentials = grpc.ssl_server_credentials([(tls.key_file.read_bytes(), tls.cert_file.read_bytes())])
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((self.service.handler(),))
        server.add_secure_port(self.endpoint, credentials)
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=0.5)
            self._server = None
