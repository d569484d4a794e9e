"""`python -m services.orders init`, and settings checked at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from chassis import ConfigError
from services.orders.__main__ import main
from services.orders.settings import OrdersSettings


def test_init_creates_the_default_database_idempotently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ORDERS_DATABASE_URL", raising=False)
    assert main(["init"]) == 0 and main(["init"]) == 0
    assert (tmp_path / "var/orders/orders.db").exists()


def test_bad_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ORDERS_PAYMENTS_URL", "ftp://x")
    assert main(["init"]) == 2
    assert "ORDERS_PAYMENTS_URL" in capsys.readouterr().err


def test_the_lease_must_outlast_a_step() -> None:
    with pytest.raises(ConfigError, match="ORDERS_SAGA_LEASE"):
        OrdersSettings.from_env({"ORDERS_SAGA_LEASE": "10", "ORDERS_PAYMENTS_TIMEOUT": "5"})
    ok = OrdersSettings.from_env({"ORDERS_SAGA_LEASE": "16", "ORDERS_PAYMENTS_TIMEOUT": "5"})
    assert ok.saga_lease == 16 and ok.port == 8104
