from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from chassis import ConfigError, from_env


@dataclass(frozen=True)
class Example:
    port: int = 8000
    debug: bool = False
    ratio: float = 0.5
    name: str = "svc"
    hosts: tuple[str, ...] = ()
    optional: int | None = None
    shared: str = field(default="x", metadata={"env": "SHARED_NAME"})
    positive: int = field(default=1, metadata={"check": lambda v: None if v > 0 else "must be > 0"})


def test_defaults_when_unset() -> None:
    assert from_env(Example, "EX_", {}) == Example()


def test_values_are_cast_by_annotation() -> None:
    env = {
        "EX_PORT": "9000",
        "EX_DEBUG": "yes",
        "EX_RATIO": "0.25",
        "EX_HOSTS": "a, b,,c",
        "EX_OPTIONAL": "",
        "SHARED_NAME": "y",
    }
    got = from_env(Example, "EX_", env)
    assert (got.port, got.debug, got.ratio, got.hosts, got.optional, got.shared) == (
        9000,
        True,
        0.25,
        ("a", "b", "c"),
        None,
        "y",
    )


def test_every_bad_variable_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        from_env(Example, "EX_", {"EX_PORT": "eighty", "EX_DEBUG": "maybe", "EX_POSITIVE": "0"})
    message = str(err.value)
    assert "EX_PORT='eighty'" in message
    assert "EX_DEBUG='maybe'" in message
    assert "EX_POSITIVE='0': must be > 0" in message


@dataclass(frozen=True)
class Required:
    secret: str


def test_required_variable_missing_is_named() -> None:
    with pytest.raises(ConfigError, match="REQ_SECRET: required"):
        from_env(Required, "REQ_", {})
