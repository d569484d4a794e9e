"""`python -m contracts`: consumers, then providers, then the matrix.

1. Each consumer test (contracts.consumers.*) runs its real client code against Pact mock
   servers (or its real handler over example messages) and writes
   `pacts/<consumer>-<provider>.json`.
2. Every pact file is checked (readable V4 JSON naming a consumer and a known provider); then,
   per provider, one `Verifier` replays every interaction written against it - HTTP through the
   provider's app running for real, messages produced by its real event code - with provider
   states set by its hook (contracts.providers.<name>). gRPC pacts (metadata.portico.kind
   "grpc", ADR 0028) are called on the provider's real gRPC server instead
   (contracts.providers.<name>_grpc, checked by contracts.grpcpact).
3. Each pair's verification (its HTTP and gRPC pacts together) is recorded per consumer and
   provider version (contracts.deploy; with `publish_to_broker`, pacts and results also go
   to the Pact Broker).
4. The matrix: one cell per (consumer, provider, kind) of the derived boundaries and of the
   pacts; `missing` counts boundary items (routes per method, aggregate parts, outbound
   calls, JWKS fetches, events) that no interaction covers. The run fails on any error,
   failed interaction or missing item.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import MATRIX_PATH, PACT_DIR
from .boundaries import Boundary, derive
from .consumers import BOUNDARY, ConsumerFailed
from .deploy import Results, Verification, pact_sha, publish, version
from .grpcpact import (
    GRPC_INTERACTION,
    GrpcProvider,
    is_grpc_pact,
    pact_proto,
    verify_interaction,
)
from .harness import LoopThread, ProviderFront, Transform
from .providers import Context, Provider, UnknownProvider, load

__all__ = ["CONSUMERS", "Cell", "Report", "run"]

# jwks merges into the pacts gateway, orders and views wrote with identity, apikeys into the
# gateway's; orders_grpc: orders' gRPC client (orders-inventory-grpc.json)
CONSUMERS = ("gateway", "orders", "notifications", "views", "jwks", "apikeys", "orders_grpc")
_KINDS = {"Synchronous/HTTP": "http", "Asynchronous/Messages": "message", GRPC_INTERACTION: "grpc"}


@dataclass
class Cell:
    consumer: str
    provider: str
    kind: str
    passed: int = 0
    failed: int = 0
    missing: int = 0


@dataclass
class Report:
    cells: dict[tuple[str, str, str], Cell] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # bad input, crashes, consumer failures
    failures: list[str] = field(default_factory=list)  # consumer -> provider: interaction: why
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.errors or self.failures or self.missing)

    def cell(self, consumer: str, provider: str, kind: str) -> Cell:
        key = (consumer, provider, kind)
        if key not in self.cells:
            self.cells[key] = Cell(consumer, provider, kind)
        return self.cells[key]

    def matrix(self) -> list[dict[str, Any]]:
        return [
            asdict(c)
            for c in sorted(self.cells.values(), key=lambda c: (c.consumer, c.provider, c.kind))
        ]


@dataclass
class PactFile:
    path: Path
    consumer: str
    provider: str
    interactions: list[dict[str, Any]]
    grpc: bool = False  # metadata.portico.kind == "grpc": verified by contracts.grpcpact
    proto: str = ""  # a gRPC pact's metadata.portico.proto


def read_pact(path: Path) -> PactFile:
    """A pact file's names and interactions; ValueError naming what is wrong with it."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable pact file ({exc})") from None
    try:
        consumer = doc["consumer"]["name"]
        provider = doc["provider"]["name"]
        interactions = doc["interactions"]
        version = doc.get("metadata", {}).get("pactSpecification", {}).get("version", "")
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a pact file (missing {exc})") from None
    if not (isinstance(consumer, str) and isinstance(provider, str)):
        raise ValueError(f"{path}: consumer and provider names must be strings")
    if not isinstance(interactions, list) or not all(isinstance(i, dict) for i in interactions):
        raise ValueError(f"{path}: `interactions` must be a list of objects")
    if not str(version).startswith("4"):
        raise ValueError(f"{path}: pact specification {version or '?'} (expected V4)")
    grpc = is_grpc_pact(doc)
    for n, i in enumerate(interactions):
        if i.get("type") not in _KINDS or not isinstance(i.get("description"), str):
            raise ValueError(f"{path}: interactions[{n}] has no known type or no description")
        if (i["type"] == GRPC_INTERACTION) != grpc:
            raise ValueError(
                f"{path}: interactions[{n}] is {i['type']}: a pact holds gRPC interactions "
                'only, and only with metadata.portico.kind "grpc"'
            )
    return PactFile(path, consumer, provider, interactions, grpc, pact_proto(doc) if grpc else "")


