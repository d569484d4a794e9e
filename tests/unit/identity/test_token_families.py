"""RFC 9700 replay defences: a reused refresh token or a replayed authorization code revokes
every token descended from the same grant (its family), and PKCE is required of every client.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from services.identity.adapters import oauth2
from services.identity.adapters.orm import (
    AuthorizationCode,
    SpentAuthorizationCode,
    Token,
    TokenFamily,
)
from services.identity.entrypoints.deps import deps

from .helpers import authorize_url, basic, login_for_code, pkce, redirect_params

Creds = dict[str, str]


def _auth(creds: Creds, public: bool) -> tuple[dict[str, str], dict[str, str]]:
    if public:
        return {"client_id": creds["public_client_id"]}, {}
    return {}, basic(creds["client_id"], creds["client_secret"])


def exchange(
    client: FlaskClient, creds: Creds, code: str, verifier: str, public: bool = False
) -> tuple[int, dict[str, Any]]:
    extra, headers = _auth(creds, public)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": creds["redirect_uri"],
        **extra,
    }
    resp = client.post("/oauth/token", data=form, headers=headers)
    return resp.status_code, resp.get_json()


def refresh(
    client: FlaskClient, creds: Creds, token: str, public: bool = False
) -> tuple[int, dict[str, Any]]:
    extra, headers = _auth(creds, public)
    form = {"grant_type": "refresh_token", "refresh_token": token, **extra}
    resp = client.post("/oauth/token", data=form, headers=headers)
    return resp.status_code, resp.get_json()


def signed_in(client: FlaskClient, creds: Creds, public: bool = False) -> dict[str, Any]:
    cid = creds["public_client_id"] if public else None
    code, verifier = login_for_code(client, creds, client_id=cid)
    status, tokens = exchange(client, creds, code, verifier, public)
    assert status == 200, tokens
    return tokens


def active(client: FlaskClient, creds: Creds, token: str) -> bool:
    resp = client.post(
        "/oauth/introspect",
        data={"token": token},
        headers=basic(creds["client_id"], creds["client_secret"]),
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return bool(resp.get_json()["active"])


def me_status(client: FlaskClient, access_token: str) -> int:
    resp = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {access_token}"})
    return resp.status_code


@pytest.mark.parametrize("public", [False, True], ids=["confidential", "public"])
def test_reusing_a_rotated_refresh_token_revokes_the_family(
    client: FlaskClient, creds: Creds, public: bool
) -> None:
    first = signed_in(client, creds, public)
    status, second = refresh(client, creds, first["refresh_token"], public)
    assert status == 200, second
    assert me_status(client, second["access_token"]) == 200

    status, reuse = refresh(client, creds, first["refresh_token"], public)  # R1 again
    assert status == 400 and reuse["error"] == "invalid_grant"
    assert "revoked" in reuse["error_description"]

    status, after = refresh(client, creds, second["refresh_token"], public)  # R2 is gone too
    assert status == 400 and after["error"] == "invalid_grant"
    for token in (first["access_token"], second["access_token"], second["refresh_token"]):
        assert not active(client, creds, token)
    assert me_status(client, second["access_token"]) == 401
    assert me_status(client, first["access_token"]) == 401


def test_the_family_spans_every_rotation_and_no_other_grant(
    client: FlaskClient, creds: Creds
) -> None:
    other = signed_in(client, creds)  # another sign-in of the same user: another family
    t1 = signed_in(client, creds)
    t2 = refresh(client, creds, t1["refresh_token"])[1]
    t3 = refresh(client, creds, t2["refresh_token"])[1]

    status, reuse = refresh(client, creds, t2["refresh_token"])  # a middle generation
    assert status == 400 and reuse["error"] == "invalid_grant"
    for tokens in (t1, t2, t3):
        assert not active(client, creds, tokens["access_token"])
    assert refresh(client, creds, t3["refresh_token"])[0] == 400

    assert active(client, creds, other["access_token"])
    assert me_status(client, other["access_token"]) == 200
    assert refresh(client, creds, other["refresh_token"])[0] == 200


def test_revoking_a_refresh_token_revokes_its_family(client: FlaskClient, creds: Creds) -> None:
    """RFC 7009 section 2.1: with the refresh token go the access tokens of the same grant."""
    other = signed_in(client, creds)
    t1 = signed_in(client, creds)
    t2 = refresh(client, creds, t1["refresh_token"])[1]
    auth = basic(creds["client_id"], creds["client_secret"])
    form = {"token": t2["refresh_token"], "token_type_hint": "refresh_token"}
    assert client.post("/oauth/revoke", data=form, headers=auth).status_code == 200
    assert not active(client, creds, t1["access_token"])
    assert not active(client, creds, t2["access_token"])
    assert refresh(client, creds, t2["refresh_token"])[1]["error"] == "invalid_grant"
    assert active(client, creds, other["access_token"])  # another sign-in is untouched


def test_an_expired_refresh_token_is_refused_without_revoking_anything(
    app: Flask, client: FlaskClient, creds: Creds
) -> None:
    tokens = signed_in(client, creds)
    with deps(app).sessions() as session:
        row = session.scalars(select(Token)).all()[-1]
        row.refresh_expires_at = 1.0
        session.commit()
    status, body = refresh(client, creds, tokens["refresh_token"])
    assert status == 400 and body["error"] == "invalid_grant"
    assert active(client, creds, tokens["access_token"])  # expiry is no sign of theft


@pytest.mark.parametrize("public", [False, True], ids=["confidential", "public"])
def test_replaying_a_code_revokes_the_tokens_issued_from_it(
    client: FlaskClient, creds: Creds, public: bool
) -> None:
    cid = creds["public_client_id"] if public else None
    code, verifier = login_for_code(client, creds, client_id=cid)
    status, first = exchange(client, creds, code, verifier, public)
    assert status == 200, first
    status, rotated = refresh(client, creds, first["refresh_token"], public)
    assert status == 200, rotated

    status, replay = exchange(client, creds, code, verifier, public)
    assert status == 400 and replay["error"] == "invalid_grant"
    assert "revoked" in replay["error_description"]
    for token in (first["access_token"], rotated["access_token"]):
        assert not active(client, creds, token)
        assert me_status(client, token) == 401
    assert refresh(client, creds, rotated["refresh_token"], public)[0] == 400


def test_a_replay_with_a_wrong_verifier_still_revokes(client: FlaskClient, creds: Creds) -> None:
    code, verifier = login_for_code(client, creds)
    tokens = exchange(client, creds, code, verifier)[1]
    status, replay = exchange(client, creds, code, pkce()[0])
    assert status == 400 and replay["error"] == "invalid_grant"
    assert not active(client, creds, tokens["access_token"])


def test_concurrent_exchange_of_one_code_revokes_the_winner_too(
    app: Flask, client: FlaskClient, creds: Creds, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two exchanges race: the second one's delete finds no row (the first committed in
    between). The loser issues nothing, and the winner's tokens are revoked.
    """
    code, verifier = login_for_code(client, creds)
    winner: dict[str, Any] = {}
    original = oauth2.AuthorizationCodeGrant.authenticate_user

    def racing(grant: Any, authorization_code: Any) -> Any:
        if not winner:  # the outer (slower) request: let another one win meanwhile
            winner["response"] = None  # the inner request passes straight through
            winner["response"] = exchange(app.test_client(), creds, code, verifier)
        return original(grant, authorization_code)

    monkeypatch.setattr(oauth2.AuthorizationCodeGrant, "authenticate_user", racing)
    status, loser = exchange(client, creds, code, verifier)
    assert status == 400 and loser["error"] == "invalid_grant"
    won_status, won = winner["response"]
    assert won_status == 200, won
    assert not active(client, creds, won["access_token"])
    with deps(app).sessions() as session:
        assert len(session.scalars(select(TokenFamily)).all()) == 1  # the loser saved nothing


