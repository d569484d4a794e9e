"""Streaming routes (gateway.pipeline.stream, ADR 0035): settings checked by key path, the
query-token step, the registry of streaming paths the front server hands to aiohttp, and a
plain route that stays on the fast path. Relaying itself, with real clients and a real
notifications service, is in tests/integration/test_notification_streams.py."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from chassis import ConfigError, Problem
from chassis.drain import Drain
from gateway.__main__ import main
from gateway.app import RELOADER, create_app
from gateway.config import parse_config
from gateway.pipeline import Exchange
from gateway.pipeline.stream import Stream, Streams, StreamToken, streams_of
from tests.support.front import FrontTestServer
from tests.support.waiting import wait_until_async

from .conftest import BASE, FakeUpstreams

ITEMS = 1  # routes[1] is items.list (GET /items)


def _raw(stream: Any, route: int = ITEMS) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    raw["routes"][route]["stream"] = stream
    return raw


def _policies(config: Any, name: str) -> list[Any]:
    route = next(r for r in config.routes if r.name == name)
    return [ref.cls for ref in route.policies]


def test_a_stream_key_adds_the_stream_step_and_the_token_step_only_when_asked() -> None:
    sse = parse_config(_raw({"kind": "sse"}), environ={})
    assert _policies(sse, "items.list") == [Stream]
    socket = parse_config(_raw({"kind": "websocket", "query_token": True}), environ={})
    assert _policies(socket, "items.list") == [Stream, StreamToken]
    assert _policies(socket, "items.get") == []  # other routes: nothing


@pytest.mark.parametrize(
    ("stream", "route", "where"),
    [
        ({}, ITEMS, "routes[1].stream.kind: Missing data for required field"),
        ({"kind": "grpc"}, ITEMS, "routes[1].stream.kind: Must be one of: sse, websocket"),
        ({"kind": "sse", "idle": 0}, ITEMS, "routes[1].stream.idle: "),
        ({"kind": "sse", "per_consumer": 0}, ITEMS, "routes[1].stream.per_consumer: "),
        (
            {"kind": "sse", "query_token": True},
            ITEMS,
            "routes[1].stream.query_token: only a websocket route may take ?access_token=",
        ),
        ({"kind": "sse", "surprise": 1}, ITEMS, "routes[1].stream.surprise: "),
        ({"kind": "sse"}, 2, "routes[2].stream: a stream route takes GET only"),
    ],
)
def test_bad_streams_are_refused_with_their_key_path(stream: Any, route: int, where: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(_raw(stream, route), environ={})
    assert where in str(refused.value), str(refused.value)


def test_gateway_check_names_a_bad_stream(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(_raw({"kind": "sse", "idle": -1})), encoding="utf-8")
    with pytest.raises(SystemExit) as exited:
        main(["check", str(path)])
    assert exited.value.code == 1
    assert "routes[1].stream.idle: " in capsys.readouterr().err


def _exchange(target: str, authorization: str | None = None) -> Exchange:
    headers = [("Host", "gw.test")]
    if authorization is not None:
        headers.append(("Authorization", authorization))
    return Exchange("GET", target, target.partition("?")[0], headers, authorization=authorization)


def test_the_query_token_becomes_the_authorization_and_leaves_the_target() -> None:
    ex = _exchange("/ws?last_event_id=abc&access_token=tok.en")
    assert StreamToken().on_request(ex) is None
    assert ex.authorization == "Bearer tok.en"
    assert ex.header("Authorization") == "Bearer tok.en"  # what the upstream checks again
    assert ex.target == "/ws?last_event_id=abc"  # neither forwarded nor logged
    plain = _exchange("/ws", "Bearer other")
    assert StreamToken().on_request(plain) is None
    assert plain.authorization == "Bearer other" and plain.target == "/ws"


@pytest.mark.parametrize(
    ("target", "authorization"),
    [
        ("/ws?access_token=a&access_token=b", None),
        ("/ws?access_token=", None),
        ("/ws?access_token=a", "Bearer b"),
    ],
)
def test_an_ambiguous_query_token_is_refused(target: str, authorization: str | None) -> None:
    with pytest.raises(Problem) as refused:
        StreamToken().on_request(_exchange(target, authorization))
    assert refused.value.status == 400


def test_the_registry_knows_streaming_paths_and_tells_its_listeners() -> None:
    config = parse_config(_raw({"kind": "sse"}), environ={})
    route = next(r for r in config.routes if r.name == "items.list")
    registry = Streams()
    told: list[bool] = []
    registry.listeners.append(lambda: told.append(True))
    assert not registry.streams_at("/items")
    registry.register(1, route)
    assert registry.streams_at("/items") and not registry.streams_at("/items/1")
    registry.unregister(1)
    assert not registry.streams_at("/items")
    assert told == [True, True]
    registry.unregister(1)  # twice: nothing changes, nobody is told
    assert told == [True, True]


def test_per_consumer_counts() -> None:
    registry = Streams()
    assert registry.take("sub:alice", 2) and registry.take("sub:alice", 2)
    assert not registry.take("sub:alice", 2)
    assert registry.take("sub:bob", 2)
    registry.give_back("sub:alice")
    assert registry.take("sub:alice", 2)
    for _ in range(2):
        registry.give_back("sub:alice")
    assert "sub:alice" not in registry.open


def test_streams_live_across_reloads_in_the_resources() -> None:
    resources: dict[str, Any] = {}
    assert streams_of(resources) is streams_of(resources)


def test_the_drain_tells_its_listeners_once_at_its_beginning() -> None:
    drain = Drain()
    calls: list[str] = []
    drain.on_begin(lambda: calls.append("first"))
    drain.begin()
    drain.begin()
    drain.on_begin(lambda: calls.append("late"))  # already draining: at once
    assert calls == ["first", "late"]


async def test_a_reload_adding_or_dropping_a_stream_route_moves_its_path(
    upstreams: FakeUpstreams,
) -> None:
    """The front server hands a streaming path to aiohttp from the reload that adds it, and
    keeps it on the fast path again once the config that had it is retired."""
    app = create_app(parse_config(copy.deepcopy(BASE), environ={}), transport=upstreams.transport)
    server = FrontTestServer(app)
    await server.start_server()
    try:
        front = server.front
        assert not front.own_path("/items")  # cached: a plain route
        reloader = app[RELOADER]
        assert await reloader.reload(parse_config(_raw({"kind": "sse"}), environ={}))
        assert front.own_path("/items") and not front.own_path("/items/1")
        assert await reloader.reload(parse_config(copy.deepcopy(BASE), environ={}))

        async def back_on_the_fast_path() -> bool:
            return not front.own_path("/items")

        # the retired config's policies stop once its requests are drained (none here)
        await wait_until_async(back_on_the_fast_path, 10, "the path handed back", interval=0.02)
    finally:
        await server.close()


def test_only_get_opens_a_stream() -> None:
    head = _exchange("/items")
    head.method = "HEAD"  # routed with GET
    with pytest.raises(Problem) as refused:
        Stream({"kind": "sse"}).on_request(head)
    assert refused.value.status == 405 and refused.value.headers["Allow"] == "GET"


def test_stats_show_the_route_s_settings_and_open_streams() -> None:
    config = parse_config(_raw({"kind": "sse", "per_consumer": 3}), environ={})
    route = next(r for r in config.routes if r.name == "items.list")
    policy = Stream(route.policies[0].settings)
    policy.route = route
    assert policy.stats() == {"kind": "sse", "open": 0, "per_consumer": 3, "idle": 60.0}
