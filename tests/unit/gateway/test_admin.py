"""The read-only admin view (`gateway.admin`, issue 20 must 8): bearer-protected, read-only,
and showing the state that serves now - config version, chains, instances, limits, policy
statistics - which changes with a reload and with an instance's health."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from chassis import ConfigError, from_env
from gateway.admin import ADMIN_PATH, AdminSettings, admin_app, render_status
from gateway.app import RELOADER, STATE, create_app

from .conftest import BASE, FakeUpstreams, make_config

TOKEN = "admin-secret-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _config(**changes: Any) -> Any:
    raw = copy.deepcopy(BASE)
    raw["rate_limits"] = {"policies": {"api": {"limit": 60, "period": 60, "burst": 10}}}
    raw["routes"][1]["rate_limit"] = "api"
    raw["routes"][1]["cache"] = {"ttl": 30}
    raw.update(changes)
    return make_config(**{k: raw[k] for k in raw})


@pytest.fixture
async def admin(aiohttp_client: Any, upstreams: FakeUpstreams) -> tuple[TestClient, Any]:
    gateway_app = create_app(_config(), transport=upstreams.transport)
    gateway = await aiohttp_client(gateway_app)  # runs the gateway's start-up
    app = admin_app(gateway_app[STATE], gateway_app[RELOADER], TOKEN)
    return await aiohttp_client(app), gateway


async def test_the_view_needs_its_token_and_changes_nothing(admin: tuple[TestClient, Any]) -> None:
    client, _ = admin
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        resp = await client.get(ADMIN_PATH, headers=headers)
        assert resp.status == 401
        assert resp.content_type == "application/problem+json"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        resp = await client.request(method, ADMIN_PATH, headers=AUTH, data=b"{}")
        assert resp.status == 405 and resp.content_type == "application/problem+json"
    resp = await client.get("/admin/nope", headers=AUTH)
    assert resp.status == 404 and resp.content_type == "application/problem+json"


async def test_the_view_shows_chains_instances_limits_and_cache(
    admin: tuple[TestClient, Any], upstreams: FakeUpstreams
) -> None:
    client, gateway = admin
    doc = await (await client.get(ADMIN_PATH, headers=AUTH)).json()
    assert len(doc["config"]["version"]) == 16 and doc["config"]["reloads"] == 0
    routes = {r["name"]: r for r in doc["routes"]}
    assert routes["items.list"]["rate_limit"] == "api"
    chain = routes["items.list"]["chain"]
    assert chain.index("auth") < chain.index("rate_limit") < chain.index("cache")
    assert chain[-1] == "forward"
    assert "cache" not in routes["public"]["chain"]
    svc = doc["upstreams"]["svc"]["instances"]
    assert svc == [
        {
            "origin": "http://svc.test",
            "weight": 1,
            "healthy": True,
            "ejected": False,
            "breaker": None,
            "in_flight": 0,
        }
    ]
    assert doc["rate_limits"]["backend"] == "local"
    assert doc["rate_limits"]["policies"]["api"]["limit"] == 60
    assert doc["policy_stats"]["items.list"]["cache"]["entries"] == 0

    token = upstreams.issuer.token(["items:read"])
    assert (await gateway.get("/items", headers={"Authorization": f"Bearer {token}"})).status == 200
    doc = await (await client.get(ADMIN_PATH, headers=AUTH)).json()
    assert doc["policy_stats"]["items.list"]["cache"]["entries"] == 1

    gateway.app[STATE].state.upstreams["svc"].instances[0].healthy = False  # a failed probe
    doc = await (await client.get(ADMIN_PATH, headers=AUTH)).json()
    assert doc["upstreams"]["svc"]["instances"][0]["healthy"] is False
    text = render_status(doc)
    assert "http://svc.test" in text and "OUT" in text and "items.list" in text


async def test_a_reload_shows_a_new_version(admin: tuple[TestClient, Any]) -> None:
    client, gateway = admin
    before = await (await client.get(ADMIN_PATH, headers=AUTH)).json()
    changed = copy.deepcopy(BASE)
    changed["routes"] = changed["routes"][:2]
    assert await gateway.app[RELOADER].reload(make_config(**changed))
    after = await (await client.get(ADMIN_PATH, headers=AUTH)).json()
    assert after["config"]["version"] != before["config"]["version"]
    assert after["config"]["reloads"] == 1
    assert [r["name"] for r in after["routes"]] == ["public", "items.list"]


def test_settings_default_to_loopback_and_off_without_a_token() -> None:
    settings = from_env(AdminSettings, "GATEWAY_", environ={})
    assert (settings.admin_host, settings.admin_port, settings.enabled) == (
        "127.0.0.1",
        8081,
        False,
    )
    with pytest.raises(ConfigError, match="GATEWAY_ADMIN_PORT"):
        from_env(AdminSettings, "GATEWAY_", environ={"GATEWAY_ADMIN_PORT": "70000"})
