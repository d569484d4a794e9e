"""The Portico API gateway: auth -> route -> upstream pool -> proxy, on aiohttp and uvloop."""

from . import _speedups

_speedups.install()  # before anything imports gateway.front or gateway.http1

from .app import create_app  # noqa: E402
from .config import GatewayConfig, load_config, parse_config  # noqa: E402

__all__ = ["GatewayConfig", "create_app", "load_config", "parse_config"]
