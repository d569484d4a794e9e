"""Import rules of the architecture, checked on the source (AST: nothing is imported or run).

Why a test and not import-linter: the rules are a few lines of data here, need no dependency
(import-linter brings grimp, a compiled extension), run in well under a second with the unit
tests, and read relative imports, imports inside functions and `if TYPE_CHECKING:` blocks alike.

Each `Rule` names the modules it is about (`importers`) and the imports they may not make
(`forbidden(importer, imported)`); `transitive=True` also follows the first-party modules the
importer imports (and the packages whose `__init__` that runs), so that a domain module cannot
reach a framework through, say, `chassis`. Adding a rule is appending one `Rule` to `RULES`
(the gateway-config rule, last, is one).

Packaged code is what pyproject.toml's `[tool.setuptools.packages.find] include` names.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Frameworks and I/O libraries a `domain/` module must not import (plain Python only).
FRAMEWORKS = frozenset(
    {
        "aiohttp",
        "aiosqlite",
        "apispec",
        "asyncpg",
        "authlib",
        "flask",
        "flask_wtf",
        "grpc",
        "gunicorn",
        "httptools",
        "httpx",
        "jinja2",
        "kombu",
        "marshmallow",
        "multidict",
        "opentelemetry",
        "prometheus_client",
        "psycopg",
        "redis",
        "requests",
        "sqlalchemy",
        "uvloop",
        "werkzeug",
        "wtforms",
        "yarl",
    }
)


def in_package(name: str, package: str) -> bool:
    """`name` is `package` or inside it."""
    return name == package or name.startswith(package + ".")


@dataclass(frozen=True)
class Rule:
    name: str
    importers: Callable[[str], bool]
    forbidden: Callable[[str, str], bool]
    transitive: bool = False


def _service(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "services" else None


def _is_domain(name: str) -> bool:
    parts = name.split(".")
    return len(parts) > 2 and parts[0] == "services" and parts[2] == "domain"


RULES = [
    Rule(
        "no service imports another service",
        importers=lambda m: _service(m) is not None,
        forbidden=lambda m, name: _service(name) not in (None, _service(m)),
    ),
    Rule(
        "domain modules import no framework (directly or through first-party code)",
        importers=_is_domain,
        forbidden=lambda _m, name: name.split(".")[0] in FRAMEWORKS,
        transitive=True,
    ),
    Rule(
        "packaged code never imports tests",
        importers=lambda _m: True,
        forbidden=lambda _m, name: in_package(name, "tests"),
    ),
    Rule(
        # checking a file never runs request-path code; the policies a file names are
        # imported by name when it is loaded (gateway.config.policies)
        "gateway config imports no behaviour",
        importers=lambda m: in_package(m, "gateway.config"),
        forbidden=lambda _m, name: (
            in_package(name, "gateway") and not in_package(name, "gateway.config")
        ),
    ),
]


# --- the import graph ---------------------------------------------------------------------


def packaged_roots() -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        include = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted({pattern.rstrip("*").rstrip(".") for pattern in include})


@dataclass(frozen=True)
class Import:
    name: str  # absolute dotted name (for `from a import b`: also `a.b`, b may be a module)
    line: int


@cache
def modules() -> dict[str, tuple[Path, bool]]:
    """Every packaged module: dotted name -> (path, is a package)."""
    found: dict[str, tuple[Path, bool]] = {}
    for root in packaged_roots():
        for path in sorted((ROOT / root).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            found[".".join(parts)] = (path, is_package)
    return found


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    package = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        package = package[: len(package) - (level - 1)]
    return ".".join([*package, *([target] if target else [])])


@cache
def imports_of(module: str) -> tuple[Import, ...]:
    path, is_package = modules()[module]
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = (
                _resolve(module, is_package, node.level, node.module)
                if node.level
                else node.module or ""
            )
            found.append(Import(base, node.lineno))
            found.extend(
                Import(f"{base}.{alias.name}", node.lineno)
                for alias in node.names
                if alias.name != "*"
            )
    return tuple(found)


def _first_party(name: str) -> list[str]:
    """The packaged modules importing `name` runs: the module and each enclosing package."""
    parts = name.split(".")
    return [m for i in range(1, len(parts) + 1) if (m := ".".join(parts[:i])) in modules()]


def violations(rule: Rule) -> Iterator[str]:
    for module in sorted(modules()):
        if not rule.importers(module):
            continue
        # (module reached, how: the chain from `module`)
        queue: list[tuple[str, tuple[str, ...]]] = [(module, (module,))]
        seen = {module}
        reported: set[tuple[str, int]] = set()  # one line per import statement
        while queue:
            current, chain = queue.pop(0)
            for imp in imports_of(current):
                if rule.forbidden(module, imp.name) and (current, imp.line) not in reported:
                    reported.add((current, imp.line))
                    path = modules()[current][0].relative_to(ROOT)
                    via = " -> ".join(chain)
                    yield f"{path}:{imp.line}: {via} imports {imp.name}"
                if rule.transitive:
                    for reached in _first_party(imp.name):
                        if reached not in seen:
                            seen.add(reached)
                            queue.append((reached, (*chain, reached)))


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_import_rule(rule: Rule) -> None:
    found = sorted(set(violations(rule)))
    assert not found, f"{rule.name}:\n  " + "\n  ".join(found)


# --- the checker itself -------------------------------------------------------------------


def test_the_graph_sees_every_packaged_root_and_resolves_relative_imports() -> None:
    assert {"chassis", "gateway", "services", "contracts", "tools"} <= set(packaged_roots())
    names = {imp.name for imp in imports_of("services.catalog.entrypoints.products")}
    assert "services.catalog.domain" in names  # `from ..domain import ...`
    assert "services.catalog.service_layer.services" in names  # `from ..service_layer import x`
    assert "flask" in names
    assert {i.name for i in imports_of("services.catalog.entrypoints")} >= {
        "services.catalog.entrypoints.products"  # `from .products import ...` in a package
    }


def test_the_rules_catch_what_they_forbid(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = {
        "services.a.x": (Import("services.b.y", 1), Import("tests.support", 2)),
        "services.a.domain.model": (Import("services.a.helpers", 3),),
        "services.a.helpers": (Import("sqlalchemy.orm", 4),),
        "services.b.y": (),
        "gateway.config.x": (Import("gateway.front", 5), Import("gateway.config.y", 6)),
        "gateway.config.y": (),
        "gateway.front": (),
    }
    monkeypatch.setattr(
        f"{__name__}.modules", lambda: {m: (ROOT / "pyproject.toml", False) for m in fake}
    )
    monkeypatch.setattr(f"{__name__}.imports_of", lambda m: fake[m])
    independent, domain, no_tests, config = (list(violations(rule)) for rule in RULES)
    assert len(independent) == 1 and "imports services.b.y" in independent[0]
    assert len(domain) == 1
    assert "services.a.domain.model -> services.a.helpers imports sqlalchemy.orm" in domain[0]
    assert len(no_tests) == 1 and "imports tests.support" in no_tests[0]
    assert len(config) == 1 and "imports gateway.front" in config[0]


def test_transitive_rules_follow_package_inits(monkeypatch: pytest.MonkeyPatch) -> None:
    """`chassis.validation` is plain, but importing it runs `chassis/__init__`, which imports
    `chassis.db` and so SQLAlchemy: a domain module may not import it."""
    real_modules, real_imports = modules(), imports_of
    fake = "services.fake.domain.model"
    monkeypatch.setattr(
        f"{__name__}.modules", lambda: {**real_modules, fake: (ROOT / "pyproject.toml", False)}
    )
    monkeypatch.setattr(
        f"{__name__}.imports_of",
        lambda m: (Import("chassis.validation", 1),) if m == fake else real_imports(m),
    )
    domain = next(rule for rule in RULES if rule.transitive)
    found = [v for v in violations(domain) if fake in v]
    assert any("chassis -> chassis.db imports sqlalchemy" in v for v in found), found
