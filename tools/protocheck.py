"""Breaking changes of the `.proto` files against a git revision (ADR 0028).

    python -m tools.protocheck [--base REF]     # or: make proto-check (PROTO_BASE_REF=HEAD)

Both versions are compiled with the pinned grpcio-tools' protoc into FileDescriptorSets (the
base from `git show REF:proto/...` into a temporary folder) and compared by full names and
field numbers. Breaks: a removed file, message, enum, service or method; a field removed
without its number reserved; a field renumbered or renamed (the JSON form and the generated
code use names); a changed field type, message/enum type or label (optional, repeated,
proto3 `optional`); a field moved into or out of a oneof; a new field on a number or name
the base had reserved, or on a number another field had (reuse); a removed or renumbered
enum value; a method's changed input, output or streaming. Additions (fields on new
numbers, messages, enum values, methods, services) pass. Exit 0: compatible, 1: breaking
(each named), 2: the base cannot be read.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import descriptor_pb2 as d

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = "proto"

__all__ = ["breaking", "compile_set", "main"]

_T = d.FieldDescriptorProto


class BaseUnreadable(Exception):
    """The base revision's protos cannot be listed or read (no git, unknown ref)."""


def compile_set(root: Path) -> d.FileDescriptorSet:
    """Every `.proto` under `root`, compiled (with source info off) into one set."""
    from grpc_tools import protoc  # the pinned dev dependency that also generates the code

    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.proto"))
    out = d.FileDescriptorSet()
    if not files:
        return out
    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "set.pb"
        args = ["protoc", f"-I{root}", f"-I{include}", f"--descriptor_set_out={target}", *files]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {root} (its message is above)")
        out.ParseFromString(target.read_bytes())
    return out


def base_tree(ref: str, dest: Path, repo: Path = ROOT) -> Path:
    """The `.proto` files of `ref` under `dest` (as under proto/); BaseUnreadable if none can
    be read."""
    listed = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", ref, "--", f"{PROTO_DIR}/"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    if listed.returncode != 0:
        raise BaseUnreadable(f"git ls-tree {ref}: {listed.stderr.strip()}")
    for name in listed.stdout.splitlines():
        if not name.endswith(".proto"):
            continue
        shown = subprocess.run(
            ["git", "show", f"{ref}:{name}"], cwd=repo, capture_output=True, check=False
        )
        if shown.returncode != 0:
            raise BaseUnreadable(f"git show {ref}:{name}: {shown.stderr.decode().strip()}")
        path = dest / Path(name).relative_to(PROTO_DIR)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(shown.stdout)
    return dest


# --- the comparison ----------------------------------------------------------------------


def _messages(
    prefix: str, messages: Iterable[d.DescriptorProto]
) -> Iterator[tuple[str, d.DescriptorProto]]:
    for m in messages:
        name = f"{prefix}.{m.name}"
        yield name, m
        yield from _messages(name, m.nested_type)


def _enums(
    prefix: str, enums: Iterable[d.EnumDescriptorProto], messages: Iterable[d.DescriptorProto]
) -> Iterator[tuple[str, d.EnumDescriptorProto]]:
    for e in enums:
        yield f"{prefix}.{e.name}", e
    for m in messages:
        yield from _enums(f"{prefix}.{m.name}", m.enum_type, m.nested_type)


@dataclass
class _Index:
    """A set's files, messages, enums and services by full name."""

    files: dict[str, d.FileDescriptorProto] = field(default_factory=dict)
    messages: dict[str, d.DescriptorProto] = field(default_factory=dict)
    enums: dict[str, d.EnumDescriptorProto] = field(default_factory=dict)
    services: dict[str, d.ServiceDescriptorProto] = field(default_factory=dict)

    @classmethod
    def of(cls, fds: d.FileDescriptorSet) -> _Index:
        out = cls()
        for f in fds.file:
            prefix = f".{f.package}" if f.package else ""
            out.files[f.name] = f
            out.messages.update(_messages(prefix, f.message_type))
            out.enums.update(_enums(prefix, f.enum_type, f.message_type))
            out.services.update((f"{prefix}.{s.name}", s) for s in f.service)
        return out


def _label(f: d.FieldDescriptorProto) -> str:
    if f.label == _T.LABEL_REPEATED:
        return "repeated"
    if f.proto3_optional:
        return "optional"
    return "required" if f.label == _T.LABEL_REQUIRED else "singular"


def _type(f: d.FieldDescriptorProto) -> str:
    kind = _T.Type.Name(f.type).removeprefix("TYPE_").lower()
    return f"{kind} {f.type_name.lstrip('.')}" if f.type_name else kind


def _oneof(m: d.DescriptorProto, f: d.FieldDescriptorProto) -> str | None:
    if not f.HasField("oneof_index") or f.proto3_optional:
        return None
    return m.oneof_decl[f.oneof_index].name


def _reserved(m: d.DescriptorProto | d.EnumDescriptorProto, number: int) -> bool:
    if isinstance(m, d.DescriptorProto):  # message ranges: end exclusive
        return any(r.start <= number < r.end for r in m.reserved_range)
    return any(r.start <= number <= r.end for r in m.reserved_range)  # enum ranges: inclusive


