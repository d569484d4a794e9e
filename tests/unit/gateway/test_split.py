"""Traffic split (gateway.pipeline.split): settings checked by key path, sides chosen by
weight, rule and consumer hash, rollback on a failing canary, its state across reloads, on
both servers (mock upstreams; the real processes are in tests/integration/test_gateway_split)."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient

from chassis import ConfigError
from gateway.__main__ import main
from gateway.admin import snapshot
from gateway.app import RELOADER, STATE, create_app
from gateway.config import parse_config
from gateway.pipeline import Exchange
from gateway.pipeline.split import BUCKETS, Split, bucket
from gateway.transport import MockResponse, OutboundRequest
from tests.support.front import FrontTestServer
from tests.support.tokens import TestIssuer

from .conftest import BASE, SVC, FakeUpstreams

CANARY = "http://canary.test"
ITEMS = 1  # routes[1] is items.list (GET /items, scope items:read)
PUBLIC = 0  # routes[0] is public (GET /public/*, no token)


def _raw(split: Any, route: int = ITEMS) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    raw["upstreams"]["canary"] = {"instances": [CANARY], "timeout": 5, "health": {"interval": 60}}
    raw["routes"][route]["split"] = split
    return raw


def _config(split: Any, route: int = ITEMS) -> Any:
    return parse_config(_raw(split, route), environ={})


# --- bad input, named by key path --------------------------------------------------------------


@pytest.mark.parametrize(
    ("split", "where"),
    [
        ({"weights": {"svc": 90, "canary": 20}}, "routes[1].split.weights: must add up to 100"),
        ({"weights": {"svc": 90, "nowhere": 10}}, "routes[1].split.weights: unknown upstream"),
        (
            {"weights": {"identity": 90, "canary": 10}},
            "routes[1].split.weights: must include the route's upstream 'svc'",
        ),
        ({"weights": {"svc": 100}}, "routes[1].split.weights: must name 2 to 8 upstreams"),
        ({"weights": {"svc": 110, "canary": -10}}, "routes[1].split.weights.svc: must be 0..100"),
        (
            {"weights": {"svc": 90, "canary": 10}, "rollback": {"error_rate": 1.5}},
            "routes[1].split.rollback.error_rate: must be in (0, 1]",
        ),
        (
            {"weights": {"svc": 90, "canary": 10}, "rollback": {"p99": 0}},
            "routes[1].split.rollback.p99: must be in (0, 600]",
        ),
        (
            {"weights": {"svc": 90, "canary": 10}, "rollback": {"window": -1, "p99": 1}},
            "routes[1].split.rollback.window: must be in (0, 3600]",
        ),
        (
            {"weights": {"svc": 90, "canary": 10}, "rollback": {"min_requests": 0, "p99": 1}},
            "routes[1].split.rollback.min_requests: ",
        ),
        (
            {"weights": {"svc": 90, "canary": 10}, "rollback": {"window": 10}},
            "routes[1].split.rollback: set error_rate, p99 or both",
        ),
        (
            {
                "weights": {"svc": 90, "canary": 10},
                "match": [{"header": "X-Canary", "value": "always", "upstream": "identity"}],
            },
            "routes[1].split.match[0].upstream: 'identity' is not one of the split's upstreams",
        ),
        (
            {
                "weights": {"svc": 90, "canary": 10},
                "match": [{"header": "X-Canary", "cookie": "c", "value": "1", "upstream": "svc"}],
            },
            "routes[1].split.match[0]: name exactly one of header or cookie",
        ),
        ({"weights": {"svc": 90, "canary": 10}, "surprise": 1}, "routes[1].split.surprise: "),
    ],
)
def test_bad_splits_are_refused_with_their_key_path(split: Any, where: str) -> None:
    with pytest.raises(ConfigError) as refused:
        _config(split)
    assert where in str(refused.value), str(refused.value)


def _check(tmp_path: Path, raw: Any, capsys: pytest.CaptureFixture[str]) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(SystemExit) as exited:
        main(["check", str(path)])
    assert exited.value.code == 1
    return capsys.readouterr().err


def test_gateway_check_names_each_bad_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _raw({"weights": {"svc": 90, "canary": 20}, "rollback": {"error_rate": 2}})
    raw["routes"][2]["split"] = {"weights": {"svc": 50, "canary": 40}}
    err = _check(tmp_path, raw, capsys)
    for expected in (
        "routes[1].split.weights: must add up to 100, not 110",
        "routes[1].split.rollback.error_rate: must be in (0, 1]",
        "routes[2].split.weights: must add up to 100, not 90",
    ):
        assert expected in err, err
    # upstream names are checked once every key is valid (like routes[].upstream)
    raw = _raw({"weights": {"svc": 50, "gone": 50}})
    raw["routes"][2]["split"] = {
        "weights": {"svc": 50, "canary": 50},
        "match": [{"cookie": "beta", "value": "1", "upstream": "identity"}],
    }
    err = _check(tmp_path, raw, capsys)
    for expected in (
        "routes[1].split.weights: unknown upstream 'gone'",
        "routes[2].split.match[0].upstream: 'identity' is not one of the split's upstreams",
    ):
        assert expected in err, err


# --- choosing a side -----------------------------------------------------------------------------


def test_the_bucket_is_stable_and_spread() -> None:
    assert bucket("", "sub:alice") == bucket("", "sub:alice")  # no per-process salt
    assert bucket("", "sub:alice") != bucket("release-2", "sub:alice")
    counts = Counter(bucket("", f"sub:user{i}") * 10 // BUCKETS for i in range(10_000))
    assert all(900 < n < 1100 for n in counts.values())  # ten deciles, evenly filled


def _bound_split(split: Any) -> Split:
    app = create_app(_config(split, route=PUBLIC))
    [step] = [
        p for p in app[STATE].state.pipeline.chains["public"].policies if isinstance(p, Split)
    ]
    return step


def test_many_consumers_land_on_the_weight_and_a_raise_keeps_the_canarys() -> None:
    """10,000 consumers (by a key header): the share is the weight within a point, and
    raising the canary's weight moves only stable consumers onto it."""
    sides: dict[int, list[str]] = {}
    for weight in (20, 50):
        step = _bound_split(
            {"weights": {"svc": 100 - weight, "canary": weight}, "key": {"header": "X-Visitor"}}
        )
        assert step.state is not None
        for i in range(10_000):
            ex = Exchange(
                "GET", "/public/x", "/public/x", [("X-Visitor", f"v{i}")], remote="10.0.0.1"
            )
            sides.setdefault(i, []).append(step._side(ex, step.state))
        share = sum(1 for s in sides.values() if s[-1] == "canary") / 100
        assert abs(share - weight) <= 1, (weight, share)
    assert all(s[1] == "canary" for s in sides.values() if s[0] == "canary")


