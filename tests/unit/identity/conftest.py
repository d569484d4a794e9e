"""Identity app against a temporary SQLite file, key file and secret file."""

from __future__ import annotations

import functools
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from chassis import TokenSettings, create_db_engine
from services.identity.app import create_app
from services.identity.domain import passwords as passwords_module
from services.identity.domain.passwords import Passwords
from services.identity.entrypoints.deps import deps
from services.identity.service_layer.setup import init_storage, seed_dev, write_credentials
from services.identity.settings import IdentitySettings

ISSUER = "http://gateway.test"
AUDIENCE = "portico-api"


def make_settings(tmp_path: Path, **overrides: object) -> IdentitySettings:
    values: dict[str, object] = {
        "database_url": f"sqlite:///{tmp_path / 'identity.db'}",
        "keys_file": str(tmp_path / "signing-keys.json"),
        "secret_key_file": str(tmp_path / "secret-key"),
        "key_activation_delay": 0.0,
        "tokens": TokenSettings(issuer=ISSUER, audience=AUDIENCE, jwks_url="http://unused.test/"),
    }
    values.update(overrides)
    return IdentitySettings(**values)  # type: ignore[arg-type]


def prepare(settings: IdentitySettings, credentials_file: Path) -> dict[str, str]:
    """What `python -m services.identity init --seed-dev` does."""
    engine = create_db_engine(settings.database_url)
    try:
        init_storage(settings, engine)
        with Session(engine) as session:
            credentials, changed = seed_dev(session, Passwords(), settings, credentials_file)
            session.commit()
        if changed:
            write_credentials(credentials_file, credentials)
        return credentials
    finally:
        engine.dispose()


@pytest.fixture(scope="session", autouse=True)
def cheap_argon2() -> Iterator[None]:
    """argon2id at its cheapest parameters for the unit tests, which check what is hashed and
    verified, not what it costs: argon2-cffi's defaults (what identity runs with) take ~0.15 s
    a hash here, a third of the run. Integration and end-to-end tests keep the real cost."""
    cheap = functools.partial(PasswordHasher, time_cost=1, memory_cost=8, parallelism=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(passwords_module, "PasswordHasher", cheap)
        yield


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """One `init --seed-dev` per run (RSA key generation and argon2 hashing are slow); each
    test gets a copy of its files.
    """
    base = tmp_path_factory.mktemp("identity-template")
    return base, prepare(make_settings(base), base / "dev-credentials.json")


@pytest.fixture
def settings(tmp_path: Path, prepared: tuple[Path, dict[str, str]]) -> IdentitySettings:
    shutil.copytree(prepared[0], tmp_path, dirs_exist_ok=True)
    return make_settings(tmp_path)


@pytest.fixture
def creds(prepared: tuple[Path, dict[str, str]]) -> dict[str, str]:
    return dict(prepared[1])


@pytest.fixture
def app(settings: IdentitySettings, creds: dict[str, str]) -> Iterator[Flask]:
    app = create_app(settings)
    yield app
    deps(app).engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
