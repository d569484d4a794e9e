"""Authorization code + PKCE through the login + consent page, then refresh with rotation."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient

from .helpers import (
    authorize_url,
    basic,
    csrf_token,
    login_for_code,
    pkce,
    redirect_params,
    submit,
)


def exchange(
    client: FlaskClient, creds: dict[str, str], code: str, verifier: str, public: bool = False
) -> dict[str, object]:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": creds["redirect_uri"],
    }
    headers = {}
    if public:
        form["client_id"] = creds["public_client_id"]
    else:
        headers = basic(creds["client_id"], creds["client_secret"])
    resp = client.post("/oauth/token", data=form, headers=headers)
    return {"status": resp.status_code, **resp.get_json()}


def refresh(
    client: FlaskClient, creds: dict[str, str], token: str, public: bool = False
) -> dict[str, object]:
    form = {"grant_type": "refresh_token", "refresh_token": token}
    headers = {}
    if public:
        form["client_id"] = creds["public_client_id"]
    else:
        headers = basic(creds["client_id"], creds["client_secret"])
    resp = client.post("/oauth/token", data=form, headers=headers)
    return {"status": resp.status_code, **resp.get_json()}


def test_page_is_a_plain_form_with_csrf_and_consent_buttons(
    client: FlaskClient, creds: dict[str, str]
) -> None:
    _, challenge = pkce()
    url = authorize_url(
        creds["client_id"],
        creds["redirect_uri"],
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    page = client.get(url)
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert page.headers["X-Frame-Options"] == "DENY"
    assert '<form method="post">' in html
    assert csrf_token(page)
    for field in (
        'name="username"',
        'name="password"',
        'name="confirm" value="yes"',
        'name="confirm" value="no"',
    ):
        assert field in html
    assert "profile" in html and "catalog:read" in html  # the requested scopes are shown


def test_full_flow_confidential_client_then_refresh_rotation(
    client: FlaskClient, creds: dict[str, str]
) -> None:
    code, verifier = login_for_code(client, creds)
    tokens = exchange(client, creds, code, verifier)
    assert tokens["status"] == 200, tokens
    assert tokens["scope"] == "profile catalog:read"
    first_refresh = str(tokens["refresh_token"])

    me = client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.status_code == 200, me.get_json()
    assert me.get_json()["username"] == "demo"

    rotated = refresh(client, creds, first_refresh)
    assert rotated["status"] == 200, rotated
    assert rotated["refresh_token"] != first_refresh
    assert rotated["scope"] == "profile catalog:read"

    again = refresh(client, creds, str(rotated["refresh_token"]))
    assert again["status"] == 200
    replay = refresh(client, creds, first_refresh)  # the old refresh token is spent
    assert replay["status"] == 400 and replay["error"] == "invalid_grant"


def test_code_is_single_use(client: FlaskClient, creds: dict[str, str]) -> None:
    code, verifier = login_for_code(client, creds)
    assert exchange(client, creds, code, verifier)["status"] == 200
    second = exchange(client, creds, code, verifier)
    assert second["status"] == 400 and second["error"] == "invalid_grant"


def test_public_client_flow_with_pkce(client: FlaskClient, creds: dict[str, str]) -> None:
    code, verifier = login_for_code(client, creds, client_id=creds["public_client_id"])
    tokens = exchange(client, creds, code, verifier, public=True)
    assert tokens["status"] == 200, tokens
    rotated = refresh(client, creds, str(tokens["refresh_token"]), public=True)
    assert rotated["status"] == 200, rotated


def test_wrong_code_verifier_is_invalid_grant(client: FlaskClient, creds: dict[str, str]) -> None:
    code, _ = login_for_code(client, creds, client_id=creds["public_client_id"])
    other_verifier, _ = pkce()
    result = exchange(client, creds, code, other_verifier, public=True)
    assert result["status"] == 400 and result["error"] == "invalid_grant"


def test_public_client_must_send_a_code_challenge(
    client: FlaskClient, creds: dict[str, str]
) -> None:
    resp = client.get(authorize_url(creds["public_client_id"], creds["redirect_uri"]))
    params = redirect_params(resp)  # a known client and redirect URI: the client is told
    assert params["error"] == "invalid_request"
    assert params["state"] == "st-123"
    assert resp.headers["Location"].startswith(creds["redirect_uri"] + "?")


@pytest.mark.parametrize("method", ["plain", None])
def test_plain_or_missing_challenge_method_is_refused(
    client: FlaskClient, creds: dict[str, str], method: str | None
) -> None:
    verifier, _ = pkce()
    extra = {"code_challenge": verifier}  # what `plain` would send
    if method:
        extra["code_challenge_method"] = method
    for client_id in (creds["public_client_id"], creds["client_id"]):
        resp = client.get(authorize_url(client_id, creds["redirect_uri"], **extra))
        assert redirect_params(resp)["error"] == "invalid_request"


def test_public_client_cannot_skip_the_verifier(client: FlaskClient, creds: dict[str, str]) -> None:
    code, _ = login_for_code(client, creds, client_id=creds["public_client_id"])
    resp = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": creds["redirect_uri"],
            "client_id": creds["public_client_id"],
        },
    )
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://127.0.0.1:8765/callback/extra",
        "http://127.0.0.1:8765/callback?x=1",
        "http://127.0.0.1:8765/CALLBACK",
        "http://evil.test/callback",
    ],
)
def test_redirect_uri_must_match_exactly_and_is_never_followed(
    client: FlaskClient, creds: dict[str, str], redirect_uri: str
) -> None:
    _, challenge = pkce()
    url = authorize_url(
        creds["client_id"], redirect_uri, code_challenge=challenge, code_challenge_method="S256"
    )
    resp = client.get(url)
    assert resp.status_code == 400
    assert resp.mimetype == "application/problem+json"
    assert "Location" not in resp.headers
    assert resp.get_json()["error"] == "invalid_request"


def test_token_exchange_needs_the_same_redirect_uri(
    client: FlaskClient, creds: dict[str, str]
) -> None:
    code, verifier = login_for_code(client, creds)
    resp = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": "http://127.0.0.1:8765/other",
        },
        headers=basic(creds["client_id"], creds["client_secret"]),
    )
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_grant"


def test_unknown_client_gets_a_problem_not_a_redirect(client: FlaskClient) -> None:
    resp = client.get(authorize_url("nobody", "http://127.0.0.1:8765/callback"))
    assert resp.status_code == 400
    assert resp.mimetype == "application/problem+json"
    assert resp.get_json()["error"] == "invalid_client"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_non_ascii_in_the_request_is_a_problem_not_a_500(client: FlaskClient, method: str) -> None:
    """Authlib refuses to build an error description echoing `Ø`; that is the client's 400."""
    resp = client.open("/oauth/authorize?client_id=j&response_type=%C3%98F", method=method)
    assert resp.status_code == 400
    assert resp.mimetype == "application/problem+json"
    assert resp.get_json()["error"] == "invalid_request"


