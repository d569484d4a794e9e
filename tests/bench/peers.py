"""The packaged Python reverse proxies, pointed at the benchmark upstream (BENCH_UPSTREAM).

`uvicorn --factory tests.bench.peers:fastapi_proxy_app` runs fastapi-proxy-lib (httpx);
`proxy --plugins tests.bench.peers.BenchReverseProxy --enable-reverse-proxy --threaded` runs
proxy.py's reverse-proxy plugin. Only `make bench` imports this (requirements-bench.lock).
"""

from __future__ import annotations

import os
from typing import Any

from proxy.http.server import ReverseProxyBasePlugin


def fastapi_proxy_app() -> Any:
    from fastapi_proxy_lib.fastapi.app import reverse_http_app

    return reverse_http_app(base_url=os.environ["BENCH_UPSTREAM"].rstrip("/") + "/")


class BenchReverseProxy(ReverseProxyBasePlugin):
    def routes(self) -> list[Any]:
        upstream = os.environ["BENCH_UPSTREAM"].rstrip("/")
        return [(r"/bench$", [f"{upstream}/bench".encode()])]
