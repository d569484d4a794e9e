"""The deprecation policy: its settings refused by key path (a deprecation after the sunset,
bad URLs), a past sunset refused on a change (check, reload) but served as 410 Gone by a gateway
started with it, the Deprecation / Sunset / Link fields on both servers, use counted per
consumer with a bounded label set, v1 operations marked deprecated in /openapi.json, and routes
without it running none of it."""

from __future__ import annotations

import copy
import datetime as dt
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from chassis import ConfigError
from gateway.__main__ import main
from gateway.app import RELOADER, STATE
from gateway.config import parse_config, past_sunsets
from gateway.pipeline.deprecation import MAX_CONSUMERS, Deprecation, Usage
from gateway.transport import MockResponse
from tests.support.fastpath import FastPath
from tests.support.tokens import TestIssuer

from .conftest import BASE, SVC, FakeUpstreams, GatewayClient
from .test_openapi import SVC_SPEC

SUNSET = "2099-06-30"
SETTINGS: dict[str, Any] = {
    "deprecated_at": "2026-12-01",
    "sunset": SUNSET,
    "successor": "/v2/items/{id}",
    "link": "https://portico.dev/docs/migrations/v1-to-v2",
}


def _raw(settings: Any = SETTINGS, route: int = 3) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    raw["routes"][route]["deprecation"] = copy.deepcopy(settings)
    return raw


def _errors(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as refused:
        parse_config(raw, environ={})
    return str(refused.value)


# --- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"deprecated_at": "2099-07-01"}, "deprecation.deprecated_at: must not be after sunset"),
        ({"deprecated_at": "yesterday"}, "routes[3].deprecation.deprecated_at: must be a date"),
        ({"sunset": "2099-06-30T12:00:00"}, "routes[3].deprecation.sunset: needs a time zone"),
        ({"successor": "v2/items"}, "routes[3].deprecation.successor: must be an absolute path"),
        ({"successor": "/v2/<x>"}, "routes[3].deprecation.successor: must be an absolute path"),
        ({"successor": "ftp://x.test/v2"}, "routes[3].deprecation.successor: must be an absolute"),
        ({"successor": "//evil.test/v2"}, "routes[3].deprecation.successor: must be an absolute"),
        ({"link": "https://x.test/a b"}, "routes[3].deprecation.link: must be an absolute path"),
        ({"successor": "/v2/items/{nope}"}, "deprecation.successor: uses parameters not in path"),
        ({"colour": "red"}, "routes[3].deprecation.colour: Unknown field"),
    ],
)  # fmt: skip
def test_bad_settings_are_named_by_key_path(change: dict[str, Any], expected: str) -> None:
    assert expected in _errors(_raw({**SETTINGS, **change}))


def test_deprecated_at_is_required() -> None:
    assert "routes[3].deprecation.deprecated_at: Missing data" in _errors(_raw({"sunset": SUNSET}))


def test_check_names_each_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _raw({**SETTINGS, "successor": "not a url"})
    raw["routes"][1]["deprecation"] = {**SETTINGS, "deprecated_at": "2099-12-31", "successor": None}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(SystemExit) as exited:
        main(["check", str(path)])
    err = capsys.readouterr().err
    assert exited.value.code == 1
    assert "routes[3].deprecation.successor: must be an absolute path" in err
    assert "routes[1].deprecation.deprecated_at: must not be after sunset" in err
    # a valid config whose sunset has passed: named too (once the file otherwise loads)
    past = {**SETTINGS, "sunset": "2001-01-01", "deprecated_at": "2000-01-01"}
    path.write_text(yaml.safe_dump(_raw(past)), encoding="utf-8")
    with pytest.raises(SystemExit) as exited:
        main(["check", str(path)])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "routes[3].deprecation.sunset: 2001-01-01T00:00:00+00:00 is in the past" in err