def _compare_message(name: str, old: d.DescriptorProto, new: d.DescriptorProto) -> Iterator[str]:
    old_by_no = {f.number: f for f in old.field}
    new_by_no = {f.number: f for f in new.field}
    new_by_name = {f.name: f for f in new.field}
    for no, f in sorted(old_by_no.items()):
        where = f"{name.lstrip('.')}.{f.name} (= {no})"
        g = new_by_no.get(no)
        if g is None:
            moved = new_by_name.get(f.name)
            if moved is not None:
                yield f"field {where} renumbered to {moved.number}"
            elif not _reserved(new, no):
                yield f"field {where} removed without reserving its number"
            continue
        if g.name != f.name:
            yield f"field {where} renamed to {g.name} (JSON and generated code use the name)"
        if _type(g) != _type(f):
            yield f"field {where} changed type from {_type(f)} to {_type(g)}"
        if _label(g) != _label(f):
            yield f"field {where} changed label from {_label(f)} to {_label(g)}"
        if _oneof(new, g) != _oneof(old, f):
            yield f"field {where} moved from oneof {_oneof(old, f)} to {_oneof(new, g)}"
    for no, g in sorted(new_by_no.items()):
        if no in old_by_no:
            continue
        where = f"{name.lstrip('.')}.{g.name} (= {no})"
        if _reserved(old, no):
            yield f"field {where} reuses a number the base reserved"
        elif g.name in old.reserved_name:
            yield f"field {where} reuses a name the base reserved"
    # A number given up and taken again in one change shows above as a renamed (and usually
    # retyped) field: the base's field number now carries something else.


def _compare_enum(
    name: str, old: d.EnumDescriptorProto, new: d.EnumDescriptorProto
) -> Iterator[str]:
    new_by_name = {v.name: v for v in new.value}
    for v in old.value:
        where = f"enum value {name.lstrip('.')}.{v.name} (= {v.number})"
        g = new_by_name.get(v.name)
        if g is None:
            yield f"{where} removed"
        elif g.number != v.number:
            yield f"{where} renumbered to {g.number}"
    old_numbers = {v.number for v in old.value}
    for v in new.value:
        if v.number not in old_numbers and _reserved(old, v.number):
            yield f"enum value {name.lstrip('.')}.{v.name} (= {v.number}) reuses a reserved number"


def _compare_service(
    name: str, old: d.ServiceDescriptorProto, new: d.ServiceDescriptorProto
) -> Iterator[str]:
    methods = {m.name: m for m in new.method}
    for m in old.method:
        where = f"method {name.lstrip('.')}.{m.name}"
        g = methods.get(m.name)
        if g is None:
            yield f"{where} removed"
            continue
        for part, before, after in (
            ("input", m.input_type, g.input_type),
            ("output", m.output_type, g.output_type),
        ):
            if before != after:
                yield f"{where} changed {part} from {before.lstrip('.')} to {after.lstrip('.')}"
        for part, before_s, after_s in (
            ("client streaming", m.client_streaming, g.client_streaming),
            ("server streaming", m.server_streaming, g.server_streaming),
        ):
            if before_s != after_s:
                yield f"{where} changed {part} from {before_s} to {after_s}"


def breaking(old: d.FileDescriptorSet, new: d.FileDescriptorSet) -> list[str]:
    """Every breaking change from `old` to `new`, each named; [] when `new` is compatible."""
    a, b = _Index.of(old), _Index.of(new)
    out: list[str] = []
    for kind, before, after in (
        ("file", a.files, b.files),
        ("message", a.messages, b.messages),
        ("enum", a.enums, b.enums),
        ("service", a.services, b.services),
    ):
        out.extend(f"{kind} {n.lstrip('.')} removed" for n in sorted(set(before) - set(after)))
    for name in sorted(set(a.messages) & set(b.messages)):
        out.extend(_compare_message(name, a.messages[name], b.messages[name]))
    for name in sorted(set(a.enums) & set(b.enums)):
        out.extend(_compare_enum(name, a.enums[name], b.enums[name]))
    for name in sorted(set(a.services) & set(b.services)):
        out.extend(_compare_service(name, a.services[name], b.services[name]))
    return out


def check(base_ref: str, proto_root: Path = ROOT / PROTO_DIR, repo: Path = ROOT) -> list[str]:
    """The working tree's protos against `base_ref`'s."""
    with tempfile.TemporaryDirectory(prefix="protocheck-") as tmp:
        old = compile_set(base_tree(base_ref, Path(tmp), repo))
    return breaking(old, compile_set(proto_root))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.protocheck")
    parser.add_argument(
        "--base",
        default=os.environ.get("PROTO_BASE_REF") or "HEAD",
        help="the git revision to compare with ($PROTO_BASE_REF, default HEAD)",
    )
    args = parser.parse_args(argv)
    try:
        found = check(args.base)
    except BaseUnreadable as exc:
        print(f"proto-check: cannot read the base {args.base}: {exc}", file=sys.stderr)
        return 2
    if found:
        print(f"proto-check: {len(found)} breaking change(s) against {args.base}:")
        print("\n".join(f"  - {x}" for x in found))
        return 1
    print(f"proto-check: compatible with {args.base}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
