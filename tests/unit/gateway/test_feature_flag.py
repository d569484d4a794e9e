"""The `flag` policy: the gateway evaluates chassis.flags exactly as the services do (same
function, same file), answers 404 problem+json where the flag is off, sees file edits without
a restart, and refuses a config naming it while the flags file is bad."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from chassis import ConfigError
from chassis.flags import FlagStore
from gateway.app import create_app
from gateway.config import parse_config
from tests.support.tokens import TestIssuer
from tests.support.waiting import wait_until_async

from .conftest import BASE, FakeUpstreams, GatewayClient

FLAG = "catalog.v2_products"


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # a new inode: seen as a change even within one mtime tick


@pytest.fixture
def flags_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "flags.yaml"
    _write(path, f"flags: {{{FLAG}: {{enabled: true, percent: 50, allow: {{clients: [early]}}}}}}")
    monkeypatch.setenv("PORTICO_FLAGS_FILE", str(path))
    monkeypatch.setenv("PORTICO_FLAGS_RELOAD_INTERVAL", "0.01")
    return path


def _routes() -> list[dict[str, Any]]:
    routes = copy.deepcopy(BASE["routes"])
    routes[3]["policies"] = [{"use": "flag", "settings": {"name": FLAG}}]  # items.get
    return routes


async def test_the_gateway_answers_as_the_services_would(
    gateway: GatewayClient, issuer: TestIssuer, flags_file: Path
) -> None:
    client = await gateway(routes=_routes())
    store = FlagStore(flags_file)
    assert store.reload() == []
    ids = ["early", *(f"client-{i}" for i in range(40))]
    for cid in ids:
        resp = await client.get("/items/1", headers=issuer.auth(["items:read"], sub=cid))
        expected = store.is_enabled(FLAG, client=cid, user=cid)  # what catalog computes
        assert resp.status == (200 if expected else 404), cid
        if not expected:
            assert resp.content_type == "application/problem+json"
    assert store.is_enabled(FLAG, client="early")
    assert 0 < sum(store.is_enabled(FLAG, client=c) for c in ids) < len(ids)
    other = await client.get("/items", headers=issuer.auth(["items:read"], sub="client-0"))
    assert other.status == 200  # a route without the policy
    text = await (await client.get("/metrics")).text()
    assert "portico_flags_loaded 1.0" in text


async def test_an_edit_is_seen_and_a_bad_edit_keeps_the_flags(
    gateway: GatewayClient, issuer: TestIssuer, flags_file: Path
) -> None:
    client = await gateway(routes=_routes())
    late = issuer.auth(["items:read"], sub="late-client")

    async def status() -> int:
        return (await client.get("/items/1", headers=late)).status

    _write(
        flags_file,
        f"flags: {{{FLAG}: {{enabled: true, allow: {{clients: [nobody]}}, percent: 0}}}}",
    )

    async def off() -> bool:
        return await status() == 404

    await wait_until_async(off, 5, "the flag turned off for late-client")
    _write(flags_file, f"flags: {{{FLAG}: true}}")

    async def on() -> bool:
        return await status() == 200

    await wait_until_async(on, 5, "the flag turned on for everyone")
    _write(flags_file, "flags: {oops")

    async def refused() -> bool:
        assert await status() == 200  # an evaluation looks at the file; the old flags stay
        text = await (await client.get("/metrics")).text()
        return "portico_flags_reload_errors_total 1.0" in text

    await wait_until_async(refused, 5, "the bad file counted")


def test_a_bad_flags_file_refuses_the_config(flags_file: Path, upstreams: FakeUpstreams) -> None:
    _write(flags_file, f"flags: {{{FLAG}: {{percent: 300}}}}")
    config = parse_config({**copy.deepcopy(BASE), "routes": _routes()}, environ={})
    with pytest.raises(
        ConfigError, match=r"flags\.catalog\.v2_products\.percent: must be 0\.\.100"
    ):
        create_app(config, transport=upstreams.transport)


def test_settings_are_checked() -> None:
    routes = _routes()
    routes[3]["policies"] = [{"use": "flag", "settings": {"nme": FLAG}}]
    with pytest.raises(ConfigError) as refused:
        parse_config({**copy.deepcopy(BASE), "routes": routes}, environ={})
    assert "routes[3].policies[0].settings.name: Missing data" in str(refused.value)
    assert "routes[3].policies[0].settings.nme: Unknown field" in str(refused.value)
