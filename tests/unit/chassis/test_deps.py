"""One way to wire a service's dependencies (ADR 0023): a frozen `Deps` under one key."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
from aiohttp import web
from flask import Flask

from chassis.deps import EXTENSION, dependencies, deps_key, provide

FLASK = ("catalog", "payments", "identity")
AIOHTTP = ("inventory", "orders", "notifications", "views")


@dataclasses.dataclass(frozen=True, slots=True)
class _Deps:
    name: str


def test_flask_deps_are_stored_once_and_read_back_typed() -> None:
    app = Flask(__name__)
    provide(app, _Deps("x"))
    assert app.extensions[EXTENSION] == _Deps("x")
    assert dependencies(_Deps, app).name == "x"
    with app.app_context():
        assert dependencies(_Deps).name == "x"  # from current_app
    with pytest.raises(RuntimeError, match="already provided"):
        provide(app, _Deps("y"))
    with pytest.raises(TypeError, match="not str"):
        dependencies(str, app)


def test_the_aiohttp_key_is_typed() -> None:
    app = web.Application()
    key = deps_key(_Deps)
    app[key] = _Deps("x")
    assert app[key].name == "x"


@pytest.mark.parametrize("name", FLASK + AIOHTTP)
def test_every_service_has_one_frozen_slotted_deps(name: str) -> None:
    module = importlib.import_module(f"services.{name}.entrypoints.deps")
    params = module.Deps.__dataclass_params__
    assert params.frozen and hasattr(module.Deps, "__slots__"), name
    if name in AIOHTTP:
        assert isinstance(module.DEPS, web.AppKey), name
    else:
        assert callable(module.deps), name
