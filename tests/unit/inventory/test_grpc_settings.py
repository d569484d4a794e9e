"""INVENTORY_GRPC_PORT and INVENTORY_GRPC_GRACE: defaults, 0 for no gRPC, bad values refused."""

from __future__ import annotations

import pytest

from chassis import ConfigError
from services.inventory.settings import InventorySettings


def test_defaults_and_disabling() -> None:
    settings = InventorySettings.from_env({})
    assert (settings.grpc_port, settings.grpc_grace) == (50061, 5.0)
    assert InventorySettings.from_env({"INVENTORY_GRPC_PORT": "0"}).grpc_port == 0


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("INVENTORY_GRPC_PORT", "70000", "must be 0..65535"),
        ("INVENTORY_GRPC_PORT", "-1", "must be 0..65535"),
        ("INVENTORY_GRPC_PORT", "", "invalid literal"),
        ("INVENTORY_GRPC_GRACE", "-2", "must not be negative"),
    ],
)
def test_bad_values_are_refused_by_name(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"{name}='{value}': .*{message}"):
        InventorySettings.from_env({name: value})
