"""Route matching, compiled once: a request path finds its route in a dict hit or a few regexes.

Precedence: exact paths (one dict lookup), then `{param}` templates (most literal segments
first), then `/prefix/*` routes (longest first). The first path that matches decides: a method
it does not route gives 405 with `Allow`, never a fall-through to a looser path. `GET` implies
`HEAD` unless another route claims `HEAD` for the same path.

Everything a request needs from its route (scopes as a frozenset, the `Allow` header, the
rewrite as a ready format string) is computed here, so the hot path only reads attributes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .config import RouteConfig, path_params

__all__ = ["PathEntry", "Route", "Router"]


@dataclass(frozen=True, slots=True)
class Route:
    """One configured route with everything the request path needs precomputed."""

    name: str
    upstream: str
    auth_required: bool
    scopes: frozenset[str]
    scope_list: tuple[str, ...]
    timeout: float
    body_timeout: float  # the request body must be in within it (408)
    max_body_bytes: int
    prefix_len: int  # > 0 for '/prefix/*' routes: the length of '/prefix/'
    rewrite: str | None  # a str.format template, or the new '/prefix/' for prefix routes
    config: RouteConfig

    @classmethod
    def from_config(cls, cfg: RouteConfig) -> Route:
        prefix_len = len(cfg.path) - 1 if cfg.path.endswith("/*") else 0
        rewrite = cfg.rewrite
        if rewrite is not None and prefix_len:
            rewrite = rewrite[:-1]  # '/new/*' -> '/new/'
        return cls(
            name=cfg.name,
            upstream=cfg.upstream,
            auth_required=cfg.auth.required,
            scopes=frozenset(cfg.auth.scopes),
            scope_list=cfg.auth.scopes,
            timeout=cfg.timeout,
            body_timeout=cfg.body_timeout or cfg.timeout,
            max_body_bytes=cfg.max_body_bytes,
            prefix_len=prefix_len,
            rewrite=rewrite,
            config=cfg,
        )

    def target(self, raw_path: str, params: dict[str, str] | None) -> str:
        """The upstream request target (path and query) for a matched raw request target."""
        if self.rewrite is None:
            return raw_path
        path, sep, query = raw_path.partition("?")
        if self.prefix_len:
            new = self.rewrite + path[self.prefix_len :]
        else:
            new = self.rewrite.format_map(params or {})
        return new + sep + query


@dataclass(slots=True)
class PathEntry:
    """All routes sharing one path, by method, and the `Allow` header they imply."""

    path: str
    routes: dict[str, Route] = field(default_factory=dict)
    allow: str = ""


def _template_regex(path: str) -> re.Pattern[str]:
    parts = []
    for segment in path.split("/")[1:]:
        if segment.startswith("{") and segment.endswith("}"):
            parts.append(f"(?P<{segment[1:-1]}>[^/]+)")
        else:
            parts.append(re.escape(segment))
    return re.compile("^/" + "/".join(parts) + r"\Z")


class Router:
    def __init__(self, routes: Iterable[RouteConfig]) -> None:
        entries: dict[str, PathEntry] = {}
        for cfg in routes:
            entry = entries.setdefault(cfg.path, PathEntry(cfg.path))
            route = Route.from_config(cfg)
            for method in cfg.methods:
                entry.routes[method] = route
        for entry in entries.values():
            if "GET" in entry.routes and "HEAD" not in entry.routes:
                entry.routes["HEAD"] = entry.routes["GET"]
            entry.allow = ", ".join(sorted(entry.routes))

        self.routes: tuple[Route, ...] = tuple(
            {id(r): r for e in entries.values() for r in e.routes.values()}.values()
        )
        self._exact: dict[str, PathEntry] = {}
        templates: list[tuple[int, int, re.Pattern[str], PathEntry]] = []
        prefixes: list[tuple[str, PathEntry]] = []
        for order, (path, entry) in enumerate(entries.items()):
            if path.endswith("/*"):
                prefixes.append((path[:-1], entry))
            elif path_params(path):
                literal = sum(1 for s in path.split("/") if s and not s.startswith("{"))
                templates.append((-literal, order, _template_regex(path), entry))
            else:
                self._exact[path] = entry
        templates.sort(key=lambda t: (t[0], t[1]))
        self._templates = [(regex, entry) for _, _, regex, entry in templates]
        self._prefixes = sorted(prefixes, key=lambda p: -len(p[0]))

    def match(self, path: str) -> tuple[PathEntry, dict[str, str] | None] | None:
        """The entry for a path (no query string), with template parameters; None if unrouted."""
        entry = self._exact.get(path)
        if entry is not None:
            return entry, None
        for regex, entry in self._templates:
            m = regex.match(path)
            if m is not None:
                return entry, m.groupdict()
        for prefix, entry in self._prefixes:
            if path.startswith(prefix):
                return entry, None
        return None
