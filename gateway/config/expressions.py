"""The syntax the config checks without running anything: path templates and aggregate
expressions (`{order.items[*].sku}`; see gateway.pipeline.aggregate for what they mean).

It lives with the config so that checking a file imports no request-path code: the
aggregate policy imports its parser from here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "STAR",
    "Expr",
    "ExprError",
    "Template",
    "check_aggregates",
    "parse_expr",
    "parse_select",
    "parse_template",
    "path_params",
    "walk",
]

_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def path_params(path: str) -> list[str]:
    return [m.group(1) for seg in path.split("/") if (m := _PARAM.match(seg))]


def _matcher(
    routes: Sequence[Mapping[str, Any]],
) -> Callable[[str], tuple[str, dict[str, str]] | None]:
    """The route table's precedence (gateway.routing.Router), on raw route entries: the
    matched path template and its routes' names by method (GET implies HEAD)."""
    entries: dict[str, dict[str, str]] = {}
    for r in routes:
        for method in r["methods"]:
            entries.setdefault(r["path"], {}).setdefault(method, r["name"])
    exact = {p: m for p, m in entries.items() if not p.endswith("/*") and not path_params(p)}
    templates = []
    for order, (p, m) in enumerate(entries.items()):
        if path_params(p) and not p.endswith("/*"):
            literal = sum(1 for s in p.split("/") if s and not s.startswith("{"))
            regex = "^/" + "/".join(
                "[^/]+" if _PARAM.match(s) else re.escape(s) for s in p.split("/")[1:]
            )
            templates.append((-literal, order, re.compile(regex + r"\Z"), p, m))
    templates.sort(key=lambda t: (t[0], t[1]))
    prefixes = sorted(
        ((p[:-1], p, m) for p, m in entries.items() if p.endswith("/*")), key=lambda t: -len(t[0])
    )

    def match(path: str) -> tuple[str, dict[str, str]] | None:
        if path in exact:
            return path, exact[path]
        for _, _, regex, p, m in templates:
            if regex.match(path):
                return p, m
        for prefix, p, m in prefixes:
            if path.startswith(prefix):
                return p, m
        return None

    return match


# --- the expression syntax ------------------------------------------------------------------

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(-?\d+)\]|\[(\*)\]")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
STAR = object()  # the fan-out step


class ExprError(ValueError):
    """An expression or template that does not follow the syntax above."""


@dataclass(frozen=True, slots=True)
class Expr:
    """`root` then steps: a str key, an int index, or STAR (fan-out)."""

    text: str
    root: str
    steps: tuple[Any, ...]

    @property
    def star(self) -> int | None:
        return next((i for i, s in enumerate(self.steps) if s is STAR), None)

    @property
    def list_key(self) -> tuple[Any, ...]:
        """Root and steps up to the `[*]`: what a fan-out iterates."""
        star = self.star
        assert star is not None
        return (self.root, *self.steps[:star])


def _steps(text: str, rest: str) -> tuple[Any, ...]:
    steps: list[Any] = []
    pos = 0
    while pos < len(rest):
        match = _STEP.match(rest, pos)
        if match is None:
            raise ExprError(f"bad expression {text!r} at {rest[pos:]!r}")
        key, index, star = match.groups()
        steps.append(key if key is not None else STAR if star else int(index))
        pos = match.end()
    if sum(1 for s in steps if s is STAR) > 1:
        raise ExprError(f"{text!r}: at most one '[*]' per expression")
    return tuple(steps)


def parse_expr(text: str) -> Expr:
    """`order.items[*].sku` -> Expr('order', ('items', STAR, 'sku'))."""
    match = re.match(_NAME, text)
    if match is None:
        raise ExprError(f"bad expression {text!r}: must start with a name")
    return Expr(text, match.group(0), _steps(text, text[match.end() :]))


def parse_select(text: str) -> tuple[Any, ...]:
    """A rootless path for `select:` (`items[0]`, `data.items`); no fan-out."""
    rest = text if text.startswith("[") else "." + text
    steps = _steps(text, rest)
    if STAR in steps:
        raise ExprError(f"{text!r}: '[*]' is not allowed in select")
    return steps


