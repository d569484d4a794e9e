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
