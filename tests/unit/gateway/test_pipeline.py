"""The pipeline: the chain runner, custom policies on the front server's fast path (with test
transports), failures of a policy, settings checked by key path, documented answers."""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import pytest
from marshmallow import Schema, fields

from chassis import ConfigError, Problem
from gateway.config import parse_config
from gateway.pipeline import SUSPEND, Answer, Chain, Exchange, Policy, Verdict, run_to_end
from tests.support.fastpath import FastPath

from .conftest import BASE, SVC

SEEN: list[str] = []


class Mark(Policy):
    """Notes that it ran, at once (the chain stays inline)."""

    order = 610

    class Settings(Schema):
        tag = fields.String(load_default="mark")

    def on_request(self, ex: Exchange) -> Verdict:
        SEEN.append(self.settings["tag"])
        ex.set_header("X-Mark", self.settings["tag"])
        return None

    def on_response_head(self, ex: Exchange) -> None:
        ex.add_response_header("X-Marked", self.settings["tag"])

    def on_log(self, ex: Exchange) -> None:
        SEEN.append(f"log:{ex.status}")


class Boom(Policy):
    def on_request(self, ex: Exchange) -> Verdict:
        raise RuntimeError("boom")


class Later(Policy):
    """Waits (a coroutine): the chain goes on in a task from here."""

    def on_request(self, ex: Exchange) -> Verdict:
        return self._wait(ex)

    async def _wait(self, ex: Exchange) -> None:
        await asyncio.sleep(0)
        ex.set_header("X-Later", "yes")


class Teapot(Policy):
    def on_request(self, ex: Exchange) -> Verdict:
        return Answer(418, [("Content-Type", "text/plain")], b"short and stout")


def _raw(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    raw.update(changes)
    return raw


def _config(route_policies: list[Any], top: list[Any] | None = None) -> Any:
    raw = _raw()
    raw["routes"][0]["policies"] = route_policies  # "public": /public/*
    if top is not None:
        raw["policies"] = top
    return parse_config(raw, environ={})


GET = b"GET /public/x HTTP/1.1\r\nHost: gw\r\nX-Request-Id: rid-1\r\n\r\n"
HERE = "tests.unit.gateway.test_pipeline"


# --- the runner on its own -------------------------------------------------------------------


def _ex() -> Exchange:
    ex = Exchange("GET", "/x", "/x", [])
    ex.rid = "r"
    return ex


async def test_the_runner_stays_inline_until_a_step_waits() -> None:
    order: list[str] = []

    class Step(Policy):
        def __init__(self, tag: str, verdict: Any = None) -> None:
            super().__init__()
            self.tag, self.verdict = tag, verdict

        def on_request(self, ex: Exchange) -> Verdict:
            order.append(self.tag)
            return self.verdict() if callable(self.verdict) else self.verdict

    async def wait() -> None:
        order.append("waited")

    answer = Answer(200, [], b"done")
    chain = Chain([Step("a"), Step("b"), Step("c", answer)])
    ex = _ex()
    answered: list[Exchange] = []
    ex.done = answered.append
    chain.start(ex)
    assert answered == [ex] and ex.answer is answer and order == ["a", "b", "c"]

    order.clear()
    chain = Chain([Step("a"), Step("w", wait), Step("c", answer)])
    ex = _ex()
    await run_to_end(chain, ex)
    assert order == ["a", "w", "waited", "c"] and ex.status == 200


async def test_a_suspended_step_resumes_from_its_callback() -> None:
    class Callback(Policy):
        def on_request(self, ex: Exchange) -> Verdict:
            loop = asyncio.get_running_loop()
            loop.call_soon(lambda: ex.chain.resume(ex, Problem(429, "later")))  # type: ignore[union-attr]
            return SUSPEND

    ex = await run_to_end(Chain([Callback(), Teapot()]), _ex())
    assert ex.status == 429 and ex.answer is not None and ex.answer.problem is not None


async def test_a_policy_that_raises_answers_500_and_is_logged_once_with_its_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, "portico.gateway.pipeline")
    ex = await run_to_end(Chain([Boom(), Teapot()]), _ex())
    assert ex.status == 500 and ex.answer is not None
    assert b"an unexpected error occurred" in ex.answer.body
    failures = [r for r in caplog.records if "failed in on_request" in r.getMessage()]
    assert len(failures) == 1
    assert f"{HERE}:Boom" in failures[0].getMessage()


# --- custom policies on the front server's fast path -------------------------------------------