def _kind(interaction: Mapping[str, Any]) -> str:
    return _KINDS[interaction["type"]]


# --- stage 1: consumers ---------------------------------------------------------------------


def run_consumers(pact_dir: Path, report: Report, names: tuple[str, ...] = CONSUMERS) -> None:
    import importlib

    pact_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        try:
            importlib.import_module(f"{__package__}.consumers.{name}").run(pact_dir)
        except ConsumerFailed as exc:
            report.errors.append(f"consumer {name}: {exc}")
        except Exception as exc:
            report.errors.append(f"consumer {name} crashed: {type(exc).__name__}: {exc}")


# --- stage 2: providers ---------------------------------------------------------------------


def _mismatch_text(result: Mapping[str, Any]) -> str:
    mismatch = result.get("mismatch") or {}
    parts = [
        f"{m.get('path', '')} {m.get('mismatch', '')}".strip()
        for m in mismatch.get("mismatches", [])
        if isinstance(m, dict)
    ]
    return "; ".join(parts) or str(mismatch.get("message") or "failed")


def verify_provider(
    name: str,
    pacts: list[PactFile],
    report: Report,
    transform: Transform | None = None,
) -> None:
    """Run provider `name` for real and verify every interaction of `pacts` against it."""
    from contracts.tokens import TestIssuer

    files = ", ".join(str(p.path) for p in pacts)
    try:
        module = load(name)
    except UnknownProvider as exc:
        report.errors.append(f"{exc}: named by {files}")
        return
    with tempfile.TemporaryDirectory(prefix=f"contracts-{name}-") as tmp:
        loop = LoopThread(f"contracts-{name}")
        issuer = TestIssuer()
        ctx = Context(Path(tmp), loop, issuer)
        ctx.bearer["token"] = issuer.token(_ALL_SCOPES, sub="contract-user")
        provider: Provider | None = None
        front: ProviderFront | None = None
        try:
            try:
                provider = module.start(ctx)
                if provider.backend is not None:
                    front = ProviderFront(provider.backend.url, ctx.bearer, ctx.aliases, transform)
                    loop.run(front.start())
            except Exception as exc:
                report.errors.append(
                    f"provider {name} did not start: {type(exc).__name__}: {exc} (pacts: {files})"
                )
                return
            _verify(name, provider, front, pacts, report)
        finally:
            if front is not None:
                loop.run(front.close())
            if provider is not None:
                try:
                    provider.close()
                except Exception as exc:  # reported, never masks the verification result
                    report.errors.append(f"provider {name} did not stop cleanly: {exc}")
            loop.stop()


