"""`make proto-check` (ADR 0028): each kind of breaking change to the inventory proto is
caught by name, on an edited temporary copy; additive changes pass; the base is read from
git (a fresh clone compares equal)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tools import protocheck
from tools.protocheck import breaking, compile_set

REPO = Path(__file__).resolve().parents[2]
PROTO = REPO / "proto"
FILE = Path("portico/inventory/v1/inventory.proto")


def edited(tmp_path: Path, *changes: tuple[str, str], name: str = "new") -> Path:
    """A copy of proto/ with each (old, new) text replaced exactly once."""
    root = tmp_path / name
    shutil.copytree(PROTO, root)
    text = (root / FILE).read_text()
    for old, new in changes:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (root / FILE).write_text(text)
    return root


def changes(tmp_path: Path, *edits: tuple[str, str], base: Path = PROTO) -> list[str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return breaking(compile_set(base), compile_set(edited(tmp_path, *edits)))


def test_the_same_proto_is_compatible() -> None:
    assert breaking(compile_set(PROTO), compile_set(PROTO)) == []


def test_additions_pass(tmp_path: Path) -> None:
    assert (
        changes(
            tmp_path,
            ("  repeated Line lines = 3;\n}", "  repeated Line lines = 3;\n  string note = 4;\n}"),
            (
                "  rpc GetStock(GetStockRequest) returns (StockLevel);",
                "  rpc GetStock(GetStockRequest) returns (StockLevel);\n"
                "  rpc Hold(CommitRequest) returns (Reservation);",
            ),
            ("    REJECTED = 4;", "    REJECTED = 4;\n    EXPIRED = 5;"),
            (
                "message GetStockRequest {",
                "message Hold { string why = 1; }\nmessage GetStockRequest {",
            ),
        )
        == []
    )


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("  int64 reserved = 3;\n", ""),
            "field portico.inventory.v1.StockLevel.reserved (= 3) removed without reserving "
            "its number",
        ),
        (
            ("  int32 quantity = 2;", "  int32 quantity = 5;"),
            "field portico.inventory.v1.Line.quantity (= 2) renumbered to 5",
        ),
        (
            ("  int32 quantity = 2;", "  int64 quantity = 2;"),
            "field portico.inventory.v1.Line.quantity (= 2) changed type from int32 to int64",
        ),
        (
            ("  int32 quantity = 2;", "  int32 count = 2;"),
            "field portico.inventory.v1.Line.quantity (= 2) renamed to count",
        ),
        (
            ("  repeated Line lines = 3;\n}", "  Line lines = 3;\n}"),
            "field portico.inventory.v1.Reservation.lines (= 3) changed label from repeated "
            "to singular",
        ),
        (
            ("  int32 quantity = 2;", "  optional int32 quantity = 2;"),
            "field portico.inventory.v1.Line.quantity (= 2) changed label from singular "
            "to optional",
        ),
        (
            ("  repeated Line lines = 3;\n}", "  repeated Reservation lines = 3;\n}"),
            "field portico.inventory.v1.Reservation.lines (= 3) changed type from "
            "message portico.inventory.v1.Line to message portico.inventory.v1.Reservation",
        ),
        (
            ("    REJECTED = 4;\n", ""),
            "enum value portico.inventory.v1.Reservation.Status.REJECTED (= 4) removed",
        ),
        (
            ("    REJECTED = 4;", "    REJECTED = 5;"),
            "enum value portico.inventory.v1.Reservation.Status.REJECTED (= 4) renumbered to 5",
        ),
        (
            ("  rpc Commit(CommitRequest) returns (Reservation);", ""),
            "method portico.inventory.v1.Inventory.Commit removed",
        ),
        (
            (
                "  rpc Commit(CommitRequest) returns (Reservation);",
                "  rpc Commit(ReleaseRequest) returns (Reservation);",
            ),
            "method portico.inventory.v1.Inventory.Commit changed input from "
            "portico.inventory.v1.CommitRequest to portico.inventory.v1.ReleaseRequest",
        ),
        (
            (
                "  rpc GetStock(GetStockRequest) returns (StockLevel);",
                "  rpc GetStock(GetStockRequest) returns (Reservation);",
            ),
            "method portico.inventory.v1.Inventory.GetStock changed output from "
            "portico.inventory.v1.StockLevel to portico.inventory.v1.Reservation",
        ),
        (
            (
                "  rpc GetStock(GetStockRequest) returns (StockLevel);",
                "  rpc GetStock(GetStockRequest) returns (stream StockLevel);",
            ),
            "method portico.inventory.v1.Inventory.GetStock changed server streaming "
            "from False to True",
        ),
        (
            ("service Inventory {", "service Stock {"),
            "service portico.inventory.v1.Inventory removed",
        ),
    ],
    ids=lambda v: v[0][:30] if isinstance(v, tuple) else None,
)
def test_each_breaking_kind_is_named(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    assert any(c.startswith(expected) for c in changes(tmp_path, edit))


def test_a_removed_message_breaks(tmp_path: Path) -> None:
    found = changes(
        tmp_path,
        ("message StockLevel {", "message Level {"),
        ("returns (StockLevel);", "returns (Level);"),
    )
    assert "message portico.inventory.v1.StockLevel removed" in found
    assert any(
        c.startswith("method portico.inventory.v1.Inventory.GetStock changed output") for c in found
    )


def test_a_field_moved_to_reserved_passes_but_reusing_its_number_breaks(tmp_path: Path) -> None:
    reserve = ("  int64 reserved = 3;\n", '  reserved 3;\n  reserved "reserved";\n')
    assert changes(tmp_path, reserve) == []
    base = edited(tmp_path, reserve, name="base")
    reuse = changes(tmp_path / "a", ("  int64 reserved = 3;", "  string note = 3;"), base=base)
    assert reuse == [
        "field portico.inventory.v1.StockLevel.note (= 3) reuses a number the base reserved"
    ]
    same_change = changes(tmp_path / "b", ("  int64 reserved = 3;", "  string note = 3;"))
    assert any(
        c.startswith("field portico.inventory.v1.StockLevel.reserved (= 3) renamed to note")
        for c in same_change
    )
    assert any("changed type from int64 to string" in c for c in same_change)


def test_a_removed_file_breaks(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert breaking(compile_set(PROTO), compile_set(empty)) == [
        f"file {FILE.as_posix()} removed",
        "message portico.inventory.v1.CommitRequest removed",
        "message portico.inventory.v1.GetStockRequest removed",
        "message portico.inventory.v1.Line removed",
        "message portico.inventory.v1.ReleaseRequest removed",
        "message portico.inventory.v1.Reservation removed",
        "message portico.inventory.v1.ReserveRequest removed",
        "message portico.inventory.v1.StockLevel removed",
        "enum portico.inventory.v1.Reservation.Status removed",
        "service portico.inventory.v1.Inventory removed",
    ]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_the_working_tree_is_compared_with_the_base_ref(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(PROTO, repo / "proto")
    _git(repo, "init", "-q")
    _git(repo, "add", "proto")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "proto")
    assert protocheck.check("HEAD", repo / "proto", repo) == []  # a fresh clone: equal
    proto = repo / "proto" / FILE
    proto.write_text(proto.read_text().replace("  int64 reserved = 3;\n", ""))
    assert protocheck.check("HEAD", repo / "proto", repo) == [
        "field portico.inventory.v1.StockLevel.reserved (= 3) removed without reserving its number"
    ]
    with pytest.raises(protocheck.BaseUnreadable):
        protocheck.check("no-such-ref", repo / "proto", repo)


def test_the_command_exits_by_outcome(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(protocheck, "check", lambda base: [])
    assert protocheck.main(["--base", "HEAD"]) == 0
    monkeypatch.setattr(protocheck, "check", lambda base: ["method X removed"])
    assert protocheck.main([]) == 1
    assert "  - method X removed" in capsys.readouterr().out

    def unreadable(base: str) -> list[str]:
        raise protocheck.BaseUnreadable("no git")

    monkeypatch.setattr(protocheck, "check", unreadable)
    assert protocheck.main([]) == 2
