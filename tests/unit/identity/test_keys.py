"""Signing key rotation: publish first, sign after the delay, prune after the last expiry."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import jwt
import pytest
from flask.testing import FlaskClient

from chassis import TokenSettings, TokenVerifier
from services.identity.adapters.files import read_or_create_secret
from services.identity.adapters.keystore import KeyStore
from services.identity.app import create_app
from services.identity.domain.keys import EXPIRY_MARGIN, NoSigningKey
from services.identity.entrypoints.deps import deps
from services.identity.settings import IdentitySettings

from .conftest import AUDIENCE, ISSUER
from .helpers import cc_token


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def kids(store: KeyStore) -> list[str]:
    return [k["kid"] for k in store.jwks()["keys"]]


def test_rotation_publishes_at_once_signs_after_the_delay_and_prunes_late(
    tmp_path: Path,
) -> None:
    clock = Clock()
    store = KeyStore(tmp_path / "keys.json", token_ttl=900, activation_delay=15, clock=clock)
    with pytest.raises(NoSigningKey):
        store.signing_key()
    first = store.ensure()
    assert first is not None
    assert store.ensure() is None  # idempotent
    assert store.signing_key().kid == first.kid

    second = store.rotate()
    assert kids(store) == [first.kid, second.kid]  # published before it signs
    assert store.signing_key().kid == first.kid
    clock.now += 14.9
    assert store.signing_key().kid == first.kid
    clock.now += 0.2
    assert store.signing_key().kid == second.kid

    # The first key signed until second.activates_at; its last tokens expire 900 s later.
    clock.now = second.activates_at + 900 + EXPIRY_MARGIN - 1
    assert first.kid in kids(store)
    clock.now += 2
    assert kids(store) == [second.kid]
    third = store.rotate()  # rewriting the file prunes the expired key for good
    ring = store.ring()
    assert [k.kid for k in ring.keys] == [second.kid, third.kid]
    assert mode(store.path) == 0o600


def test_other_workers_see_a_rotation_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    worker_a = KeyStore(path, token_ttl=900, activation_delay=0)
    worker_b = KeyStore(path, token_ttl=900, activation_delay=0)
    worker_a.ensure()
    before = worker_b.signing_key().kid
    rotated = KeyStore(path, token_ttl=900, activation_delay=0).rotate()  # the CLI
    assert rotated.kid != before
    assert worker_a.signing_key().kid == rotated.kid
    assert worker_b.signing_key().kid == rotated.kid
    assert set(kids(worker_b)) == {before, rotated.kid}
    assert not list(tmp_path.glob(".keys.json.*"))  # no temp files left behind


def test_token_signed_before_rotation_still_verifies_and_new_tokens_use_the_new_key(
    client: FlaskClient, creds: dict[str, str], settings: IdentitySettings, app
) -> None:  # type: ignore[no-untyped-def]
    def jwks() -> dict:  # type: ignore[type-arg]
        return client.get("/.well-known/jwks.json").get_json()  # type: ignore[no-any-return]

    policy = TokenSettings(issuer=ISSUER, audience=AUDIENCE).policy()
    old = cc_token(client, creds)["access_token"]
    old_kid = jwt.get_unverified_header(old)["kid"]
    TokenVerifier(policy, jwks).verify(old)  # a verifier that cached the old JWKS

    # `python -m services.identity rotate-keys`, with the delay at 0 for the test.
    new_key = KeyStore(settings.keys_file, token_ttl=900, activation_delay=0).rotate()

    new = cc_token(client, creds)["access_token"]
    assert jwt.get_unverified_header(new)["kid"] == new_key.kid != old_kid
    fresh = TokenVerifier(policy, jwks)
    assert fresh.verify(old).client_id == "portico-dev"
    assert fresh.verify(new).client_id == "portico-dev"
    assert {old_kid, new_key.kid} <= {k["kid"] for k in jwks()["keys"]}


def test_with_a_delay_the_new_key_is_published_but_not_yet_used(
    settings: IdentitySettings, creds: dict[str, str]
) -> None:
    app = create_app(dataclasses.replace(settings, key_activation_delay=3600))
    try:
        client = app.test_client()
        old_kid = jwt.get_unverified_header(cc_token(client, creds)["access_token"])["kid"]
        new_key = deps(app).keystore.rotate()
        published = {k["kid"] for k in client.get("/.well-known/jwks.json").get_json()["keys"]}
        assert {old_kid, new_key.kid} <= published
        token = cc_token(client, creds)["access_token"]
        assert jwt.get_unverified_header(token)["kid"] == old_kid
    finally:
        deps(app).engine.dispose()


def test_rotating_an_empty_store_activates_at_once(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "k.json", token_ttl=900, activation_delay=3600)
    key = store.rotate()
    assert store.signing_key().kid == key.kid


def test_secret_key_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "secret-key"
    first = read_or_create_secret(path)
    assert len(first) >= 32
    assert read_or_create_secret(path) == first
    assert mode(path) == 0o600


def test_app_shares_the_generated_secret_key(
    settings: IdentitySettings, creds: dict[str, str]
) -> None:
    apps = [create_app(settings), create_app(settings)]  # two gunicorn workers
    try:
        assert (
            apps[0].secret_key
            == apps[1].secret_key
            == Path(settings.secret_key_file).read_text().strip()
        )
        explicit = create_app(dataclasses.replace(settings, secret_key="from-the-environment"))
        assert explicit.secret_key == "from-the-environment"
        apps.append(explicit)
    finally:
        for app in apps:
            deps(app).engine.dispose()
