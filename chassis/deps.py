"""One way to hand a service's dependencies to its web layer (ADR 0023).

Each service's composition root (`create_app`) builds one frozen, slotted `Deps` dataclass
(its engine, use cases or unit-of-work factories, cache policy, purger...) and stores it under
one key; handlers read it back, typed:

- aiohttp: `DEPS = deps_key(Deps)` (a typed `web.AppKey`); `app[DEPS] = Deps(...)` in
  `create_app`; `request.app[DEPS].service` in handlers.
- Flask: `provide(app, Deps(...))` stores it as `app.extensions["portico"]`;
  `dependencies(Deps)` returns it (from `current_app`, or from the given app in tests).

What exists only while the app runs (the outbox relay, the event consumer, the saga driver)
belongs to the cleanup context or `atexit` hook that starts it, not to `Deps`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from aiohttp import web

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["EXTENSION", "dependencies", "deps_key", "provide"]

T = TypeVar("T")

EXTENSION = "portico"  # the Flask `app.extensions` key of every service's Deps


def deps_key(kind: type[T]) -> web.AppKey[T]:
    """The aiohttp app key under which a service keeps its `Deps`."""
    return web.AppKey("portico.deps", kind)


def provide(app: Flask, deps: object) -> None:
    """Store a Flask service's `Deps` (once: a second call is a wiring mistake)."""
    if EXTENSION in app.extensions:
        raise RuntimeError("the app's dependencies are already provided")
    app.extensions[EXTENSION] = deps


def dependencies(kind: type[T], app: Flask | None = None) -> T:
    """A Flask service's `Deps`, from `app` or, in a request, from `current_app`."""
    if app is None:
        from flask import current_app

        app = current_app
    deps = app.extensions[EXTENSION]
    if not isinstance(deps, kind):
        raise TypeError(f"the app's dependencies are a {type(deps).__name__}, not {kind.__name__}")
    return deps
