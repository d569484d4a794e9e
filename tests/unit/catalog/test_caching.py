"""Catalog product reads speak HTTP caching: ETag (the version), Last-Modified, Cache-Control,
and 304 for If-None-Match / If-Modified-Since (chassis.http_cache)."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient

from chassis import ConfigError, sqlite_url
from services.catalog.__main__ import init
from services.catalog.app import create_app
from services.catalog.entrypoints import deps
from services.catalog.settings import CatalogSettings
from tests.support.tokens import TestIssuer

from .conftest import Api

BASE = "/api/v1/products"


def test_get_sends_validators_and_a_public_cache_control(api: Api, client: FlaskClient) -> None:
    url = api.create().headers["Location"]
    resp = client.get(url, headers=api.read)
    assert resp.status_code == 200
    assert resp.headers["ETag"] == '"v1"'
    assert resp.headers["Cache-Control"] == "public, max-age=60"
    assert resp.headers["Last-Modified"].endswith(" GMT")


def test_if_none_match_is_304_until_an_update_changes_the_etag(
    api: Api, client: FlaskClient
) -> None:
    url = api.create().headers["Location"]
    first = client.get(url, headers=api.read)
    tag = first.headers["ETag"]
    for held in (tag, f"W/{tag}", f'"v0", {tag}', "*"):
        resp = client.get(url, headers={**api.read, "If-None-Match": held})
        assert resp.status_code == 304, held
        assert resp.data == b"" and resp.headers["ETag"] == tag
        assert resp.headers["Cache-Control"] == "public, max-age=60"
    # the update goes through the API; the old tag is now stale: a full 200 with the new one
    assert client.patch(url, json={"price": "1.00"}, headers=api.write).status_code == 200
    fresh = client.get(url, headers={**api.read, "If-None-Match": tag})
    assert fresh.status_code == 200 and fresh.get_json()["price"] == "1.00"
    assert fresh.headers["ETag"] == '"v2"' != tag
    again = client.get(url, headers={**api.read, "If-None-Match": fresh.headers["ETag"]})
    assert again.status_code == 304


def test_if_modified_since(api: Api, client: FlaskClient) -> None:
    url = api.create().headers["Location"]
    last_modified = client.get(url, headers=api.read).headers["Last-Modified"]
    resp = client.get(url, headers={**api.read, "If-Modified-Since": last_modified})
    assert resp.status_code == 304
    old = "Sun, 06 Nov 1994 08:49:37 GMT"
    assert client.get(url, headers={**api.read, "If-Modified-Since": old}).status_code == 200


def test_auth_and_errors_come_before_any_304(api: Api, client: FlaskClient) -> None:
    url = api.create().headers["Location"]
    assert client.get(url, headers={"If-None-Match": "*"}).status_code == 401
    missing = client.get(f"{BASE}/nope", headers={**api.read, "If-None-Match": "*"})
    assert missing.status_code == 404 and "ETag" not in missing.headers


def test_list_etag_follows_the_page(api: Api, client: FlaskClient) -> None:
    api.create()
    page = api.list()
    tag = page.headers["ETag"]
    assert page.headers["Cache-Control"] == "public, max-age=60"
    cached = client.get(BASE, headers={**api.read, "If-None-Match": tag})
    assert cached.status_code == 304 and cached.data == b""
    api.create(sku="SKU-002")  # a new product changes the page
    fresh = client.get(BASE, headers={**api.read, "If-None-Match": tag})
    assert fresh.status_code == 200 and len(fresh.get_json()["items"]) == 2
    assert fresh.headers["ETag"] != tag
    by_sku = client.get(BASE, query_string={"sku": "SKU-002"}, headers=api.read)
    assert by_sku.headers["ETag"] not in (tag, fresh.headers["ETag"])


def test_writes_still_use_the_same_version_tags(api: Api, client: FlaskClient) -> None:
    created = api.create()
    url = created.headers["Location"]
    assert "Cache-Control" not in created.headers  # only reads are cacheable
    tag = client.get(url, headers=api.read).headers["ETag"]
    weak = client.patch(url, json={"name": "x"}, headers={**api.write, "If-Match": f"W/{tag}"})
    assert weak.status_code == 412  # If-Match compares strongly
    ok = client.patch(url, json={"name": "x"}, headers={**api.write, "If-Match": tag})
    assert ok.status_code == 200


def test_max_age_is_configurable(tmp_path: Path, issuer: TestIssuer) -> None:
    settings = CatalogSettings.from_env(
        {"CATALOG_DATABASE_URL": sqlite_url(tmp_path / "c.db"), "CATALOG_CACHE_MAX_AGE": "0"}
    )
    init(settings)
    app = create_app(settings, verifier=issuer.verifier())
    try:
        client = app.test_client()
        api = Api(client, issuer)
        url = api.create().headers["Location"]
        assert client.get(url, headers=api.read).headers["Cache-Control"] == "public, no-cache"
    finally:
        deps(app).engine.dispose()
    with pytest.raises(ConfigError, match="CATALOG_CACHE_MAX_AGE"):
        CatalogSettings.from_env({"CATALOG_CACHE_MAX_AGE": "-1"})


def test_openapi_documents_caching(client: FlaskClient) -> None:
    doc = client.get("/openapi.json").get_json()
    get = doc["paths"][BASE + "/{product_id}"]["get"]
    assert get["responses"]["304"] == {"$ref": "#/components/responses/NotModified"}
    assert set(get["responses"]["200"]["headers"]) >= {"ETag", "Cache-Control", "Last-Modified"}
    assert {"$ref": "#/components/parameters/If-None-Match"} in get["parameters"]
    listing = doc["paths"][BASE]["get"]["responses"]
    assert "304" in listing and "Cache-Control" in listing["200"]["headers"]
    components = doc["components"]
    assert "NotModified" in components["responses"]
    assert {"ETag", "Cache-Control", "Last-Modified"} <= set(components["headers"])
