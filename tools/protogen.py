"""Python code for the `.proto` files under `proto/`, generated into `portico_proto/`.

    python -m tools.protogen [--out DIR]     # or: make proto

protoc runs in-process from the pinned grpcio-tools (`grpc_tools.protoc`), with messages
(`_pb2.py`), their types (`_pb2.pyi`) and gRPC stubs (`_pb2_grpc.py`). The proto packages are
`portico.<service>.v<N>`; their code lives under `portico_proto.<service>.v<N>` (no top-level
`portico` package to clash with the project's name), so the stubs' `from portico.` imports are
rewritten to `from portico_proto.`. The `__init__.py` files are written by hand, not here.

`generate(out)` is also what tests/unit/test_proto_generated.py runs, into a temporary folder,
to fail when the committed code differs from a fresh generation.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_PACKAGE = "portico"  # proto/portico/... -> package portico.*
PY_PACKAGE = "portico_proto"
DEFAULT_OUT = ROOT / PY_PACKAGE
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
_IMPORT = re.compile(rf"^from {PROTO_PACKAGE}\.", re.MULTILINE)


def proto_files() -> list[Path]:
    """Every `.proto` under proto/, relative to it, in a stable order."""
    return sorted(p.relative_to(PROTO_ROOT) for p in PROTO_ROOT.rglob("*.proto"))


def generate(out: Path) -> list[Path]:
    """Generate into `out` (`out/<service>/v<N>/...`); the files written, relative to `out`."""
    from grpc_tools import protoc  # only codegen needs grpcio-tools (a dev dependency)

    include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(p) for p in proto_files()),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed (its message is above)")
        base = Path(tmp) / PROTO_PACKAGE
        for path in sorted(base.rglob("*")):
            if not path.name.endswith(SUFFIXES):
                continue
            rel = path.relative_to(base)
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            text = _IMPORT.sub(f"from {PY_PACKAGE}.", path.read_text(encoding="utf-8"))
            target.write_text(text, encoding="utf-8")
            written.append(rel)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.protogen")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default: portico_proto/")
    args = parser.parse_args(argv)
    for rel in generate(args.out):
        print(args.out / rel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
