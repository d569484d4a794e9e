"""The Portico API gateway: auth -> route -> upstream pool -> proxy, on aiohttp and uvloop."""

from .app import create_app
from .config import GatewayConfig, load_config, parse_config

__all__ = ["GatewayConfig", "create_app", "load_config", "parse_config"]
