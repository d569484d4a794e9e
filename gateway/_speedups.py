"""The gateway's compiled hot path (ADR 0006): used only while it matches its source.

`gateway/front.py` and `gateway/http1.py` are plain Python. `python -m tools.speedups build`
(run by `make install`) compiles them with Cython, their `.pxd` files declaring the per-request
classes as extension types, into extension modules beside the sources, and records the sources'
digests in `_speedups.json`. Python imports an extension module before a `.py` of the same name,
so this finder, installed first, imports the source instead whenever a compiled module would
not be the code on disk: no manifest, a digest that differs (the source was edited since the
build) or `PORTICO_SPEEDUPS=off`. A stale build is never run; at worst the gateway is slower.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path

__all__ = ["COMPILED", "MANIFEST", "compiled_modules", "digest", "install", "stale"]

COMPILED = ("gateway.front", "gateway.http1")
_HERE = Path(__file__).resolve().parent
MANIFEST = _HERE / "_speedups.json"
_SETTING = "PORTICO_SPEEDUPS"


def digest(module: str, root: Path = _HERE) -> str:
    """sha256 over the module's `.py` and `.pxd`: what the compiled module was built from."""
    name = module.rpartition(".")[2]
    h = hashlib.sha256()
    for suffix in (".py", ".pxd"):
        path = root / f"{name}{suffix}"
        h.update(path.read_bytes() if path.exists() else b"")
    return h.hexdigest()


def stale(manifest: Path = MANIFEST, root: Path = _HERE) -> set[str]:
    """The compiled modules whose extension must not be used: not built from today's source."""
    try:
        built = json.loads(manifest.read_text())["digests"]
    except (OSError, ValueError, KeyError, TypeError):
        return set(COMPILED)
    if not isinstance(built, dict):
        return set(COMPILED)
    return {m for m in COMPILED if built.get(m) != digest(m, root)}


def enabled(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    value = environ.get(_SETTING, "on").strip().lower()
    if value not in ("on", "off"):
        raise ValueError(f"{_SETTING} must be 'on' or 'off', not {value!r}")
    return value == "on"


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds the `.py` of the named modules, ahead of the extension modules beside them."""

    def __init__(self, modules: set[str]) -> None:
        self.modules = modules

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        if fullname not in self.modules:
            return None
        source = _HERE / f"{fullname.rpartition('.')[2]}.py"
        loader = importlib.machinery.SourceFileLoader(fullname, str(source))
        return importlib.util.spec_from_file_location(fullname, source, loader=loader)


def install() -> None:
    """Before any compiled module is imported: send stale or disabled ones to their source.

    An invalid PORTICO_SPEEDUPS means the source here (the safe choice at import time); the
    gateway's start-up then stops with the setting's error (`gateway.__main__.serve`).
    """
    try:
        on = enabled()
    except ValueError:
        on = False
    sources = stale() if on else set(COMPILED)
    if sources and not any(isinstance(f, _SourceFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder(sources))


def compiled_modules() -> list[str]:
    """The compiled modules this process runs (for the start-up log line and the tests)."""
    return [
        name
        for name in COMPILED
        if name in sys.modules
        and not str(getattr(sys.modules[name], "__file__", "")).endswith(".py")
    ]