def test_a_route_without_split_has_no_split_step() -> None:
    app = create_app(_config({"weights": {"svc": 90, "canary": 10}}))
    chains = app[STATE].state.pipeline.chains
    assert any(isinstance(p, Split) for p in chains["items.list"].policies)
    for name, chain in chains.items():
        if name != "items.list":
            assert not any(isinstance(p, Split) for p in chain.policies), name


@pytest.fixture(params=["front", "aiohttp"])
async def served(
    request: pytest.FixtureRequest, aiohttp_client: Any, upstreams: FakeUpstreams
) -> Any:
    upstreams.on(CANARY, "/items", lambda _r: MockResponse(json={"side": "canary"}))
    upstreams.on(SVC, "/items", lambda _r: MockResponse(json={"side": "stable"}))
    upstreams.on(CANARY, "/public/x", lambda _r: MockResponse(json={"side": "canary"}))
    upstreams.on(SVC, "/public/x", lambda _r: MockResponse(json={"side": "stable"}))

    async def make(config: Any) -> TestClient:
        app = create_app(config, transport=upstreams.transport)
        server = FrontTestServer(app) if request.param == "front" else app
        client: TestClient = await aiohttp_client(server)
        return client

    return make


async def _side(client: TestClient, path: str = "/items", **headers: str) -> str:
    resp = await client.get(path, headers=headers)
    assert resp.status == 200, await resp.text()
    return str((await resp.json())["side"])


