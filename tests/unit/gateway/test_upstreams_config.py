"""The upstream and retry keys of gateway.yaml: defaults, both instance forms, named errors."""

from __future__ import annotations

from typing import Any

import pytest

from chassis import ConfigError
from gateway.config import BreakerConfig, PassiveEjection, parse_config


def _raw(svc: dict[str, Any], route: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "upstreams": {"svc": svc},
        "routes": [
            {
                "name": "r",
                "methods": ["GET", "POST"],
                "path": "/*",
                "upstream": "svc",
                **(route or {}),
            }
        ],
    }


def _error(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, environ={})
    return str(info.value)


def test_defaults_keep_the_plain_behaviour() -> None:
    config = parse_config(_raw({"instances": ["http://a:1/"]}), environ={})
    svc = config.upstreams["svc"]
    assert svc.instances == ("http://a:1",)
    assert svc.weights == (1,)
    assert svc.balancing == "round_robin"
    assert svc.passive is None and svc.breaker is None
    assert (svc.health.healthy_threshold, svc.health.unhealthy_threshold) == (1, 1)
    assert config.routes[0].retry is None


def test_every_key() -> None:
    svc = {
        "instances": ["http://a:1", {"url": "http://b:2/", "weight": 3}],
        "balancing": "weighted",
        "health": {
            "path": "/ping",
            "interval": 0.5,
            "timeout": 0.2,
            "healthy_threshold": 2,
            "unhealthy_threshold": 3,
        },
        "passive": {"consecutive_failures": 3, "ejection_time": 2.5},
        "breaker": {"failure_threshold": 4, "recovery_timeout": 1.5},
    }
    route = {"retry": {"attempts": 3, "on": [502, 503, "timeout"], "budget_ratio": 0.1}}
    config = parse_config(_raw(svc, route), environ={})
    up = config.upstreams["svc"]
    assert up.instances == ("http://a:1", "http://b:2")
    assert up.weights == (1, 3)
    assert up.health.timeout == 0.2
    assert up.passive == PassiveEjection(3, 2.5)
    assert up.breaker == BreakerConfig(4, 1.5)
    retry = config.routes[0].retry
    assert retry is not None
    assert (retry.attempts, retry.on_status, retry.budget_ratio) == (3, {502, 503}, 0.1)
    assert retry.on_timeout and not retry.on_connect_error


@pytest.mark.parametrize(
    ("svc", "route", "expected"),
    [
        ({"balancing": "random"}, None, "upstreams.svc.balancing: must be one of"),
        (
            {"instances": [{"url": "http://a", "weight": 0}], "balancing": "weighted"},
            None,
            "upstreams.svc.instances[0].weight: must be >= 1",
        ),
        (
            {"instances": ["http://a", {"url": "http://b", "weight": 2}]},
            None,
            "upstreams.svc.instances[1].weight: only used with balancing: weighted",
        ),
        ({"instances": [{"weight": 2}]}, None, "upstreams.svc.instances[0].url: Missing data"),
        ({"instances": [7]}, None, "upstreams.svc.instances[0]: must be a URL or {url, weight}"),
        ({"passive": {"ejection_time": 0}}, None, "upstreams.svc.passive.ejection_time: must be"),
        (
            {"breaker": {"failure_threshold": 1.5}},
            None,
            "upstreams.svc.breaker.failure_threshold: Not a valid integer",
        ),
        (
            {"health": {"unhealthy_threshold": 0}},
            None,
            "upstreams.svc.health.unhealthy_threshold: must be > 0",
        ),
        ({}, {"retry": {"attempts": 0}}, "routes[0].retry.attempts: must be 1..10"),
        ({}, {"retry": {"on": [500]}}, "routes[0].retry.on[0]: must be one of"),
        ({}, {"retry": {"budget_ratio": 0}}, "routes[0].retry.budget_ratio: must be > 0"),
        (
            {},
            {"methods": ["POST"], "retry": {}},
            "routes[0].retry: only GET, HEAD, OPTIONS, PUT and DELETE are retried",
        ),
    ],
)
def test_errors_name_the_key(
    svc: dict[str, Any], route: dict[str, Any] | None, expected: str
) -> None:
    assert expected in _error(_raw({"instances": ["http://a:1"], **svc}, route))
