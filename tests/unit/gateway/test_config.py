"""The YAML config: defaults resolved, env substituted, every mistake named by its key path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from chassis import ConfigError
from gateway.config import DEFAULT_CONFIG_PATH, load_config, parse_config

from .conftest import BASE


def _raw() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def _error(raw: Any, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, environ=environ or {})
    return str(info.value)


def test_defaults_are_resolved_per_route() -> None:
    config = parse_config(_raw(), environ={})
    routes = {r.name: r for r in config.routes}
    assert routes["public"].timeout == 5.0  # the svc upstream's timeout
    assert config.upstreams["identity"].timeout == 10.0  # the default
    assert routes["slow"].timeout == 0.2
    assert routes["items.list"].max_body_bytes == 1000  # server default
    assert routes["upload"].max_body_bytes == 100
    assert routes["items.list"].auth.required is True
    assert routes["items.list"].auth.scopes == ("items:read",)
    assert config.upstreams["svc"].pool_size == 100
    assert config.upstreams["svc"].health.path == "/health/ready"


def test_auth_defaults_to_the_chassis_token_settings() -> None:
    raw = _raw()
    del raw["auth"]
    env = {"PORTICO_ISSUER": "https://id.example", "PORTICO_JWKS_URL": "http://id:1/jwks"}
    config = parse_config(raw, environ=env)
    assert config.auth.issuer == "https://id.example"
    assert config.auth.audience == "portico-api"
    assert config.auth.jwks_url == "http://id:1/jwks"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r["routes"][2].update(timeout=0), "routes[2].timeout: must be > 0"),
        (lambda r: r["routes"][1].update(timeout=-3), "routes[1].timeout: must be > 0"),
        (lambda r: r["routes"][0].update(upstream="nope"), "routes[0].upstream: unknown upstream"),
        (lambda r: r["routes"][0].update(methods=["FETCH"]), "routes[0].methods[0]: must be one"),
        (lambda r: r["routes"][3].update(path="/a/{x"), "routes[3].path: bad parameter segment"),
        (lambda r: r["routes"][3].update(path="a/b"), "routes[3].path: must start with '/'"),
        (lambda r: r["routes"][3].update(path="/a/*/b"), "routes[3].path: '*' is only allowed"),
        (lambda r: r["routes"][3].update(rewrite="/x/{nope}"), "routes[3].rewrite: uses param"),
        (lambda r: r["routes"][0].update(rewrite="/x"), "routes[0].rewrite: must be a '/prefix/*'"),
        (lambda r: r["routes"][4].update(caching=3), "routes[4].caching: Unknown field"),
        (lambda r: r["routes"][4].update(cache={"ttl": -1}), "routes[4].cache.ttl:"),
        (lambda r: r["routes"][4].update(cache={"tll": 5}), "routes[4].cache.tll: Unknown field"),
        (lambda r: r["routes"][4].pop("name"), "routes[4].name: Missing data"),
        (lambda r: r["routes"][5].update(name="public"), "routes[5].name: duplicate of routes[0]"),
        (
            lambda r: r["routes"][1].update(name="x", methods=["POST"]),
            "routes[2].methods: POST /items is already routed by 'x'",
        ),
        (
            lambda r: r["upstreams"]["svc"].update(instances=["ftp://x"]),
            "upstreams.svc.instances[0]: must be an http(s) URL",
        ),
        (lambda r: r["upstreams"]["svc"].update(instances=[]), "upstreams.svc.instances: must"),
        (lambda r: r["upstreams"]["svc"].update(pool_size=0), "upstreams.svc.pool_size: must be"),
        (
            lambda r: r["upstreams"]["svc"]["health"].update(interval=0),
            "upstreams.svc.health.interval: must be > 0",
        ),
        (lambda r: r["server"].update(port=70000), "server.port: must be 0..65535"),
        (lambda r: r["server"].update(max_body_bytes="lots"), "server.max_body_bytes: Not a valid"),
        (lambda r: r.update(no_such_section={}), "no_such_section: Unknown field"),
        (lambda r: r.pop("routes"), "routes: Missing data"),
    ],
)
def test_errors_name_the_key_path(change: Any, expected: str) -> None:
    raw = _raw()
    change(raw)
    assert expected in _error(raw)


def test_every_error_is_reported_at_once() -> None:
    raw = _raw()
    raw["routes"][2]["timeout"] = 0
    raw["upstreams"]["svc"]["timeout"] = "soon"
    message = _error(raw)
    assert "routes[2].timeout" in message
    assert "upstreams.svc.timeout" in message


def test_env_substitution_in_string_values() -> None:
    raw = _raw()
    raw["upstreams"]["svc"]["instances"] = ["${SVC_URL:-http://127.0.0.1:9}"]
    raw["upstreams"]["svc"]["timeout"] = "${SVC_TIMEOUT:-7}"
    raw["routes"][0]["path"] = "/${PUBLIC_PREFIX}/*"
    config = parse_config(raw, environ={"PUBLIC_PREFIX": "open"})
    assert config.upstreams["svc"].instances == ("http://127.0.0.1:9",)
    assert config.upstreams["svc"].timeout == 7.0
    assert config.routes[0].path == "/open/*"

    env = {"PUBLIC_PREFIX": "p", "SVC_URL": "http://svc:1/", "SVC_TIMEOUT": "2.5"}
    config = parse_config(raw, environ=env)
    assert config.upstreams["svc"].instances == ("http://svc:1",)
    assert config.upstreams["svc"].timeout == 2.5


def test_env_substitution_names_the_missing_variable_and_key() -> None:
    raw = _raw()
    raw["upstreams"]["svc"]["instances"] = ["${SVC_URL}"]
    message = _error(raw)
    assert "upstreams.svc.instances[0]: environment variable SVC_URL is not set" in message


def test_env_substituted_value_is_validated() -> None:
    raw = _raw()
    raw["routes"][4]["timeout"] = "${SLOW:-0}"
    assert "routes[4].timeout: must be > 0" in _error(raw)


def test_the_packaged_gateway_yaml_is_valid() -> None:
    config = load_config(DEFAULT_CONFIG_PATH, environ={"CATALOG_URL": "http://catalog:8102"})
    assert config.upstreams["identity"].instances == ("http://127.0.0.1:8101",)
    assert config.upstreams["catalog"].instances == ("http://catalog:8102",)
    routes = {r.name: r for r in config.routes}
    assert routes["users.me"].auth.scopes == ("profile",)
    assert routes["users.register"].auth.required is False
    assert routes["products.update"].methods == ("PATCH", "PUT", "DELETE")


def test_every_packaged_route_is_rate_limited() -> None:
    """Issue 15: discovery documents (`/.well-known/*`) too, per client address."""
    config = load_config(DEFAULT_CONFIG_PATH, environ={})
    assert [r.name for r in config.routes if r.rate_limit is None] == []
    assert {r.name: r.rate_limit for r in config.routes}["well-known"] == "discovery"


def test_route_body_timeout_defaults_to_the_route_timeout() -> None:
    raw = _raw()
    raw["routes"][0]["timeout"] = 7
    raw["routes"][1]["body_timeout"] = 2.5
    routes = parse_config(raw, environ={}).routes
    assert (routes[0].body_timeout, routes[1].body_timeout) == (None, 2.5)
    from gateway.routing import Route

    assert Route.from_config(routes[0]).body_timeout == 7
    assert Route.from_config(routes[1]).body_timeout == 2.5
    raw["routes"][1]["body_timeout"] = 0
    assert "routes[1].body_timeout: must be > 0" in _error(raw)


def test_load_config_reads_gateway_config_env(tmp_path: Path) -> None:
    file = tmp_path / "gw.yaml"
    raw = _raw()
    raw["routes"][2]["timeout"] = 0
    file.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"routes\[2\]\.timeout: must be > 0"):
        load_config(environ={"GATEWAY_CONFIG": str(file)})


def test_unreadable_or_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, environ={})
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(bad, environ={})


def test_trusted_proxies_from_one_comma_separated_env_value() -> None:
    from gateway.config import load_config

    config = load_config(environ={"GATEWAY_TRUSTED_PROXIES": "127.0.0.1/32, ::1"})
    assert [str(n) for n in config.server.trusted_proxies] == ["127.0.0.1/32", "::1/128"]
    assert load_config(environ={}).server.trusted_proxies == ()