async def test_each_consumer_stays_on_one_side_near_the_weight(
    served: Any, issuer: TestIssuer
) -> None:
    client = await served(_config({"weights": {"svc": 70, "canary": 30}}))
    sides: dict[str, set[str]] = {}
    for _round in range(3):
        for i in range(100):
            auth = issuer.auth(["items:read"], sub=f"user{i}")
            sides.setdefault(f"user{i}", set()).add(await _side(client, **auth))
    assert all(len(s) == 1 for s in sides.values())  # sticky
    on_canary = sum(1 for s in sides.values() if s == {"canary"})
    assert 20 <= on_canary <= 40, on_canary


async def test_anonymous_consumers_by_cookie_else_address(served: Any) -> None:
    split = {"weights": {"svc": 50, "canary": 50}, "key": {"cookie": "visitor"}}
    client = await served(_config(split, route=PUBLIC))
    seen = {await _side(client, "/public/x", Cookie=f"a=1; visitor=v{i}") for i in range(40)}
    assert seen == {"stable", "canary"}  # the cookie decides
    for i in range(10):  # and always the same way
        cookie = f"visitor=v{i}"
        assert len({await _side(client, "/public/x", Cookie=cookie) for _ in range(3)}) == 1
    # no cookie: the client address (one test client, one address), always one side
    assert len({await _side(client, "/public/x") for _ in range(5)}) == 1


async def test_a_header_or_cookie_rule_names_the_side(served: Any, issuer: TestIssuer) -> None:
    split = {
        "weights": {"svc": 100, "canary": 0},
        "match": [
            {"header": "X-Canary", "value": "always", "upstream": "canary"},
            {"cookie": "beta", "value": "yes", "upstream": "canary"},
        ],
    }
    client = await served(_config(split))
    auth = issuer.auth(["items:read"], sub="alice")
    assert await _side(client, **auth) == "stable"
    assert await _side(client, **auth, **{"X-Canary": "always"}) == "canary"
    assert await _side(client, **auth, Cookie="beta=yes") == "canary"
    assert await _side(client, **auth, **{"X-Canary": "sometimes"}) == "stable"


async def test_not_sticky_is_exact_shares(served: Any, issuer: TestIssuer) -> None:
    client = await served(_config({"weights": {"svc": 80, "canary": 20}, "sticky": False}))
    auth = issuer.auth(["items:read"], sub="alice")
    sides = Counter([await _side(client, **auth) for _ in range(50)])
    assert sides == {"stable": 40, "canary": 10}


# --- rollback ------------------------------------------------------------------------------------


ROLLBACK = {
    "weights": {"svc": 50, "canary": 50},
    "sticky": False,
    "rollback": {"window": 60, "min_requests": 5, "error_rate": 0.5},
}


def _failing_canary(upstreams: FakeUpstreams) -> None:
    def broken(_r: OutboundRequest) -> MockResponse:
        return MockResponse(status=500, json={"side": "canary"})

    upstreams.on(CANARY, "/items", broken)


