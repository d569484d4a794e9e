"""Hot reload covers the whole pipeline: aggregate paths added, CORS turned on and off, custom
policies changed - without a restart, on both servers; a reload whose policies cannot be
built keeps the old chains."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import RELOADER, STATE, create_app
from gateway.config import parse_config
from gateway.pipeline import Exchange, Policy, Verdict
from tests.support.front import FrontTestServer

from .conftest import BASE, FakeUpstreams

HERE = "tests.unit.gateway.test_reload_pipeline"
ORIGIN = "https://shop.example"
AGGREGATE = {
    "name": "both",
    "path": "/both/{id}",
    "auth": {"required": False},
    "parts": [{"name": "one", "path": "/public/one/{id}"}, {"name": "two", "path": "/public/two"}],
}


class Stamp(Policy):
    def on_response_head(self, ex: Exchange) -> None:
        ex.add_response_header("X-Stamp", "on")


class Broken(Policy):
    def __init__(self, settings: Any = None, context: Any = None) -> None:
        raise RuntimeError("cannot start")

    def on_request(self, ex: Exchange) -> Verdict:
        return None


def _config(**changes: Any) -> Any:
    raw = copy.deepcopy(BASE)
    for key, value in changes.items():
        if key == "route_policies":
            raw["routes"][0]["policies"] = value
        elif key == "public_cors":
            raw["routes"][0]["cors"] = value
        else:
            raw[key] = value
    return parse_config(raw, environ={})


@pytest.fixture(params=["front", "aiohttp"])
async def served(
    request: pytest.FixtureRequest, aiohttp_client: Any, upstreams: FakeUpstreams
) -> Any:
    async def make(config: Any) -> TestClient:
        app = create_app(config, transport=upstreams.transport)
        server = FrontTestServer(app) if request.param == "front" else app
        client: TestClient = await aiohttp_client(server)
        return client

    return make


async def test_a_reload_adds_an_aggregate_path(served: Any) -> None:
    client = await served(_config())
    assert (await client.get("/both/7")).status == 404
    assert await client.app[RELOADER].reload(_config(aggregates=[AGGREGATE]))
    answer = await client.get("/both/7")
    assert answer.status == 200
    doc = await answer.json()
    assert doc["one"]["target"] == "/public/one/7" and doc["errors"] == []
    assert await client.app[RELOADER].reload(_config())  # and takes it away again
    assert (await client.get("/both/7")).status == 404


async def test_a_reload_turns_cors_on_and_off(served: Any) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
    client = await served(_config())
    before = await client.options("/public/x", headers=preflight)
    assert "Access-Control-Allow-Origin" not in before.headers  # forwarded: no policy
    cors = {"web": {"allow_origins": [ORIGIN]}}
    assert await client.app[RELOADER].reload(_config(cors=cors, public_cors="web"))
    on = await client.options("/public/x", headers=preflight)
    assert on.status == 204 and on.headers["Access-Control-Allow-Origin"] == ORIGIN
    actual = await client.get("/public/x", headers={"Origin": ORIGIN})
    assert actual.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert await client.app[RELOADER].reload(_config())
    off = await client.get("/public/x", headers={"Origin": ORIGIN})
    assert off.status == 200 and "Access-Control-Allow-Origin" not in off.headers


async def test_a_reload_whose_policy_cannot_be_built_keeps_the_old_chain(served: Any) -> None:
    client = await served(_config(route_policies=[f"{HERE}:Stamp"]))
    state = client.app[STATE].state
    assert (await client.get("/public/x")).headers["X-Stamp"] == "on"
    reloader = client.app[RELOADER]
    assert not await reloader.reload(_config(route_policies=[f"{HERE}:Broken"]))
    assert client.app[STATE].state is state and reloader.rejected == 1
    assert (await client.get("/public/x")).headers["X-Stamp"] == "on"
    assert await reloader.reload(_config())  # a good one replaces it
    assert "X-Stamp" not in (await client.get("/public/x")).headers