def _verify(
    provider_name: str,
    provider: Provider,
    front: ProviderFront | None,
    pacts: list[PactFile],
    report: Report,
) -> None:
    from pact import Verifier

    state_errors: dict[str, str] = {}

    def state(state: str, parameters: dict[str, Any] | None = None) -> None:
        # Never raise: a failing state handler makes the Pact core retry for minutes.
        fn = provider.states.get(state)
        if fn is None:
            state_errors[state] = f"provider {provider_name} has no state {state!r}"
            return
        try:
            fn(**(parameters or {}))
        except Exception as exc:
            state_errors[state] = f"state {state!r} failed: {type(exc).__name__}: {exc}"

    def produce(name: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        # pact passes arguments by parameter name: `name` is the message's description
        event_type = name.removeprefix("event ")
        fn = provider.events.get(event_type)
        if fn is None:
            return {"contents": b"{}", "metadata": {}, "content_type": "application/json"}
        body, meta = fn()
        return {"contents": body, "metadata": meta, "content_type": "application/json"}

    verifier = Verifier(provider_name, host="127.0.0.1")
    if front is not None:
        verifier.add_transport(url=front.url)
    for p in pacts:
        verifier.add_source(p.path)
    verifier.state_handler(state)
    if any(_kind(i) == "message" for p in pacts for i in p.interactions):
        verifier.message_handler(produce)
    verifier.set_request_timeout(10_000)
    try:
        with _quiet_stdout():
            verifier.verify()
    except RuntimeError:
        pass  # failures are read from the results below
    except Exception as exc:
        report.errors.append(f"verifying {provider_name} crashed: {type(exc).__name__}: {exc}")
        return
    by_key = {(p.consumer, i["description"]): (p, i) for p in pacts for i in p.interactions}
    seen: set[tuple[str, str]] = set()
    for result in verifier.results.get("interactionResults", []):
        key = (result.get("consumer", ""), result.get("description", ""))
        found = by_key.get(key)
        if found is None:
            continue
        seen.add(key)
        pact, interaction = found
        cell = report.cell(pact.consumer, provider_name, _kind(interaction))
        if str(result.get("result")).upper() == "OK" and not result.get("mismatch"):
            cell.passed += 1
            continue
        cell.failed += 1
        why = _mismatch_text(result)
        for st in interaction.get("providerStates") or []:
            if st.get("name") in state_errors:
                why = f"{state_errors[st['name']]}; {why}"
        report.failures.append(f"{pact.consumer} -> {provider_name}: {key[1]!r}: {why}")
    for key, (pact, interaction) in by_key.items():
        if key not in seen:
            report.cell(pact.consumer, provider_name, _kind(interaction)).failed += 1
            report.failures.append(f"{pact.consumer} -> {provider_name}: {key[1]!r}: not verified")


def verify_grpc_provider(name: str, pacts: list[PactFile], report: Report) -> None:
    """Run provider `name`'s gRPC server for real (contracts.providers.<name>_grpc) and call
    every interaction of `pacts` on it (contracts.grpcpact)."""
    import grpc

    from contracts.tokens import TestIssuer

    files = ", ".join(str(p.path) for p in pacts)
    try:
        module = load(f"{name}_grpc")
    except UnknownProvider as exc:
        report.errors.append(f"{exc}: no gRPC provider {name}, named by {files}")
        return
    with tempfile.TemporaryDirectory(prefix=f"contracts-{name}-grpc-") as tmp:
        loop = LoopThread(f"contracts-{name}-grpc")
        issuer = TestIssuer()
        ctx = Context(Path(tmp), loop, issuer)
        ctx.bearer["token"] = issuer.token(_ALL_SCOPES, sub="contract-user")
        provider: GrpcProvider | None = None
        try:
            try:
                provider = module.start(ctx)
            except Exception as exc:
                report.errors.append(
                    f"gRPC provider {name} did not start: {type(exc).__name__}: {exc} "
                    f"(pacts: {files})"
                )
                return
            with grpc.insecure_channel(provider.target) as channel:
                for p in pacts:
                    for i in p.interactions:
                        cell = report.cell(p.consumer, name, "grpc")
                        try:
                            problems = verify_interaction(
                                channel, i, provider, ctx.bearer["token"], p.proto
                            )
                        except Exception as exc:  # named, never a crash of the whole run
                            problems = [f"verifying crashed: {type(exc).__name__}: {exc}"]
                        if problems:
                            cell.failed += 1
                            report.failures.append(
                                f"{p.consumer} -> {name} (grpc): {i['description']!r}: "
                                + "; ".join(problems)
                            )
                        else:
                            cell.passed += 1
        finally:
            if provider is not None:
                try:
                    provider.close()
                except Exception as exc:
                    report.errors.append(f"gRPC provider {name} did not stop cleanly: {exc}")
            loop.stop()


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """The Pact core prints its own report on fd 1; the runner prints the failures itself."""
    if os.environ.get("CONTRACTS_VERBOSE") == "1":
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


_ALL_SCOPES = [
    "profile",
    "catalog:read",
    "catalog:write",
    "inventory:read",
    "inventory:write",
    "orders:read",
    "orders:write",
    "payments:read",
    "payments:write",
    "notifications:read",
    "reports:read",
    "orders:events",
]


# --- stage 3: the matrix --------------------------------------------------------------------


def coverage(boundaries: list[Boundary], pacts: list[PactFile], report: Report) -> None:
    labels: dict[tuple[str, str, str], set[str]] = {}
    for p in pacts:
        for i in p.interactions:
            item = (i.get("comments") or {}).get(BOUNDARY)
            labels.setdefault((p.consumer, p.provider, _kind(i)), set()).add(str(item))
    for b in boundaries:
        have = labels.get(b.key, set())
        cell = report.cell(*b.key)
        for item in b.items:
            if item not in have:
                cell.missing += 1
                report.missing.append(
                    f"{b.consumer} -> {b.provider} ({b.kind}): no contract for {item}"
                )


def render(report: Report) -> str:
    consumers = sorted({c.consumer for c in report.cells.values()})
    providers = sorted({c.provider for c in report.cells.values()})
    width = max([12, *(len(p) for p in providers)]) + 2
    lines = ["consumer \\ provider".ljust(26) + "".join(p.ljust(width) for p in providers)]
    for consumer in consumers:
        for kind in ("http", "message", "grpc"):
            row = [c for c in report.cells.values() if c.consumer == consumer and c.kind == kind]
            if not row:
                continue
            cells = []
            for p in providers:
                c = next((c for c in row if c.provider == p), None)
                cells.append((f"{c.passed}/{c.failed}/{c.missing}" if c else "-").ljust(width))
            lines.append(f"{consumer} ({kind})".ljust(26) + "".join(cells))
    lines.append("cells: passed/failed/missing interactions; - : no boundary")
    for title, items in (
        ("errors", report.errors),
        ("failed", report.failures),
        ("missing", report.missing),
    ):
        if items:
            lines.append(f"{title}:")
            lines.extend(f"  - {x}" for x in items)
    lines.append("contracts: OK" if report.ok else "contracts: FAILED")
    return "\n".join(lines)


def by_pair(pacts: list[PactFile]) -> dict[tuple[str, str], list[PactFile]]:
    """The pact files of each (consumer, provider): one, or an HTTP and a gRPC one."""
    out: dict[tuple[str, str], list[PactFile]] = {}
    for p in pacts:
        out.setdefault((p.consumer, p.provider), []).append(p)
    return out


def verifications(
    pacts: list[PactFile], report: Report, consumer_version: str, provider_version: str
) -> list[Verification]:
    """One result per consumer and provider (as a broker keeps one pact per pair): verified
    when every interaction of its pact files passed. Its hash is the file's, or with an HTTP
    and a gRPC file, a hash of both files' hashes."""
    out = []
    for (consumer, provider), files in by_pair(pacts).items():
        kinds = {_kind(i) for p in files for i in p.interactions}
        cells = [
            c for k, c in report.cells.items() if k[:2] == (consumer, provider) and k[2] in kinds
        ]
        passed, failed = sum(c.passed for c in cells), sum(c.failed for c in cells)
        shas = sorted(pact_sha(p.path.read_bytes()) for p in files)
        sha = shas[0] if len(shas) == 1 else pact_sha(json.dumps(shas).encode())
        out.append(
            Verification(
                consumer,
                consumer_version,
                provider,
                provider_version,
                sha,
                success=failed == 0 and passed == sum(len(p.interactions) for p in files),
                passed=passed,
                failed=failed,
            )
        )
    return out


def merged(files: list[PactFile], workdir: Path) -> Path:
    """One pact file for a pair with several (the broker takes one per pair and version): the
    interactions of all, the first file's metadata plus each file's `portico` part."""
    if len(files) == 1:
        return files[0].path
    docs = [json.loads(p.path.read_text(encoding="utf-8")) for p in files]
    doc = {**docs[0], "interactions": [i for d in docs for i in d["interactions"]]}
    doc["metadata"] = {**docs[0].get("metadata", {})}
    extra = [d["metadata"]["portico"] for d in docs if is_grpc_pact(d)]
    if extra:
        doc["metadata"]["portico"] = {"kind": "mixed", "grpc": extra}
    path = workdir / f"{files[0].consumer}-{files[0].provider}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def record_and_publish(
    pacts: list[PactFile],
    report: Report,
    results: Path | None,
    publish_to_broker: bool,
) -> None:
    """Record each pact's verification per consumer and provider version; with
    `publish_to_broker`, also send pacts and results to $PACT_BROKER_BASE_URL."""
    found = verifications(
        pacts, report, version("PACT_CONSUMER_VERSION"), version("PACT_PROVIDER_VERSION")
    )
    if results is not None:
        recorded = Results.load(results)
        recorded.record(found)
        recorded.save(results)
    if publish_to_broker:
        base = os.environ.get("PACT_BROKER_BASE_URL", "")
        if not base:
            report.errors.append("PUBLISH=1 needs PACT_BROKER_BASE_URL")
            return
        with tempfile.TemporaryDirectory(prefix="contracts-publish-") as tmp:
            paths = [merged(files, Path(tmp)) for files in by_pair(pacts).values()]
            pairs = list(zip(paths, found, strict=True))
            report.errors.extend(publish(base, pairs, os.environ.get("PACT_BROKER_TOKEN")))