async def test_past_its_sunset_the_route_is_gone_and_the_others_serve(
    gateway: GatewayClient, issuer: TestIssuer
) -> None:
    """A gateway (re)started with a sunset that has passed serves: that route answers 410 with
    its successor, every other route as before - a restart after the date is no outage."""
    raw = _raw({**SETTINGS, "sunset": "2001-01-01", "deprecated_at": "2000-01-01"})
    config = parse_config(raw, environ={})
    assert past_sunsets(config) == [
        "routes[3].deprecation.sunset: 2001-01-01T00:00:00+00:00 is in the past"
    ]
    assert past_sunsets(config, now=dt.datetime(2000, 6, 1, tzinfo=dt.UTC)) == []
    client = await gateway(routes=raw["routes"])
    gone = await client.get("/items/42", headers=issuer.auth(["items:read"]))
    assert gone.status == 410
    assert gone.content_type == "application/problem+json"
    assert "/v2/items/{id}" in (await gone.json())["detail"]
    got = _fields(gone)
    assert got["sunset"] == "Mon, 01 Jan 2001 00:00:00 GMT"
    assert got["link"].startswith('</v2/items/42>; rel="successor-version"')
    assert (await client.get("/items", headers=issuer.auth(["items:read"]))).status == 200


def test_yaml_dates_and_datetimes_load() -> None:
    raw = _raw({**SETTINGS, "sunset": dt.date(2099, 6, 30)})
    raw["routes"][1]["deprecation"] = {
        "deprecated_at": dt.datetime(2026, 12, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    }
    config = parse_config(raw, environ={})
    policy = Deprecation(config.routes[1].policies[-1].settings)
    assert policy.fixed == [("Deprecation", "@1796121000")]  # 10:30 UTC
    assert policy.link is None


# --- on the wire ---------------------------------------------------------------------------


def _fields(resp: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in resp.headers.items()}


async def test_fields_on_the_aiohttp_server_and_counted_per_consumer(
    gateway: GatewayClient, issuer: TestIssuer
) -> None:
    client = await gateway(routes=_raw()["routes"])
    resp = await client.get("/items/42", headers=issuer.auth(["items:read"], sub="shop-web"))
    assert resp.status == 200
    got = _fields(resp)
    assert got["deprecation"] == "@1796083200"  # 2026-12-01T00:00:00Z, RFC 9745
    assert got["sunset"] == "Tue, 30 Jun 2099 00:00:00 GMT"  # RFC 8594: an HTTP-date
    assert parsedate_to_datetime(got["sunset"]) == dt.datetime(2099, 6, 30, tzinfo=dt.UTC)
    assert got["link"] == (
        '</v2/items/42>; rel="successor-version", '
        '<https://portico.dev/docs/migrations/v1-to-v2>; rel="deprecation"'
    )
    unauth = await client.get("/items/42")  # a problem answer carries them too
    assert unauth.status == 401 and "deprecation" in _fields(unauth)
    plain = await client.get("/items", headers=issuer.auth(["items:read"]))
    assert "deprecation" not in _fields(plain) and "sunset" not in _fields(plain)

    text = await (await client.get("/metrics")).text()
    assert 'gateway_deprecated_requests_total{consumer="shop-web",route="items.get"} 1.0' in text
    assert 'gateway_deprecated_requests_total{consumer="anonymous",route="items.get"} 1.0' in text
    assert 'deprecated_requests_total{consumer="test-client",route="items.list"}' not in text


async def test_a_path_parameter_cannot_inject_into_link(
    gateway: GatewayClient, issuer: TestIssuer
) -> None:
    client = await gateway(routes=_raw()["routes"])
    resp = await client.get("/items/a%3E%3Bx", headers=issuer.auth(["items:read"]))
    link = _fields(resp)["link"]
    assert link.startswith("</v2/items/a%3E%3Bx>; rel=")


async def test_fields_on_the_front_servers_fast_path() -> None:
    raw = _raw(route=0)  # the public prefix route: no token
    raw["routes"][0]["deprecation"]["successor"] = "https://api.portico.dev/v2/"
    config = parse_config(raw, environ={})
    get = b"GET /public/x HTTP/1.1\r\nHost: gw\r\n\r\n"
    async with FastPath(config, "svc", SVC) as fast:
        status, headers, _ = await fast.request(get)
        assert fast.inline  # one more response-head step; the chain stays inline
    assert status == 200
    assert headers["deprecation"] == "@1796083200"
    assert headers["link"].startswith('<https://api.portico.dev/v2/>; rel="successor-version"')


def test_consumer_labels_are_capped() -> None:
    usage = Usage(max_consumers=3)
    for i in range(10):
        usage.count("r", f"client-{i}")
    usage.count("r", "client-0")  # a known one keeps its own label
    usage.count("r", None)
    assert usage.counts == {
        ("r", "client-0"): 2,
        ("r", "client-1"): 1,
        ("r", "client-2"): 1,
        ("r", "other"): 7,
        ("r", "anonymous"): 1,
    }
    assert MAX_CONSUMERS == 100


async def test_routes_without_it_have_no_deprecation_step(gateway: GatewayClient) -> None:
    client = await gateway(routes=_raw()["routes"])
    chains = client.app[STATE].state.pipeline.chains
    assert any(isinstance(p, Deprecation) for p in chains["items.get"].policies)
    for name in ("public", "items.list", "items.create", "slow", "upload", "renamed"):
        assert not any(isinstance(p, Deprecation) for p in chains[name].policies)


# --- /openapi.json -------------------------------------------------------------------------


async def test_openapi_marks_the_deprecated_operation(
    gateway: GatewayClient, upstreams: FakeUpstreams
) -> None:
    upstreams.on(SVC, "/openapi.json", lambda _r: MockResponse(json=copy.deepcopy(SVC_SPEC)))
    client = await gateway(routes=_raw()["routes"])
    doc = await (await client.get("/openapi.json")).json()
    old = doc["paths"]["/items/{item_id}"]["get"]
    assert old["deprecated"] is True
    assert "2099-06-30" in old["description"] and "/v2/items/{id}" in old["description"]
    assert {"Deprecation", "Sunset", "Link"} <= set(old["responses"]["200"]["headers"])
    assert "deprecated" not in doc["paths"]["/items"]["get"]
    assert SVC_SPEC["paths"]["/items/{item_id}"]["get"].get("deprecated") is None  # a copy


# --- reload --------------------------------------------------------------------------------


async def test_a_reload_naming_a_past_sunset_keeps_the_old_config(
    aiohttp_client: Any, upstreams: FakeUpstreams, issuer: TestIssuer, tmp_path: Path
) -> None:
    from gateway.app import create_app
    from gateway.config import load_config

    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(_raw()), encoding="utf-8")
    app = create_app(
        load_config(path, environ={}),
        transport=upstreams.transport,
        config_path=path,
        reload_interval=3600,
    )
    client = await aiohttp_client(app)
    past = {**SETTINGS, "sunset": "2001-01-01", "deprecated_at": "2000-01-01"}
    path.write_text(yaml.safe_dump(_raw(past)), encoding="utf-8")
    assert not await app[RELOADER].reload()
    assert app[STATE].state.generation == 0
    resp = await client.get("/items/1", headers=issuer.auth(["items:read"]))
    assert _fields(resp)["sunset"] == "Tue, 30 Jun 2099 00:00:00 GMT"
    later = {**SETTINGS, "sunset": "2099-12-31"}
    path.write_text(yaml.safe_dump(_raw(later)), encoding="utf-8")
    assert await app[RELOADER].reload()
    resp = await client.get("/items/1", headers=issuer.auth(["items:read"]))
    assert _fields(resp)["sunset"] == "Thu, 31 Dec 2099 00:00:00 GMT"
    text = await (await client.get("/metrics")).text()  # the counts survive the reload
    assert 'consumer="test-client",route="items.get"} 2.0' in text
