"""Import rules, checked on the source's import statements (AST, no import-linter: a dozen
lines, no extra pinned dependency, and it reads imports inside functions too):

- no service imports another service (they talk over HTTP and the broker only);
- `services/*/domain/` imports no framework (web, database, broker, HTTP parsing, metrics);
- packaged code (chassis, gateway, services, tools, contracts) never imports `tests`;
- the gateway's config (`gateway/config/`) imports no request-path code: nothing of the
  gateway but `gateway.config` itself, so checking a file never runs behaviour (the policies
  a file names are imported by name when it is loaded, see gateway.config.policies).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGED = ("chassis", "gateway", "services", "tools", "contracts")
FRAMEWORKS = frozenset(
    {
        "aiohttp",
        "aio_pika",
        "aiormq",
        "asyncpg",
        "chassis",
        "fastapi",
        "httptools",
        "marshmallow",
        "multidict",
        "opentelemetry",
        "prometheus_client",
        "psycopg",
        "redis",
        "sqlalchemy",
        "starlette",
        "uvloop",
        "yarl",
    }
)


# Found when the rules were written (issue 16) and left to their owners: the inventory demo
# seeds catalog's demo products, and the contract runners sign tokens with the tests'
# issuer. Listed so the rules hold for everything else; each entry must still exist, so the
# list only shrinks (remove an entry when its import is gone).
KNOWN = frozenset(
    {
        "services/inventory/__main__.py imports services.catalog.service_layer.demo",
        "services/inventory/__main__.py imports services.catalog.service_layer.demo.DEMO_PRODUCTS",
        "contracts/consumers/gateway.py imports tests.support.tokens",
        "contracts/consumers/gateway.py imports tests.support.tokens.TestIssuer",
        "contracts/runner.py imports tests.support.tokens",
        "contracts/runner.py imports tests.support.tokens.TestIssuer",
    }
)
_seen_known: set[str] = set()


def _new(found: list[str]) -> list[str]:
    _seen_known.update(f for f in found if f in KNOWN)
    return [f for f in found if f not in KNOWN]


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> Iterator[str]:
    """Every module `path` imports, relative imports made absolute."""
    module = _module_of(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            yield name
            yield from (f"{name}.{alias.name}" for alias in node.names)


def _files(*tops: str) -> list[Path]:
    return [p for top in tops for p in sorted((ROOT / top).rglob("*.py"))]


def test_the_checker_sees_relative_imports() -> None:
    found = set(imports(ROOT / "gateway" / "pipeline" / "compile.py"))
    assert "gateway.config" in found and "gateway.pipeline.chain" in found


def test_no_service_imports_another() -> None:
    bad = []
    for path in _files("services"):
        own = path.relative_to(ROOT).parts[1]
        for name in imports(path):
            parts = name.split(".")
            if (
                parts[0] == "services"
                and len(parts) > 1
                and parts[1] not in (own, "__init__")
                and (ROOT / "services" / parts[1]).is_dir()
            ):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert _new(bad) == []


def test_domain_modules_import_no_framework() -> None:
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _files("services")
        if "domain" in path.relative_to(ROOT).parts
        for name in imports(path)
        if name.split(".")[0] in FRAMEWORKS
    ]
    assert bad == []


def test_packaged_code_never_imports_tests() -> None:
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _files(*PACKAGED)
        for name in imports(path)
        if name.split(".")[0] == "tests"
    ]
    assert _new(bad) == []


def test_gateway_config_imports_no_behaviour() -> None:
    assert _files("gateway/config") or (ROOT / "gateway" / "config.py").exists()
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in [*_files("gateway/config"), *(ROOT / "gateway").glob("config.py")]
        for name in imports(path)
        if name.split(".")[0] == "gateway" and not name.startswith("gateway.config")
    ]
    assert bad == []


def test_known_exceptions_still_exist() -> None:
    """Runs last in this file: every KNOWN entry was seen by the tests above."""
    test_no_service_imports_another()
    test_packaged_code_never_imports_tests()
    assert sorted(KNOWN - _seen_known) == []
