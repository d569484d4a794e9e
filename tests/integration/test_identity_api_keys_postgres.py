"""`python -m services.identity api-keys ...` against a throwaway PostgreSQL database (ADR 0036):
create, list, rotate, revoke; what the `api_keys` table holds is the secret's SHA-256 digest,
never the key, read back with SQL."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from services.identity.__main__ import main

pytestmark = pytest.mark.postgres

PASSWORD = "a sturdy passphrase 7391"


@pytest.fixture
def cli(
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Any:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("IDENTITY_", "PORTICO_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("IDENTITY_DATABASE_URL", postgres_url)

    def call(*argv: str) -> Any:
        monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
        code = main(list(argv))
        out = capsys.readouterr()
        assert code == 0, out.err
        return json.loads(out.out)

    call("init")
    call("users", "add", "alice")
    return call


def _rows(url: str) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(text("SELECT * FROM api_keys"))]
    finally:
        engine.dispose()


def test_create_list_rotate_revoke_store_only_digests(cli: Any, postgres_url: str) -> None:
    made = cli("api-keys", "create", "--owner", "user:alice", "--scopes", "catalog:read")
    secret = made["api_key"].split("_", 2)[2]
    [row] = _rows(postgres_url)
    assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in json.dumps(row, default=str)
    assert made["api_key"] not in json.dumps(row, default=str)

    [listed] = cli("api-keys", "list")["api_keys"]
    assert listed["id"] == made["id"] and listed["scopes"] == ["catalog:read"]
    assert "hash" not in json.dumps(listed) and secret not in json.dumps(listed)

    rotated = cli("api-keys", "rotate", made["id"])
    new_secret = rotated["api_key"].split("_", 2)[2]
    [row] = _rows(postgres_url)
    assert row["secret_hash"] == hashlib.sha256(new_secret.encode()).hexdigest()
    assert row["version"] == 2 and row["rotated_at"] is not None

    revoked = cli("api-keys", "revoke", made["id"])
    assert revoked["revoked"] is True
    [row] = _rows(postgres_url)
    assert row["revoked"] is True and row["version"] == 3
    assert new_secret not in json.dumps(row, default=str)
