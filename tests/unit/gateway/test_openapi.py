"""The merged /openapi.json: public paths only for routed operations, OAuth2 security with the
route's scopes, the gateway's own answers, component clashes prefixed; /docs is Swagger UI."""

from __future__ import annotations

import copy
from typing import Any

from gateway.openapi import OpenApiMerger
from gateway.routing import Router
from gateway.transport import MockResponse, MockTransport, OutboundRequest
from gateway.upstreams import UpstreamPool

from .conftest import BASE, SVC, GatewayClient, make_config

OTHER = "http://other.test"


def _op(schema: str) -> dict[str, Any]:
    return {
        "operationId": "list",
        "responses": {
            "200": {
                "description": "ok",
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}
                },
            }
        },
    }


SVC_SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "paths": {
        "/items": {"get": _op("Item"), "post": _op("Item"), "delete": _op("Item")},
        "/items/{item_id}": {"get": _op("Item")},
        "/v2/things/{thing}": {"get": _op("Page")},
        "/public/hello": {"get": _op("Page")},
        "/internal": {"get": _op("Item")},
    },
    "components": {
        "schemas": {"Item": {"type": "object"}, "Page": {"type": "array"}},
        "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
    },
}
OTHER_SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "paths": {"/other": {"get": _op("Item")}},
    "components": {"schemas": {"Item": {"type": "string"}, "Page": {"type": "array"}}},
}


def _merger() -> OpenApiMerger:
    raw = copy.deepcopy(BASE)
    raw["upstreams"]["other"] = {"instances": [OTHER], "health": {"interval": 60}}
    raw["routes"].append(
        {"name": "other", "methods": ["GET"], "path": "/api/other", "rewrite": "/other",
         "upstream": "other", "auth": {"scopes": ["other:read"]}}
    )  # fmt: skip
    config = make_config(**raw)
    router = Router(config.routes)
    return OpenApiMerger(router, UpstreamPool(config.upstreams), MockTransport(lambda r: None),
                         config=config)  # fmt: skip


def test_only_routed_operations_under_their_public_paths() -> None:
    doc = _merger().merge({"svc": SVC_SPEC, "other": OTHER_SPEC})
    paths = doc["paths"]
    assert set(paths["/items"]) == {"get", "post"}  # DELETE is not routed
    assert "/items/{item_id}" in paths  # the service's parameter name is kept
    assert "/old/{thing}" in paths and "/v2/things/{thing}" not in paths  # rewrite mapped back
    assert "/public/hello" in paths  # under a prefix route
    assert "/internal" not in paths
    assert "/api/other" in paths and "/other" not in paths
    for own in ("/healthz", "/readyz"):
        assert own in paths
    assert "/oauth/token" not in paths  # identity documents its own endpoints now


def test_no_hand_written_identity_docs() -> None:
    """Every OAuth or users path comes from identity's document, none from the gateway."""
    doc = _merger().merge({})
    assert not [p for p in doc["paths"] if p.startswith(("/oauth", "/api/v1/users"))]


def test_security_scopes_and_gateway_answers() -> None:
    doc = _merger().merge({"svc": SVC_SPEC, "other": OTHER_SPEC})
    get_items = doc["paths"]["/items"]["get"]
    assert get_items["security"] == [{"oauth2": ["items:read"]}]
    assert doc["paths"]["/items"]["post"]["security"] == [{"oauth2": ["items:write"]}]
    for status in ("400", "401", "403", "404", "413", "414", "431", "502", "503", "504"):
        assert status in get_items["responses"]
    assert "408" not in get_items["responses"]  # no body
    public = doc["paths"]["/public/hello"]["get"]
    assert public["security"] == []
    assert "401" not in public["responses"]
    assert {"400", "404", "413", "414", "502", "503", "504"} <= set(public["responses"])
    unauthorized = doc["components"]["responses"]["GatewayUnauthorized"]
    assert "WWW-Authenticate" in unauthorized["headers"]
    assert "Retry-After" in doc["components"]["responses"]["GatewayTooManyRequests"]["headers"]
    flows = doc["components"]["securitySchemes"]["oauth2"]["flows"]
    assert flows["clientCredentials"]["tokenUrl"] == "https://issuer.test/oauth/token"
    assert flows["authorizationCode"]["authorizationUrl"] == "https://issuer.test/oauth/authorize"
    assert {"items:read", "items:write", "other:read"} <= set(flows["clientCredentials"]["scopes"])
    assert "bearerAuth" not in doc["components"]["securitySchemes"]