def test_concurrent_refresh_with_one_token_revokes_the_family(
    app: Flask, client: FlaskClient, creds: Creds, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = signed_in(client, creds)
    winner: dict[str, Any] = {}
    original = oauth2.RefreshTokenGrant.authenticate_user

    def racing(grant: Any, refresh_token: Any) -> Any:
        if not winner:
            winner["response"] = None
            winner["response"] = refresh(app.test_client(), creds, tokens["refresh_token"])
        return original(grant, refresh_token)

    monkeypatch.setattr(oauth2.RefreshTokenGrant, "authenticate_user", racing)
    status, loser = refresh(client, creds, tokens["refresh_token"])
    assert status == 400 and loser["error"] == "invalid_grant"
    won_status, won = winner["response"]
    assert won_status == 200, won
    assert not active(client, creds, won["access_token"])
    assert not active(client, creds, tokens["access_token"])


def test_spent_codes_are_remembered_and_pruned(
    app: Flask, client: FlaskClient, creds: Creds
) -> None:
    code, verifier = login_for_code(client, creds)
    exchange(client, creds, code, verifier)
    sessions = deps(app).sessions
    with sessions() as session:
        spent = session.scalars(select(SpentAuthorizationCode)).one()
        spent.spent_at = 1.0  # long before any refresh token issued from it could live
        session.commit()
    code, verifier = login_for_code(client, creds)
    exchange(client, creds, code, verifier)
    with sessions() as session:
        assert len(session.scalars(select(SpentAuthorizationCode)).all()) == 1


def test_client_credentials_tokens_have_no_family(
    app: Flask, client: FlaskClient, creds: Creds
) -> None:
    resp = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers=basic(creds["client_id"], creds["client_secret"]),
    )
    assert resp.status_code == 200
    with deps(app).sessions() as session:
        assert session.scalars(select(TokenFamily)).all() == []


def test_confidential_client_must_send_a_code_challenge(client: FlaskClient, creds: Creds) -> None:
    resp = client.get(authorize_url(creds["client_id"], creds["redirect_uri"]))
    params = redirect_params(resp)  # a known client and redirect URI: the client is told
    assert params["error"] == "invalid_request"
    assert "code_challenge" in params["error_description"]
    assert params["state"] == "st-123"


def test_a_code_issued_without_pkce_is_not_exchanged(
    app: Flask, client: FlaskClient, creds: Creds
) -> None:
    """A code from before PKCE was required (stored without a challenge) is refused."""
    code, _ = login_for_code(client, creds)
    with deps(app).sessions() as session:
        for row in session.scalars(select(AuthorizationCode)):
            row.code_challenge = None
            row.code_challenge_method = None
        session.commit()
    resp = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": creds["redirect_uri"],
        },
        headers=basic(creds["client_id"], creds["client_secret"]),
    )
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_grant"