async def test_a_custom_policy_runs_on_the_fast_path_inline() -> None:
    SEEN.clear()
    config = _config([{"use": f"{HERE}:Mark", "settings": {"tag": "m1"}}])
    async with FastPath(config, "svc", SVC) as fast:
        status, headers, body = await fast.request(GET)
        assert fast.inline  # no task: the upstream request was written from data_received
    assert status == 200 and body == b"{}"
    assert headers["x-marked"] == "m1" and headers["x-request-id"] == "rid-1"
    assert b"X-Mark: m1" in fast.upstream_requests[0]
    assert SEEN == ["m1", "log:200"]


async def test_global_and_route_policies_run_in_their_order() -> None:
    SEEN.clear()
    config = _config(
        [{"use": f"{HERE}.Mark", "settings": {"tag": "route"}, "order": 620}],
        top=[{"use": f"{HERE}:Mark", "settings": {"tag": "global"}}],
    )
    async with FastPath(config, "svc", SVC) as fast:
        await fast.request(GET)
        await fast.request(b"GET /items HTTP/1.1\r\nHost: gw\r\n\r\n")  # 401 from auth
    # both on the first route, in order; the global one alone on /items, where auth refused
    assert SEEN == ["global", "route", "log:200", "log:200", "log:401"]


async def test_a_waiting_policy_on_the_fast_path_goes_on_in_a_task() -> None:
    config = _config([f"{HERE}:Later"])
    async with FastPath(config, "svc", SVC) as fast:
        status, _, _ = await fast.request(GET)
        assert not fast.inline
    assert status == 200 and b"X-Later: yes" in fast.upstream_requests[0]


async def test_a_failing_policy_on_the_fast_path_never_leaves_the_connection_hanging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, "portico.gateway.pipeline")
    config = _config([f"{HERE}:Boom"])
    async with FastPath(config, "svc", SVC) as fast:
        status, headers, body = await fast.request(GET)
        assert status == 500 and headers["x-request-id"] == "rid-1"
        assert headers["content-type"] == "application/problem+json"
        assert b'"correlation_id":"rid-1"' in body
        assert fast.upstream_requests == []  # never forwarded
        # the connection is still usable: the next request is answered too
        status, _, _ = await fast.request(b"GET /nowhere HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert status == 404
    assert len([r for r in caplog.records if "Boom failed" in r.getMessage()]) == 1


async def test_a_policy_answering_itself_skips_the_upstream() -> None:
    async with FastPath(_config([f"{HERE}:Teapot"]), "svc", SVC) as fast:
        status, headers, body = await fast.request(GET)
    assert (status, body) == (418, b"short and stout")
    assert headers["content-length"] == "15" and fast.upstream_requests == []


async def test_the_example_tenant_policy_on_the_fast_path() -> None:
    tenant = {
        "use": "examples.plugins.tenant:TenantHeader",
        "settings": {"allowed": ["acme"]},
    }
    async with FastPath(_config([tenant]), "svc", SVC) as fast:
        status, _, _ = await fast.request(GET)
        assert status == 400
        status, _, _ = await fast.request(GET.replace(b"\r\n\r\n", b"\r\nX-Tenant: evil\r\n\r\n"))
        assert status == 403
        status, headers, _ = await fast.request(
            GET.replace(b"\r\n\r\n", b"\r\nX-Tenant: acme\r\n\r\n")
        )
        assert status == 200 and headers["x-tenant"] == "acme" and fast.inline


# --- settings and attachment in gateway.yaml ---------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "where"),
    [
        ({"use": f"{HERE}:Mark", "settings": {"bogus": 1}}, "settings.bogus: Unknown field"),
        ({"use": f"{HERE}:Mark", "settings": {"tag": 5}}, "settings.tag: Not a valid string"),
        ({"use": f"{HERE}:Mark", "when": 1}, "when: Unknown field"),
        ({"use": f"{HERE}:Nothing"}, "use: "),
        ({"use": "no.such.module:Thing"}, "use: cannot import 'no.such.module'"),
        ({"use": f"{HERE}:Boom", "settings": {"a": 1}}, "settings: "),
        ({"use": f"{HERE}:Mark", "order": "first"}, "order: must be an integer"),
    ],
)
def test_bad_policy_entries_are_refused_with_their_key_path(entry: Any, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        _config([entry])
    assert f"routes[0].policies[0].{where}" in str(err.value)


def test_top_level_policy_errors_name_their_path() -> None:
    with pytest.raises(ConfigError, match=r"policies\[0\]\.settings\.bogus: Unknown field"):
        _config([], top=[{"use": f"{HERE}:Mark", "settings": {"bogus": 1}}])


def test_a_registered_name_and_the_shipped_noop() -> None:
    config = _config(["noop"], top=["noop"])
    assert config.policies[0].cls.__name__ == "NoOp"