def test_a_service_status_keeps_its_own_answer_and_component() -> None:
    """A service's 404 (and its own `NotFound` component) wins over the gateway's, and the
    gateway's components never collide with a service's of the same name."""
    spec = copy.deepcopy(SVC_SPEC)
    spec["paths"]["/items/{item_id}"]["get"]["responses"]["404"] = {
        "$ref": "#/components/responses/NotFound"
    }
    spec["paths"]["/items"]["post"]["requestBody"] = {"content": {"application/json": {}}}
    spec["components"]["responses"] = {"NotFound": {"description": "no such item"}}
    doc = _merger().merge({"svc": spec})
    item = doc["paths"]["/items/{item_id}"]["get"]["responses"]
    assert item["404"] == {"$ref": "#/components/responses/NotFound"}
    assert doc["components"]["responses"]["NotFound"] == {"description": "no such item"}
    assert "no route" in doc["components"]["responses"]["GatewayNotFound"]["description"].lower()
    assert doc["paths"]["/items"]["post"]["responses"]["408"] == {
        "$ref": "#/components/responses/GatewayRequestTimeout"
    }


def test_component_clashes_are_prefixed_and_refs_rewritten() -> None:
    doc = _merger().merge({"svc": SVC_SPEC, "other": OTHER_SPEC})
    schemas = doc["components"]["schemas"]
    assert schemas["SvcItem"] == {"type": "object"}
    assert schemas["OtherItem"] == {"type": "string"}
    assert "Item" not in schemas
    assert schemas["Page"] == {"type": "array"}  # identical in both: shared
    ref = doc["paths"]["/api/other"]["get"]["responses"]["200"]["content"]["application/json"]
    assert ref["schema"] == {"$ref": "#/components/schemas/OtherItem"}
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()
           if isinstance(op, dict) and "operationId" in op]  # fmt: skip
    assert len(ids) == len(set(ids))


async def test_served_and_docs(gateway: GatewayClient, upstreams: Any) -> None:
    def spec(_request: OutboundRequest) -> MockResponse:
        return MockResponse(json=SVC_SPEC)

    upstreams.on(SVC, "/openapi.json", spec)
    client = await gateway()
    doc = await (await client.get("/openapi.json")).json()
    assert "/items/{item_id}" in doc["paths"]
    html = await (await client.get("/docs")).text()
    assert "/openapi.json" in html and "swagger-ui-bundle.js" in html
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        resp = await client.get(f"/docs/static/{asset}")
        assert resp.status == 200
        assert len(await resp.read()) > 1000


async def test_a_policys_documented_answers_are_merged(
    gateway: GatewayClient, upstreams: Any
) -> None:
    upstreams.on(SVC, "/openapi.json", lambda _r: MockResponse(json=copy.deepcopy(SVC_SPEC)))
    routes = copy.deepcopy(BASE["routes"])
    routes[0]["policies"] = [
        {"use": "examples.plugins.tenant:TenantHeader", "settings": {"allowed": ["acme"]}}
    ]
    client = await gateway(routes=routes)
    doc = await (await client.get("/openapi.json")).json()
    hello = doc["paths"]["/public/hello"]["get"]["responses"]
    assert hello["403"] == {"description": "this tenant is not allowed here"}
    items = doc["paths"]["/items"]["get"]["responses"]
    assert items["403"] != hello["403"]  # another route: the gateway's own 403 only
