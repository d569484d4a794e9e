"""identity's own /openapi.json: users and OAuth endpoints, with the rules the code enforces."""

from __future__ import annotations

import re

from flask.testing import FlaskClient

from services.identity.schemas import USERNAME_PATTERN


def test_users_and_oauth_endpoints_are_documented(client: FlaskClient) -> None:
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"] == "3.1.0"
    for path, method in [
        ("/api/v1/users", "post"),
        ("/api/v1/users/me", "get"),
        ("/oauth/token", "post"),
        ("/oauth/introspect", "post"),
        ("/oauth/revoke", "post"),
        ("/oauth/authorize", "get"),
        ("/oauth/authorize", "post"),
        ("/.well-known/jwks.json", "get"),
        ("/.well-known/oauth-authorization-server", "get"),
    ]:
        assert method in doc["paths"][path], (path, method)
    register = doc["paths"]["/api/v1/users"]["post"]["responses"]
    assert {"201", "400", "409", "413", "415", "422", "429"} <= set(register)
    token = doc["paths"]["/oauth/token"]["post"]
    assert token["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OAuthError"
    }
    assert "application/x-www-form-urlencoded" in token["requestBody"]["content"]


def test_the_username_rule_is_the_documented_one(client: FlaskClient) -> None:
    username = client.get("/openapi.json").get_json()["components"]["schemas"]["Register"]
    rule = username["properties"]["username"]
    assert (rule["pattern"], rule["minLength"], rule["maxLength"]) == (USERNAME_PATTERN, 3, 32)
    assert username["additionalProperties"] is False
    bad = client.post(
        "/api/v1/users",
        json={"username": "no spaces", "email": "a@example.com", "password": "x" * 12},
    )
    assert bad.status_code == 422 and not re.match(USERNAME_PATTERN, "no spaces")