async def test_a_failing_canary_is_rolled_back_logged_and_counted(
    served: Any,
    issuer: TestIssuer,
    upstreams: FakeUpstreams,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _failing_canary(upstreams)
    client = await served(_config(ROLLBACK))
    auth = issuer.auth(["items:read"], sub="alice")
    statuses = Counter()
    with caplog.at_level(logging.WARNING, logger="portico.gateway.split"):
        for _ in range(40):
            statuses[(await client.get("/items", headers=auth)).status] += 1
    assert statuses[500] == 5  # the fifth canary answer passed 50% errors over >= 5
    assert statuses[200] == 35  # everything after it went to the stable side
    [record] = [r for r in caplog.records if r.name == "portico.gateway.split"]
    assert record.getMessage() == "split rolled back to the stable upstream"
    assert (record.route, record.canary, record.reason) == ("items.list", "canary", "error_rate")  # type: ignore[attr-defined]
    metrics = await (await client.get("/metrics")).text()
    assert 'gateway_split_state{route="items.list"} 0.0' in metrics
    assert (
        'gateway_split_rollbacks_total{reason="error_rate",route="items.list",upstream="canary"}'
        " 1.0" in metrics
    )
    assert 'gateway_split_requests_total{route="items.list",upstream="svc"} 35.0' in metrics
    app = client.server.app  # the admin view shows the same (ADR 0034)
    shown = snapshot(app[STATE], app[RELOADER])["policy_stats"]["items.list"]["split"]
    assert shown["rolled_back"] is True and shown["rollbacks"] == {"canary:error_rate": 1}
    assert shown["requests"]["svc"] == 35


async def test_a_slow_canary_is_rolled_back_by_its_p99(
    served: Any, issuer: TestIssuer, upstreams: FakeUpstreams
) -> None:
    async def slow(_r: OutboundRequest) -> MockResponse:
        await asyncio.sleep(0.05)
        return MockResponse(json={"side": "canary"})

    upstreams.on(CANARY, "/items", slow)
    split = {**ROLLBACK, "rollback": {"min_requests": 4, "p99": 0.01}}
    client = await served(_config(split))
    auth = issuer.auth(["items:read"], sub="alice")
    sides = [await _side(client, **auth) for _ in range(20)]
    assert sides.count("canary") == 4 and sides[-12:] == ["stable"] * 12
    metrics = await (await client.get("/metrics")).text()
    assert 'reason="p99"' in metrics


async def test_the_rollback_holds_until_the_split_changes(
    served: Any, issuer: TestIssuer, upstreams: FakeUpstreams
) -> None:
    _failing_canary(upstreams)
    client = await served(_config(ROLLBACK))
    auth = issuer.auth(["items:read"], sub="alice")
    for _ in range(12):
        await client.get("/items", headers=auth)
    reloader = client.app[RELOADER]
    # a reload that leaves this split alone (another route changes) keeps it rolled back
    raw = _raw(ROLLBACK)
    raw["routes"][3]["timeout"] = 7
    assert await reloader.reload(parse_config(raw, environ={}))
    assert {await _side(client, **auth) for _ in range(10)} == {"stable"}
    # a changed split re-arms it: the healed canary takes its share again
    upstreams.on(CANARY, "/items", lambda _r: MockResponse(json={"side": "canary"}))
    rearmed = {**ROLLBACK, "weights": {"svc": 60, "canary": 40}}
    assert await reloader.reload(_config(rearmed))
    assert Counter([await _side(client, **auth) for _ in range(10)]) == {
        "stable": 6,
        "canary": 4,
    }
    metrics = await (await client.get("/metrics")).text()
    assert 'gateway_split_state{route="items.list"} 1.0' in metrics


async def test_a_bad_split_in_a_reloaded_file_keeps_the_running_one(
    aiohttp_client: Any, issuer: TestIssuer, upstreams: FakeUpstreams, tmp_path: Path
) -> None:
    upstreams.on(CANARY, "/items", lambda _r: MockResponse(json={"side": "canary"}))
    path = tmp_path / "gateway.yaml"
    good = _raw({"weights": {"svc": 0, "canary": 100}})
    path.write_text(yaml.safe_dump(good), encoding="utf-8")
    app = create_app(
        parse_config(good, environ={}), transport=upstreams.transport, config_path=path
    )
    client = await aiohttp_client(app)
    auth = issuer.auth(["items:read"], sub="alice")
    assert await _side(client, **auth) == "canary"
    for split in (
        {"weights": {"svc": 10, "canary": 10}},
        {"weights": {"svc": 50, "elsewhere": 50}},
        {"weights": {"svc": 50, "canary": 50}, "rollback": {"error_rate": 0}},
    ):
        path.write_text(yaml.safe_dump(_raw(split)), encoding="utf-8")
        assert not await app[RELOADER].reload()
        assert await _side(client, **auth) == "canary"
    assert app[RELOADER].rejected == 3


def test_settings_compare_by_value() -> None:
    one = _config({"weights": {"svc": 90, "canary": 10}}).routes[ITEMS].policies[-1]
    two = _config({"weights": {"svc": 90, "canary": 10}}).routes[ITEMS].policies[-1]
    other = _config({"weights": {"svc": 80, "canary": 20}}).routes[ITEMS].policies[-1]
    assert one == two and one != other  # what decides whether a reload re-arms a rollback
