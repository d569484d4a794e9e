"""`python -m gateway`: load and check the config, then serve on uvloop.

GATEWAY_CONFIG names the YAML file (default: the packaged gateway.yaml); GATEWAY_HOST and
GATEWAY_PORT override `server.host` / `server.port`; GATEWAY_TRANSPORT picks the upstream
client (`http1`, the default, or `aiohttp`). A bad config stops start-up with a
message naming every bad key.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass, field

import uvloop
from aiohttp import web

from chassis import ConfigError, configure_logging, from_env

from .app import create_app
from .config import load_config

log = logging.getLogger("portico.gateway")


def _port(value: int | None) -> str | None:
    return None if value is None or 0 <= value <= 65535 else "must be 0..65535"


@dataclass(frozen=True)
class GatewaySettings:
    config: str | None = None
    host: str | None = None
    port: int | None = field(default=None, metadata={"check": _port})


def main() -> None:
    configure_logging("gateway")
    try:
        settings = from_env(GatewaySettings, "GATEWAY_")
        config = load_config(settings.config)
        app = create_app(config)  # reads GATEWAY_TRANSPORT
    except ConfigError as exc:
        log.error("gateway not started: %s", exc)
        sys.exit(2)
    host = settings.host or config.server.host
    port = config.server.port if settings.port is None else settings.port
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    log.info("gateway listening", extra={"host": host, "port": port})
    web.run_app(app, host=host, port=port, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
