"""HTTP routes through the Flask test client, on a real (throwaway) SQLite database."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from chassis.validation import IDEMPOTENCY_KEY_MISSING
from tests.support.tokens import TestIssuer

from .conftest import READ, WRITE, Api

BASE = "/api/v1/products"


def keyed(api: Api) -> dict[str, str]:
    """Write headers with a fresh Idempotency-Key (required on creates)."""
    return {**api.write, "Idempotency-Key": uuid.uuid4().hex}


def problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
    doc: dict[str, Any] = resp.get_json()
    assert doc["status"] == status and doc["title"] and doc["type"]
    assert "Traceback" not in resp.get_data(as_text=True)
    return doc


# --- auth ---------------------------------------------------------------------------------


def test_no_token_is_401_with_challenge(client: FlaskClient) -> None:
    resp = client.get(BASE)
    problem(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer ")


@pytest.mark.parametrize(
    "overrides",
    [
        {"aud": "someone-else"},
        {"iss": "https://evil.test"},
        {"exp": 1},
        {"headers": {"typ": "JWT"}},
        {"headers": {"kid": "unknown"}},
    ],
)
def test_bad_tokens_are_401(
    client: FlaskClient, issuer: TestIssuer, overrides: dict[str, Any]
) -> None:
    resp = client.get(BASE, headers=issuer.auth(READ, **overrides))
    problem(resp, 401)
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


def test_token_from_another_issuer_key_is_401(client: FlaskClient) -> None:
    stranger = TestIssuer(kid="stranger")
    problem(client.get(BASE, headers=stranger.auth(READ)), 401)


def test_wrong_scope_is_403(api: Api, client: FlaskClient, issuer: TestIssuer) -> None:
    resp = client.get(BASE, headers=issuer.auth(["orders:read"]))
    problem(resp, 403)
    assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]
    # read scope does not allow writes; write scope does not allow reads
    resp = client.post(BASE, json={}, headers=api.read)
    assert problem(resp, 403)
    problem(client.get(BASE, headers=api.write), 403)
    for method in ("patch", "put", "delete"):
        problem(getattr(client, method)(f"{BASE}/x", json={}, headers=api.read), 403)


# --- create / get -------------------------------------------------------------------------


def test_create_then_get(api: Api, client: FlaskClient) -> None:
    resp = api.create(description="A fine widget", price=12.5)
    assert resp.status_code == 201
    body = resp.get_json()
    assert body["price"] == "12.50" and body["currency"] == "EUR" and body["version"] == 1
    assert resp.headers["Location"] == f"{BASE}/{body['id']}"
    assert resp.headers["ETag"] == '"v1"'
    got = client.get(resp.headers["Location"], headers=api.read)
    assert got.status_code == 200 and got.get_json() == body
    assert got.headers["ETag"] == '"v1"'
    assert got.headers["X-Request-ID"]


def test_get_missing_is_404(api: Api, client: FlaskClient) -> None:
    doc = problem(client.get(f"{BASE}/nope", headers=api.read), 404)
    assert doc["instance"] == f"{BASE}/nope"


def test_duplicate_sku_is_409(api: Api) -> None:
    assert api.create().status_code == 201
    doc = problem(api.create(name="Other"), 409)
    assert doc["sku"] == "SKU-001"


def test_invalid_body_is_422_naming_fields(api: Api, client: FlaskClient) -> None:
    resp = client.post(BASE, json={"sku": "x", "price": "1.999", "extra": 1}, headers=keyed(api))
    doc = problem(resp, 422)
    assert set(doc["errors"]) == {"sku", "name", "category", "price", "extra"}
    assert "sku" in doc["detail"]


def test_non_json_bodies(api: Api, client: FlaskClient) -> None:
    problem(client.post(BASE, data="sku=x", headers=keyed(api)), 415)
    resp = client.post(BASE, data="{not json", content_type="application/json", headers=keyed(api))
    problem(resp, 400)
    resp = client.post(BASE, json=["a", "list"], headers=keyed(api))
    problem(resp, 422)


def test_oversized_body_is_413(api: Api, client: FlaskClient) -> None:
    resp = client.post(BASE, json={"description": "x" * 70_000}, headers=keyed(api))
    problem(resp, 413)


# --- idempotency --------------------------------------------------------------------------


def test_idempotent_retry_returns_the_first_result(api: Api, client: FlaskClient) -> None:
    body = {"sku": "IDEM-1", "name": "Once", "category": "misc", "price": "1.00"}
    headers = {**api.write, "Idempotency-Key": "abc-123"}
    first = client.post(BASE, json=body, headers=headers)
    second = client.post(BASE, json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.get_json() == first.get_json()
    assert second.headers["Location"] == first.headers["Location"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(api.list().get_json()["items"]) == 1
    # same key, different body
    doc = problem(client.post(BASE, json={**body, "name": "Twice"}, headers=headers), 422)
    assert "Idempotency-Key" in doc["errors"]
    # another key, the same body: a duplicate sku
    problem(client.post(BASE, json=body, headers={**api.write, "Idempotency-Key": "other"}), 409)


def test_a_create_without_idempotency_key_is_400_like_every_service(
    api: Api, client: FlaskClient
) -> None:
    body = {"sku": "NOKEY-1", "name": "Keyless", "category": "misc", "price": "1.00"}
    doc = problem(client.post(BASE, json=body, headers=api.write), 400)
    assert doc["type"] == IDEMPOTENCY_KEY_MISSING
    assert doc["errors"] == {"Idempotency-Key": ["is required"]}
    assert api.list().get_json()["items"] == []  # nothing created


def test_idempotency_keys_are_per_client(client: FlaskClient, issuer: TestIssuer) -> None:
    body = {"sku": "IDEM-1", "name": "Once", "category": "misc", "price": "1.00"}
    a = {**issuer.auth(WRITE, sub="client-a"), "Idempotency-Key": "k"}
    b = {**issuer.auth(WRITE, sub="client-b"), "Idempotency-Key": "k"}
    assert client.post(BASE, json=body, headers=a).status_code == 201
    problem(client.post(BASE, json=body, headers=b), 409)


def test_bad_idempotency_key_is_422(api: Api, client: FlaskClient) -> None:
    body = {"sku": "IDEM-1", "name": "Once", "category": "misc", "price": "1.00"}
    resp = client.post(BASE, json=body, headers={**api.write, "Idempotency-Key": "x" * 256})
    doc = problem(resp, 422)  # the same answer as orders' and payments' (one chassis helper)
    assert "Idempotency-Key" in doc["errors"]
    assert doc["type"] == "https://portico.dev/problems/validation"


# --- list ---------------------------------------------------------------------------------


def test_empty_list(api: Api) -> None:
    resp = api.list()
    assert resp.status_code == 200
    assert resp.get_json() == {"items": [], "next_cursor": None}
    assert "Link" not in resp.headers


def test_pagination_walks_every_item_once(api: Api, client: FlaskClient) -> None:
    created = [api.create(sku=f"SKU-{i:03d}").get_json()["id"] for i in range(7)]
    seen: list[str] = []
    url: str | None = f"{BASE}?limit=3&category=tools"
    pages = 0
    while url:
        resp = client.get(url, headers=api.read)
        assert resp.status_code == 200
        body = resp.get_json()
        seen += [p["id"] for p in body["items"]]
        pages += 1
        link = resp.headers.get("Link")
        if body["next_cursor"] is None:
            assert link is None
            url = None
        else:
            assert link is not None and link.endswith('>; rel="next"')
            url = link[1 : link.index(">")]
            query = parse_qs(urlsplit(url).query)
            assert query["cursor"] == [body["next_cursor"]]
            assert query["category"] == ["tools"] and query["limit"] == ["3"]
    assert seen == created and pages == 3


def test_list_filters(api: Api) -> None:
    api.create(sku="K-1", name="Red Kettle", category="kitchen", price="30")
    api.create(sku="K-2", name="Blue kettle", category="kitchen", price="50")
    api.create(sku="S-1", name="Kettlebell", category="sport", price="40")

    def skus(**params: Any) -> list[str]:
        resp = api.list(**params)
        assert resp.status_code == 200
        return [p["sku"] for p in resp.get_json()["items"]]

    assert skus(category="kitchen") == ["K-1", "K-2"]
    assert skus(q="KETTLE") == ["K-1", "K-2", "S-1"]
    assert skus(min_price="35", max_price="45.00") == ["S-1"]
    assert skus(q="kettle", category="sport") == ["S-1"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "500"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"min_price": "free"}, "min_price"),
        ({"min_price": "9", "max_price": "1"}, "max_price"),
        ({"cursor": "bogus"}, "cursor"),
    ],
)
def test_bad_query_params_are_422(api: Api, params: dict[str, str], field: str) -> None:
    doc = problem(api.list(**params), 422)
    assert field in doc["errors"] and field in doc["detail"]


# --- update / delete ----------------------------------------------------------------------


def test_patch_put_and_etags(api: Api, client: FlaskClient) -> None:
    pid = api.create().get_json()["id"]
    url = f"{BASE}/{pid}"
    resp = client.patch(url, json={"price": "11"}, headers=api.write)
    assert resp.status_code == 200
    assert resp.get_json()["price"] == "11.00" and resp.headers["ETag"] == '"v2"'
    # a stale If-Match is refused, the current one accepted
    stale = {**api.write, "If-Match": '"v1"'}
    problem(client.patch(url, json={"name": "x"}, headers=stale), 412)
    problem(client.patch(url, json={"name": "x"}, headers={**api.write, "If-Match": "junk"}), 412)
    current = {**api.write, "If-Match": '"v2"'}
    full = {"sku": "SKU-NEW", "name": "New", "category": "home", "price": "3.50"}
    resp = client.put(url, json=full, headers=current)
    assert resp.status_code == 200
    body = resp.get_json()
    assert {k: body[k] for k in full} == full and body["description"] == ""
    assert body["version"] == 3
    # PUT needs every field; PATCH validates what it gets
    assert set(problem(client.put(url, json={"name": "y"}, headers=api.write), 422)["errors"]) == {
        "sku",
        "category",
        "price",
    }
    assert "id" in problem(client.patch(url, json={"id": "z"}, headers=api.write), 422)["errors"]
    problem(client.patch(f"{BASE}/missing", json={"name": "y"}, headers=api.write), 404)


def test_patch_to_a_taken_sku_is_409(api: Api, client: FlaskClient) -> None:
    api.create(sku="SKU-A")
    pid = api.create(sku="SKU-B").get_json()["id"]
    problem(client.patch(f"{BASE}/{pid}", json={"sku": "SKU-A"}, headers=api.write), 409)


def test_delete(api: Api, client: FlaskClient) -> None:
    pid = api.create().get_json()["id"]
    url = f"{BASE}/{pid}"
    problem(client.delete(url, headers={**api.write, "If-Match": '"v7"'}), 412)
    resp = client.delete(url, headers=api.write)
    assert resp.status_code == 204 and resp.data == b""
    problem(client.get(url, headers=api.read), 404)
    problem(client.delete(url, headers=api.write), 404)


# --- operations ---------------------------------------------------------------------------


def test_unknown_route_and_method_are_problems(api: Api, client: FlaskClient) -> None:
    problem(client.get("/api/v1/nothing", headers=api.read), 404)
    resp = client.post(f"{BASE}/x", json={}, headers=api.write)
    problem(resp, 405)


def test_health_and_metrics(client: FlaskClient, api: Api) -> None:
    assert client.get("/health/live").status_code == 200
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.get_json()["checks"] == {"database": "ok"}
    api.list()
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'route="/api/v1/products"' in metrics


def test_not_ready_before_init(tmp_path: Any, issuer: TestIssuer) -> None:
    from chassis import sqlite_url
    from services.catalog.app import create_app
    from services.catalog.entrypoints import deps
    from services.catalog.settings import CatalogSettings

    app: Flask = create_app(
        CatalogSettings(database_url=sqlite_url(tmp_path / "empty.db"), relay=False),
        verifier=issuer.verifier(),
    )
    try:
        resp = app.test_client().get("/health/ready")
        assert resp.status_code == 503
        assert resp.get_json()["checks"]["database"].startswith("failed")
    finally:
        deps(app).engine.dispose()


def test_openapi_document(client: FlaskClient) -> None:
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    doc = resp.get_json()
    assert doc["openapi"].startswith("3.1")
    v2 = "/api/v2/products"
    assert set(doc["paths"]) == {BASE, BASE + "/{product_id}", v2, v2 + "/{product_id}"}
    assert set(doc["paths"][BASE]) == {"get", "post"}
    assert set(doc["paths"][BASE + "/{product_id}"]) >= {"get", "patch", "put", "delete"}
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    ops = [op for path in doc["paths"].values() for k, op in path.items() if k != "parameters"]
    for op in ops:
        (requirement,) = op["security"]
        assert requirement["bearerAuth"] in (["catalog:read"], ["catalog:write"])
        assert op["responses"]["401"] == {"$ref": "#/components/responses/Unauthorized"}
    unauthorized = doc["components"]["responses"]["Unauthorized"]
    assert unauthorized["content"]["application/problem+json"]["schema"] == {
        "$ref": "#/components/schemas/Problem"
    }
    params = doc["paths"][BASE]["get"]["parameters"]
    query = {p["name"] for p in params if p.get("in") == "query"}
    assert query == {"limit", "cursor", "category", "q", "min_price", "max_price", "sku"}
    assert {"$ref": "#/components/parameters/If-None-Match"} in params
    assert doc["components"]["schemas"]["Product"]["properties"]["price"]["type"] == "string"