@dataclass(frozen=True, slots=True)
class Template:
    """A part's path: literal text and expressions, and the list it fans out over (if any)."""

    text: str
    pieces: tuple[str | Expr, ...]
    roots: frozenset[str]
    fanout: tuple[Any, ...] | None  # the list key shared by every `[*]` expression

    def sample(self) -> str:
        """The path with every expression replaced by 'x': what the config check routes."""
        return "".join(p if isinstance(p, str) else "x" for p in self.pieces).partition("?")[0]


def parse_template(text: str) -> Template:
    pieces: list[str | Expr] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(text):
        if match.start() > pos:
            pieces.append(text[pos : match.start()])
        pieces.append(parse_expr(match.group(1)))
        pos = match.end()
    tail = text[pos:]
    if (
        "{" in tail
        or "}" in tail
        or any("{" in p or "}" in p for p in pieces if isinstance(p, str))
    ):
        raise ExprError(f"unbalanced braces in {text!r}")
    if tail:
        pieces.append(tail)
    exprs = [p for p in pieces if isinstance(p, Expr)]
    keys = {e.list_key for e in exprs if e.star is not None}
    if len(keys) > 1:
        raise ExprError("every '[*]' of one path must iterate the same list")
    return Template(
        text=text,
        pieces=tuple(pieces),
        roots=frozenset(e.root for e in exprs),
        fanout=next(iter(keys)) if keys else None,
    )


_MISSING: Any = None


def walk(value: Any, steps: Iterable[Any]) -> Any:
    """Follow keys and indexes; None where anything is missing."""
    for step in steps:
        if isinstance(step, str):
            value = value.get(step) if isinstance(value, dict) else _MISSING
        elif isinstance(value, list) and -len(value) <= step < len(value):
            value = value[step]
        else:
            value = _MISSING
        if value is None:
            return None
    return value


# --- config checks (called by gateway.config) -----------------------------------------------


def check_aggregates(
    aggregates: Sequence[Mapping[str, Any]], routes: Sequence[Mapping[str, Any]]
) -> dict[int, Any]:
    """Graph errors by aggregate index (marshmallow's shape): names, references, routes."""
    match = _matcher(routes)
    route_names = {r["name"] for r in routes}
    errors: dict[int, Any] = {}
    seen_names: dict[str, int] = {}
    seen_paths: dict[str, int] = {}
    for i, agg in enumerate(aggregates):
        here: dict[str, Any] = {}
        name, path = agg["name"], agg["path"]
        if name in seen_names:
            here["name"] = [f"duplicate of aggregates[{seen_names[name]}].name"]
        elif name in route_names:
            here["name"] = ["is already the name of a route"]
        seen_names.setdefault(name, i)
        if path in seen_paths:
            here["path"] = [f"duplicate of aggregates[{seen_paths[path]}].path"]
        else:
            found = match(path)
            if found is not None and found[0] == path and "GET" in found[1]:
                here["path"] = [f"GET {path} is already routed by {found[1]['GET']!r}"]
        seen_paths.setdefault(path, i)
        params = set(path_params(path))
        known: set[str] = set()
        parts: dict[int, Any] = {}
        for j, part in enumerate(agg["parts"]):
            problems: dict[str, list[str]] = {}
            pname = part["name"]
            if pname in known:
                problems["name"] = ["duplicate part name"]
            elif pname in params:
                problems["name"] = ["is also a path parameter"]
            try:
                template = parse_template(part["path"])
            except ExprError as exc:
                problems["path"] = [str(exc)]
            else:
                unknown = sorted(template.roots - params - known)
                if unknown:
                    problems["path"] = [
                        f"{u!r} is neither a path parameter nor an earlier part" for u in unknown
                    ]
                elif not template.text.startswith("/"):
                    problems["path"] = ["must start with '/'"]
                else:
                    found = match(template.sample())
                    if found is None or "GET" not in found[1]:
                        problems["path"] = [f"no GET route matches {template.sample()!r}"]
            if part.get("select") is not None:
                try:
                    parse_select(part["select"])
                except ExprError as exc:
                    problems["select"] = [str(exc)]
            known.add(pname)
            if problems:
                parts[j] = problems
        if parts:
            here["parts"] = parts
        if here:
            errors[i] = here
    return errors