def test_post_without_csrf_token_is_rejected(client: FlaskClient, creds: dict[str, str]) -> None:
    _, challenge = pkce()
    url = authorize_url(
        creds["client_id"],
        creds["redirect_uri"],
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    client.get(url)  # a session exists, the token is just not sent back
    resp = client.post(
        url, data={"username": creds["username"], "password": creds["password"], "confirm": "yes"}
    )
    assert resp.status_code == 400
    assert resp.mimetype == "application/problem+json"
    assert "Location" not in resp.headers

    forged = client.post(
        url,
        data={
            "csrf_token": "forged",
            "username": creds["username"],
            "password": creds["password"],
            "confirm": "yes",
        },
    )
    assert forged.status_code == 400


def test_deny_redirects_with_access_denied(client: FlaskClient, creds: dict[str, str]) -> None:
    _, challenge = pkce()
    url = authorize_url(
        creds["client_id"],
        creds["redirect_uri"],
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    params = redirect_params(submit(client, url, "", "", confirm="no"))
    assert params["error"] == "access_denied" and params["state"] == "st-123"
    assert "code" not in params


def test_wrong_password_shows_the_form_again(client: FlaskClient, creds: dict[str, str]) -> None:
    _, challenge = pkce()
    url = authorize_url(
        creds["client_id"],
        creds["redirect_uri"],
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    resp = submit(client, url, creds["username"], "wrong-password")
    assert resp.status_code == 200
    assert "Invalid username or password" in resp.get_data(as_text=True)


def test_failed_logins_are_throttled_per_username_and_address(
    client: FlaskClient, creds: dict[str, str]
) -> None:
    _, challenge = pkce()
    url = authorize_url(
        creds["client_id"],
        creds["redirect_uri"],
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    for _ in range(5):
        assert submit(client, url, "Demo", "wrong-password").status_code == 200
    # Now even the right password is refused, without being checked.
    blocked = submit(client, url, creds["username"], creds["password"])
    assert blocked.status_code == 429
    assert blocked.mimetype == "application/problem+json"
    assert 0 < int(blocked.headers["Retry-After"]) <= 300

    # Another address, or another username from this address, is not affected.
    elsewhere = {"environ_base": {"REMOTE_ADDR": "10.9.9.9"}}
    other = submit(client, url, creds["username"], creds["password"], **elsewhere)
    assert other.status_code == 302
    assert submit(client, url, "someone", "wrong-password").status_code == 200


def test_scope_not_supported_is_redirected_as_invalid_scope(
    client: FlaskClient, creds: dict[str, str]
) -> None:
    _, challenge = pkce()
    url = "/oauth/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": creds["client_id"],
            "redirect_uri": creds["redirect_uri"],
            "scope": "admin",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    assert redirect_params(client.get(url))["error"] == "invalid_scope"
