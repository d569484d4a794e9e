"""`make up` gives inventory's gRPC API 50061; stacks on free ports give it a free one too."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.stack import DEFAULT_PORTS, INVENTORY_GRPC_PORT, Stack


@pytest.fixture(autouse=True)
def _unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INVENTORY_GRPC_PORT", raising=False)


def test_the_default_stack_uses_the_documented_port(tmp_path: Path) -> None:
    assert Stack(tmp_path).env()["INVENTORY_GRPC_PORT"] == str(INVENTORY_GRPC_PORT) == "50061"


def test_a_stack_on_other_ports_gets_a_free_one_and_keeps_it(tmp_path: Path) -> None:
    stack = Stack(tmp_path, ports={**DEFAULT_PORTS, "inventory": 18103})
    port = stack.env()["INVENTORY_GRPC_PORT"]
    assert port != "50061" and stack.env()["INVENTORY_GRPC_PORT"] == port


def test_the_variable_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (
        Stack(tmp_path, extra_env={"INVENTORY_GRPC_PORT": "0"}).env()["INVENTORY_GRPC_PORT"] == "0"
    )
    monkeypatch.setenv("INVENTORY_GRPC_PORT", "50999")
    assert Stack(tmp_path).env()["INVENTORY_GRPC_PORT"] == "50999"


def test_orders_calls_the_stacks_own_inventory_over_grpc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORDERS_INVENTORY_TRANSPORT", raising=False)
    env = Stack(tmp_path, ports={**DEFAULT_PORTS, "inventory": 18103}).env()
    assert env["ORDERS_INVENTORY_GRPC_TARGETS"] == f"127.0.0.1:{env['INVENTORY_GRPC_PORT']}"
    assert "ORDERS_INVENTORY_TRANSPORT" not in env  # the default: grpc
    assert Stack(tmp_path).env()["ORDERS_INVENTORY_GRPC_TARGETS"] == "127.0.0.1:50061"
    # inventory without gRPC: orders keeps to REST
    without = Stack(tmp_path, extra_env={"INVENTORY_GRPC_PORT": "0"}).env()
    assert without["ORDERS_INVENTORY_TRANSPORT"] == "rest"
