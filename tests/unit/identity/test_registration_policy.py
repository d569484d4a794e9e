"""Self-registration: the password policy beyond length, and the per-address rate limit."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from services.identity.adapters.files import COMMON_PASSWORDS_FILE, read_lines
from services.identity.adapters.orm import RegistrationAttempt
from services.identity.adapters.repository import SqlUserRepository
from services.identity.app import create_app
from services.identity.domain.passwords import PasswordPolicy
from services.identity.domain.throttle import Throttle
from services.identity.entrypoints.deps import deps
from services.identity.service_layer.users import RegistrationThrottled, admit_registration
from services.identity.settings import IdentitySettings
from tools import common_passwords


def user(name: str, password: str = "plum tree at dusk 42", **extra: str) -> dict[str, str]:
    return {"username": name, "email": f"{name}@example.com", "password": password, **extra}


def assert_refuses_password(resp: object) -> None:
    assert resp.status_code == 422, resp.get_json()  # type: ignore[attr-defined]
    assert resp.mimetype == "application/problem+json"  # type: ignore[attr-defined]
    body = resp.get_json()  # type: ignore[attr-defined]
    assert set(body["errors"]) == {"password"}, body
    assert "password" in body["detail"]


@pytest.mark.parametrize(
    "password",
    ["password", "Password", "PASSWORD ", "password1", "12345678", "iloveyou", "qwertyuiop"],
)
def test_common_passwords_are_refused(client: FlaskClient, password: str) -> None:
    resp = client.post("/api/v1/users", json=user("walter", password))
    assert_refuses_password(resp)
    assert "most commonly used" in resp.get_json()["errors"]["password"][0]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (user("charlie", "charlie1"), "username"),
        (user("charlie", "CHARLIE!"), "username"),
        (user("charlie", "my-CHARLIE-password-2024"), "username"),
        (
            {"username": "walter", "email": "c.brown@example.com", "password": "c.brown@home!"},
            "e-mail address",
        ),
        (
            {"username": "walter", "email": "sun.flower@example.com", "password": "Sun.Flower"},
            "e-mail address",
        ),
    ],
)
def test_passwords_holding_the_username_or_email_are_refused(
    client: FlaskClient, body: dict[str, str], reason: str
) -> None:
    resp = client.post("/api/v1/users", json=body)
    assert resp.status_code == 422
    assert set(resp.get_json()["errors"]) == {"password"}
    assert any(reason in message for message in resp.get_json()["errors"]["password"])


def test_a_short_local_part_forbids_only_itself(client: FlaskClient) -> None:
    body = {"username": "walter", "email": "ab@example.com", "password": "lab notebook 99"}
    assert client.post("/api/v1/users", json=body).status_code == 201


def test_a_good_password_is_accepted(client: FlaskClient) -> None:
    assert client.post("/api/v1/users", json=user("walter")).status_code == 201


def test_the_shipped_list_is_djangos_pinned_list() -> None:
    assert common_passwords.main(["--check"]) == 0
    words = read_lines(COMMON_PASSWORDS_FILE)
    assert len(words) > 19_000
    assert words[:4] == ["123456", "123456789", "qwerty", "password"]


def test_policy_rules() -> None:
    policy = PasswordPolicy.from_lines(["Password", "  letmein  ", ""])
    assert policy.common == frozenset({"password", "letmein"})
    check = policy.problems
    assert check("LetMeIn", username="bob", email="x@y.z") == [
        "is one of the most commonly used passwords"
    ]
    assert check("bobcat-jumps-high", username="bob", email="x@y.z") == ["contains the username"]
    assert check("xy", username="bob", email="xy@y.z") == ["contains the e-mail address"]
    assert check("a long and fine passphrase", username="bob", email="xy@y.z") == []


@pytest.fixture
def limited(settings: IdentitySettings, creds: dict[str, str]) -> Iterator[Flask]:
    app = create_app(dataclasses.replace(settings, register_max_attempts=3, register_window=600))
    yield app
    deps(app).engine.dispose()


def test_registration_is_rate_limited_per_address(limited: Flask) -> None:
    client = limited.test_client()
    assert client.post("/api/v1/users", json=user("user1")).status_code == 201
    assert client.post("/api/v1/users", json=user("user1")).status_code == 409  # counts too
    assert client.post("/api/v1/users", json=user("user2")).status_code == 201

    blocked = client.post("/api/v1/users", json=user("user3"))
    assert blocked.status_code == 429
    assert blocked.mimetype == "application/problem+json"
    assert blocked.get_json()["status"] == 429
    assert 0 < int(blocked.headers["Retry-After"]) <= 600

    elsewhere = {"environ_base": {"REMOTE_ADDR": "10.9.9.9"}}
    assert client.post("/api/v1/users", json=user("user3"), **elsewhere).status_code == 201

    with deps(limited).sessions() as session:
        counted = session.scalars(select(RegistrationAttempt.ip)).all()
    assert sorted(counted) == ["10.9.9.9", "127.0.0.1", "127.0.0.1", "127.0.0.1"]


def test_refused_requests_do_not_use_up_the_allowance(limited: Flask) -> None:
    client = limited.test_client()
    for _ in range(5):
        assert client.post("/api/v1/users", json=user("user1", "password")).status_code == 422
        assert client.post("/api/v1/users", json={"username": "x"}).status_code == 422
    assert client.post("/api/v1/users", json=user("user1")).status_code == 201


def test_behind_proxies_the_forwarded_address_is_the_key(
    settings: IdentitySettings, creds: dict[str, str]
) -> None:
    app = create_app(
        dataclasses.replace(settings, register_max_attempts=1, register_window=600, proxy_count=1)
    )
    try:
        client = app.test_client()

        def post(name: str, forwarded_for: str) -> int:
            headers = {"X-Forwarded-For": forwarded_for}
            return client.post("/api/v1/users", json=user(name), headers=headers).status_code

        assert post("user1", "198.51.100.7") == 201
        assert post("user2", "198.51.100.8") == 201  # same proxy, another client
        assert post("user3", "198.51.100.7") == 429
        # A client cannot escape by prepending its own X-Forwarded-For entry.
        assert post("user4", "203.0.113.1, 198.51.100.7") == 429
    finally:
        deps(app).engine.dispose()


def test_attempts_age_out_of_the_window(app: Flask) -> None:
    throttle = Throttle(limit=2, window=100)
    with deps(app).sessions() as session:
        users = SqlUserRepository(session)
        admit_registration(users, throttle, ip="192.0.2.1", now=1000)
        admit_registration(users, throttle, ip="192.0.2.1", now=1010)
        with pytest.raises(RegistrationThrottled) as refused:
            admit_registration(users, throttle, ip="192.0.2.1", now=1050)
        assert refused.value.retry_after == 50
        admit_registration(users, throttle, ip="192.0.2.1", now=1101)  # 1000 aged out
        times = session.scalars(select(RegistrationAttempt.at)).all()
        assert sorted(times) == [1010, 1101]  # the aged-out attempt was pruned
