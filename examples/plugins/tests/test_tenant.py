"""The tenant policy, as its author would test it: loaded by dotted path from a gateway.yaml,
settings checked by `python -m gateway check`, and a request through the gateway.

Run: `.venv/bin/python -m pytest examples/plugins/tests -q`
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway.app import create_app
from gateway.config import check_config, parse_config
from gateway.transport import MockResponse, MockTransport, OutboundRequest

HERE = Path(__file__).resolve().parent.parent
CONFIG = HERE / "gateway.yaml"


def test_the_example_config_is_valid() -> None:
    assert check_config(CONFIG, environ={}) == []


def test_bad_settings_are_named_by_key_path(tmp_path: Path) -> None:
    raw = yaml.safe_load(CONFIG.read_text())
    raw["routes"][0]["policies"][0]["settings"] = {"allowed": [], "colour": "red"}
    bad = tmp_path / "gateway.yaml"
    bad.write_text(yaml.safe_dump(raw))
    errors = check_config(bad, environ={})
    assert "routes[0].policies[0].settings.allowed: must list at least one tenant" in errors
    assert "routes[0].policies[0].settings.colour: Unknown field" in errors


async def test_requests_through_the_gateway(aiohttp_client: Any) -> None:
    seen: list[OutboundRequest] = []

    async def upstream(request: OutboundRequest) -> MockResponse:
        seen.append(request)
        return MockResponse(json={"ok": True})

    config = parse_config(yaml.safe_load(CONFIG.read_text()), environ={})
    client = await aiohttp_client(create_app(config, transport=MockTransport(upstream)))
    missing = await client.get("/api/v1/products")
    assert missing.status == 400
    assert missing.headers["Content-Type"] == "application/problem+json"
    refused = await client.get("/api/v1/products", headers={"X-Tenant": "initech"})
    assert refused.status == 403
    assert seen == []
    ok = await client.get("/api/v1/products", headers={"X-Tenant": "acme"})
    assert ok.status == 200 and ok.headers["X-Tenant"] == "acme"
    assert len(seen) == 1