def run(
    pact_dir: Path = PACT_DIR,
    *,
    consumers: tuple[str, ...] | None = CONSUMERS,
    transforms: Mapping[str, Transform] | None = None,
    matrix_path: Path | None = MATRIX_PATH,
    publish_to_broker: bool = False,
    boundaries: Callable[[], list[Boundary]] = derive,
    results: Path | None = None,
) -> Report:
    """The whole run; `consumers=None` verifies the pact files already in `pact_dir`;
    `results`: the recorded matrix to add this run's verifications to (contracts.deploy)."""
    report = Report()
    try:
        if consumers:
            run_consumers(pact_dir, report, consumers)
        pacts: list[PactFile] = []
        for path in sorted(pact_dir.glob("*.json")):
            try:
                pacts.append(read_pact(path))
            except ValueError as exc:
                report.errors.append(str(exc))
        by_provider: dict[str, list[PactFile]] = {}
        for p in pacts:
            by_provider.setdefault(p.provider, []).append(p)
        for name, group in sorted(by_provider.items()):
            plain = [p for p in group if not p.grpc]
            if plain:
                verify_provider(name, plain, report, (transforms or {}).get(name))
            grpc_pacts = [p for p in group if p.grpc]
            if grpc_pacts:
                verify_grpc_provider(name, grpc_pacts, report)
        record_and_publish(pacts, report, results, publish_to_broker)
        coverage(boundaries(), pacts, report)
    except Exception as exc:  # a bug here still ends in a named failure, with its trace
        report.errors.append(f"contracts runner crashed: {type(exc).__name__}: {exc}")
        report.errors.append(traceback.format_exc(limit=5))
    if matrix_path is not None:
        matrix_path.parent.mkdir(parents=True, exist_ok=True)
        matrix_path.write_text(json.dumps(report.matrix(), indent=2) + "\n", encoding="utf-8")
    return report
