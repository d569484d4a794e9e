"""The committed `portico_proto/` is what `make proto` generates from `proto/` (ADR 0025).

Regenerates with the pinned grpcio-tools into a temporary folder and compares byte for byte:
an edited `.proto` without `make proto`, a hand-edited generated file, a stale file left behind
or a different grpcio-tools all fail here, naming the files.
"""

from __future__ import annotations

from pathlib import Path

from tools.protogen import DEFAULT_OUT, SUFFIXES, generate, proto_files


def committed() -> dict[Path, bytes]:
    return {
        p.relative_to(DEFAULT_OUT): p.read_bytes()
        for p in sorted(DEFAULT_OUT.rglob("*"))
        if p.name.endswith(SUFFIXES)
    }


def test_the_committed_code_is_a_fresh_generation(tmp_path: Path) -> None:
    assert proto_files() == [Path("portico/inventory/v1/inventory.proto")]  # one place
    fresh = {rel: (tmp_path / rel).read_bytes() for rel in generate(tmp_path)}
    have = committed()
    assert sorted(fresh) == sorted(have), "run `make proto`: the generated files differ"
    stale = [str(rel) for rel in fresh if fresh[rel] != have[rel]]
    assert not stale, f"run `make proto`: {stale} differ from a fresh generation"


def test_the_stubs_import_the_package_they_live_in() -> None:
    stubs = (DEFAULT_OUT / "inventory/v1/inventory_pb2_grpc.py").read_text()
    assert "from portico_proto.inventory.v1 import inventory_pb2" in stubs
    assert "from portico." not in stubs
