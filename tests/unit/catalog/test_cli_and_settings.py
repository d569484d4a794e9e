from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select

from chassis import ConfigError, create_db_engine, sqlite_url
from services.catalog.__main__ import main
from services.catalog.adapters.orm import products
from services.catalog.app import create_app
from services.catalog.settings import CatalogSettings
from tests.support.migrations import migrated
from tests.support.tokens import TestIssuer


def count(url: str) -> int:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(products)).scalar_one())
    finally:
        engine.dispose()


def test_init_is_idempotent_and_seeds_only_an_empty_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = sqlite_url(tmp_path / "cli.db")
    monkeypatch.setenv("CATALOG_DATABASE_URL", url)
    assert main(["init"]) == 0
    assert main(["init"]) == 0
    assert count(url) == 0
    assert main(["init", "--seed-demo"]) == 0
    seeded = count(url)
    assert seeded >= 20
    assert main(["init", "--seed-demo"]) == 0
    assert count(url) == seeded
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["seeded"] for line in lines] == [0, 0, seeded, 0]


def test_init_reports_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CATALOG_DATABASE_URL", "mysql://nope")
    assert main(["init"]) == 2
    assert "CATALOG_DATABASE_URL" in capsys.readouterr().err


def test_settings_from_env() -> None:
    assert CatalogSettings.from_env({}).database_url == "sqlite:///var/catalog/catalog.db"
    s = CatalogSettings.from_env(
        {"CATALOG_DATABASE_URL": "postgresql://u@h/db", "CATALOG_LOG_LEVEL": "debug"}
    )
    assert (s.database_url, s.log_level) == ("postgresql://u@h/db", "debug")
    with pytest.raises(ConfigError, match=r"CATALOG_LOG_LEVEL.*CATALOG_MAX_BODY_BYTES"):
        CatalogSettings.from_env({"CATALOG_LOG_LEVEL": "loud", "CATALOG_MAX_BODY_BYTES": "big"})


def test_a_release_marks_every_answer(tmp_path: Path) -> None:
    """CATALOG_RELEASE: what tells a gateway split's canary answers from the stable side's."""
    assert CatalogSettings.from_env({}).release is None
    assert CatalogSettings.from_env({"CATALOG_RELEASE": "2.1-rc1"}).release == "2.1-rc1"
    with pytest.raises(ConfigError, match="CATALOG_RELEASE"):
        CatalogSettings.from_env({"CATALOG_RELEASE": "two\r\nX-Evil: 1"})
    url = sqlite_url(tmp_path / "release.db")
    migrated("catalog", url)
    for release in (None, "2"):
        settings = CatalogSettings(database_url=url, relay=False, purge_interval=0, release=release)
        app = create_app(settings, verifier=TestIssuer().verifier())
        resp = app.test_client().get("/health/live")
        assert resp.headers.get("X-Catalog-Release") == release
