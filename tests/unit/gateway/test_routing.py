"""The compiled router: precedence, parameters, methods and rewrites."""

from __future__ import annotations

from typing import Any

from gateway.config import parse_config
from gateway.routing import Router


def _router(*routes: dict[str, Any]) -> Router:
    raw = {
        "upstreams": {"a": {"instances": ["http://a:1"]}},
        "routes": [{"upstream": "a", "auth": {"required": False}, **route} for route in routes],
    }
    return Router(parse_config(raw, environ={}).routes)


def _name(router: Router, method: str, path: str) -> str | None:
    found = router.match(path)
    if found is None:
        return None
    route = found[0].routes.get(method)
    return route.name if route else None


def test_exact_beats_template_beats_prefix() -> None:
    router = _router(
        {"name": "prefix", "methods": ["GET"], "path": "/api/*"},
        {"name": "template", "methods": ["GET"], "path": "/api/users/{id}"},
        {"name": "exact", "methods": ["GET"], "path": "/api/users/me"},
        {"name": "longer-prefix", "methods": ["GET"], "path": "/api/static/*"},
    )
    assert _name(router, "GET", "/api/users/me") == "exact"
    assert _name(router, "GET", "/api/users/42") == "template"
    assert _name(router, "GET", "/api/users/42/orders") == "prefix"
    assert _name(router, "GET", "/api/static/css/x.css") == "longer-prefix"
    assert _name(router, "GET", "/api") is None
    assert router.match("/other") is None


def test_template_parameters_and_specificity() -> None:
    router = _router(
        {"name": "any", "methods": ["GET"], "path": "/p/{a}/{b}"},
        {"name": "literal", "methods": ["GET"], "path": "/p/{a}/details"},
    )
    found = router.match("/p/7/details")
    assert found is not None
    assert found[0].routes["GET"].name == "literal"
    assert found[1] == {"a": "7"}
    found = router.match("/p/7/8")
    assert found is not None
    assert found[1] == {"a": "7", "b": "8"}
    assert router.match("/p/7") is None
    assert router.match("/p/7/8/9") is None


def test_methods_share_a_path_and_get_implies_head() -> None:
    router = _router(
        {"name": "read", "methods": ["GET"], "path": "/items/{id}"},
        {"name": "write", "methods": ["PUT", "DELETE"], "path": "/items/{id}"},
    )
    found = router.match("/items/1")
    assert found is not None
    entry = found[0]
    assert entry.routes["HEAD"].name == "read"
    assert entry.routes["DELETE"].name == "write"
    assert entry.allow == "DELETE, GET, HEAD, PUT"
    assert "POST" not in entry.routes


def test_precomputed_route_data() -> None:
    router = _router(
        {"name": "r", "methods": ["GET"], "path": "/r", "auth": {"scopes": ["a", "b"]}},
    )
    (route,) = router.routes
    assert route.scopes == frozenset({"a", "b"})
    assert route.auth_required is True


def test_rewrites_keep_the_query() -> None:
    router = _router(
        {"name": "t", "methods": ["GET"], "path": "/old/{id}", "rewrite": "/new/{id}/x"},
        {"name": "p", "methods": ["GET"], "path": "/legacy/*", "rewrite": "/v2/*"},
        {"name": "same", "methods": ["GET"], "path": "/same/{id}"},
    )
    routes = {r.name: r for r in router.routes}
    assert routes["t"].target("/old/42?q=1", {"id": "42"}) == "/new/42/x?q=1"
    assert routes["p"].target("/legacy/a/b?z", None) == "/v2/a/b?z"
    assert routes["same"].target("/same/%41?x=%20", {"id": "%41"}) == "/same/%41?x=%20"
