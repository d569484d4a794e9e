"""The front server's fast path with test transports: no sockets between client, gateway and
upstream (the technique of `tests.bench.inproc`, for tests).

`FastPath(config)` builds the gateway, starts its front server, and connects a fake client
connection to it and a fake kept-alive connection to the upstream's pool. `request(raw)`
feeds a request's bytes into the front server's protocol, answers the upstream request (if
one is written) with `upstream_answer`, and returns the client's answer. Because the chain
answers from the upstream connection's callback, a request that never leaves the inline
runner is answered without any loop turn: `inline` tells whether it was.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway import front as front_module
from gateway import http1
from gateway.app import STATE, TRANSPORT, create_app
from gateway.config import GatewayConfig
from gateway.transport import OutboundRequest
from tests.bench.inproc import DirectWrites, FakeTransport

__all__ = ["OK", "FastPath", "parse_answer"]

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def parse_answer(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


class FastPath:
    def __init__(self, config: GatewayConfig, upstream: str, origin: str) -> None:
        self.app = create_app(config)
        self.upstream_name = upstream
        self.origin = origin
        self.upstream_requests: list[bytes] = []
        self.inline = False

    async def __aenter__(self) -> FastPath:
        app = self.app
        self.server = front_module.FrontServer(app, app[STATE])
        await self.server.start("127.0.0.1", 0)
        transport = app[TRANSPORT]
        assert isinstance(transport, http1.Http1Transport)
        probe = OutboundRequest(self.upstream_name, self.origin, "GET", "/", {}, None, 5.0)
        pool = transport._pool(probe)
        pool.writes = DirectWrites()  # type: ignore[assignment]
        self.server.writes = DirectWrites()  # type: ignore[assignment]
        self.pool = pool
        self.upstream = self._connect_upstream()
        self.client = front_module._Connection(self.server)
        self.client_transport = FakeTransport()
        self.client.connection_made(self.client_transport)  # type: ignore[arg-type]
        return self

    def _connect_upstream(self) -> Any:
        upstream = http1._Connection(self.pool)
        self.upstream_transport = FakeTransport()
        upstream.connection_made(self.upstream_transport)  # type: ignore[arg-type]
        self.pool.count += 1
        self.pool.connections.add(upstream)
        self.pool.release(upstream)  # one idle kept-alive connection
        return upstream

    async def __aexit__(self, *_exc: object) -> None:
        self.client.connection_lost(None)
        await self.server.close()

    async def request(
        self, raw: bytes, upstream_answer: bytes = OK
    ) -> tuple[int, dict[str, str], bytes]:
        out = self.client_transport.out
        out.clear()
        self.upstream_transport.out.clear()
        self.client.data_received(raw)
        # written upstream from within data_received: the chain never left the inline runner
        self.inline = bool(self.upstream_transport.out)
        for _ in range(50):
            if self.upstream_transport.out:
                self.upstream_requests.append(b"".join(self.upstream_transport.out))
                self.upstream_transport.out.clear()
                self.upstream.data_received(upstream_answer)
            if not self.client.busy:
                break
            await asyncio.sleep(0)
        assert not self.client.busy, "the request was not answered"
        if not self.upstream.transport or self.upstream not in self.pool.connections:
            self.upstream = self._connect_upstream()
        return parse_answer(b"".join(out))
