"""RFC 7009 revocation and RFC 7662 introspection for access and refresh tokens."""

from __future__ import annotations

import time

import pytest
from flask.testing import FlaskClient

from .helpers import basic, cc_token, login_for_code


def user_tokens(client: FlaskClient, creds: dict[str, str]) -> dict[str, str]:
    code, verifier = login_for_code(client, creds)
    resp = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": creds["redirect_uri"],
        },
        headers=basic(creds["client_id"], creds["client_secret"]),
    )
    assert resp.status_code == 200
    return resp.get_json()  # type: ignore[no-any-return]


def introspect(client: FlaskClient, creds: dict[str, str], token: str, **form: str) -> dict:  # type: ignore[type-arg]
    resp = client.post(
        "/oauth/introspect",
        data={"token": token, **form},
        headers=basic(creds["client_id"], creds["client_secret"]),
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()  # type: ignore[no-any-return]


def revoke(client: FlaskClient, creds: dict[str, str], token: str, **form: str) -> int:
    resp = client.post(
        "/oauth/revoke",
        data={"token": token, **form},
        headers=basic(creds["client_id"], creds["client_secret"]),
    )
    return resp.status_code


def test_introspection_of_an_active_access_token(
    client: FlaskClient, creds: dict[str, str]
) -> None:
    tokens = user_tokens(client, creds)
    info = introspect(client, creds, tokens["access_token"])
    assert info["active"] is True
    assert info["client_id"] == "portico-dev"
    assert info["scope"] == "profile catalog:read"
    assert info["username"] == "demo"
    assert info["token_type"] == "Bearer"
    assert {"sub", "exp", "iat", "iss", "aud", "jti"} <= set(info)


def test_revoked_access_token_is_inactive_and_refused(
    client: FlaskClient, creds: dict[str, str]
) -> None:
    tokens = user_tokens(client, creds)
    access = tokens["access_token"]
    assert revoke(client, creds, access, token_type_hint="access_token") == 200
    assert introspect(client, creds, access) == {"active": False}
    me = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {access}"})
    assert me.status_code == 401
    assert me.mimetype == "application/problem+json"
    # The refresh token of the same grant still works: revoking an access token is narrow.
    assert introspect(client, creds, tokens["refresh_token"])["active"] is True


def test_revoked_refresh_token_cannot_refresh_and_takes_its_access_token_along(
    client: FlaskClient, creds: dict[str, str]
) -> None:
    tokens = user_tokens(client, creds)
    # The hint is wrong on purpose: the server must still find it.
    assert revoke(client, creds, tokens["refresh_token"], token_type_hint="access_token") == 200
    info = introspect(client, creds, tokens["refresh_token"], token_type_hint="refresh_token")
    assert info == {"active": False}
    assert introspect(client, creds, tokens["access_token"]) == {"active": False}
    resp = client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=basic(creds["client_id"], creds["client_secret"]),
    )
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_grant"


def test_active_refresh_token_introspection(client: FlaskClient, creds: dict[str, str]) -> None:
    tokens = user_tokens(client, creds)
    info = introspect(client, creds, tokens["refresh_token"])
    assert info["active"] is True
    assert info["token_type"] == "refresh_token"
    assert info["username"] == "demo"


def test_client_credentials_token_can_be_revoked(
    client: FlaskClient, creds: dict[str, str]
) -> None:
    access = cc_token(client, creds)["access_token"]
    assert introspect(client, creds, access)["active"] is True
    assert revoke(client, creds, access) == 200
    assert introspect(client, creds, access) == {"active": False}


def test_expired_access_token_is_inactive(
    client: FlaskClient, creds: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import authlib.oauth2.rfc9068.token as generator

    real = time.time
    monkeypatch.setattr(generator.time, "time", lambda: real() - 3600)  # issued an hour ago
    access = cc_token(client, creds)["access_token"]
    monkeypatch.undo()
    assert introspect(client, creds, access) == {"active": False}


def test_unknown_tokens_are_inactive_and_revoking_them_is_fine(
    client: FlaskClient, creds: dict[str, str]
) -> None:
    assert introspect(client, creds, "not-a-token") == {"active": False}
    assert introspect(client, creds, "a.b.c") == {"active": False}
    assert revoke(client, creds, "not-a-token") == 200


def test_introspection_needs_a_confidential_client(
    client: FlaskClient, creds: dict[str, str]
) -> None:
    access = cc_token(client, creds)["access_token"]
    anonymous = client.post("/oauth/introspect", data={"token": access})
    assert anonymous.status_code == 401
    assert anonymous.get_json()["error"] == "invalid_client"
    public = client.post(
        "/oauth/introspect", data={"token": access, "client_id": creds["public_client_id"]}
    )
    assert public.status_code == 401


def test_a_client_cannot_revoke_another_clients_token(
    client: FlaskClient, creds: dict[str, str]
) -> None:
    access = cc_token(client, creds)["access_token"]
    resp = client.post(
        "/oauth/revoke", data={"token": access, "client_id": creds["public_client_id"]}
    )
    assert resp.status_code == 400
    assert introspect(client, creds, access)["active"] is True
