"""Settings read once from the environment, cast, and validated at start-up.

A service declares a frozen dataclass whose fields carry their defaults; `from_env` reads
`PREFIX_FIELD` for each field, casts it by the field's annotation and raises one
`ConfigError` that names every bad variable, so a mis-set deployment stops before serving.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["ConfigError", "from_env"]

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """Raised when environment variables are missing or malformed; the message names them."""


def _cast(raw: str, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if raw == "":
            return None
        return _cast(raw, args[0])
    if annotation is bool:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"expected one of {sorted(_TRUE | _FALSE - {''})}")
    if annotation is int:
        return int(raw)
    if annotation is float:
        return float(raw)
    if origin is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def from_env(cls: type[T], prefix: str, environ: Mapping[str, str] | None = None) -> T:
    """Build `cls` (a dataclass) from `PREFIX_<FIELD>` variables; defaults where unset.

    A field's metadata may carry `env` (an exact variable name, for settings shared by every
    service such as the token issuer) and `check` (a callable returning an error string or None).
    """
    env = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    errors: list[str] = []
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = field.metadata.get("env") or f"{prefix}{field.name.upper()}"
        if name in env:
            try:
                values[field.name] = _cast(env[name], hints[field.name])
            except ValueError as exc:
                errors.append(f"{name}={env[name]!r}: {exc}")
                continue
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            errors.append(f"{name}: required but not set")
            continue
        check = field.metadata.get("check")
        if check is not None and field.name in values:
            problem = check(values[field.name])
            if problem:
                errors.append(f"{name}={env[name]!r}: {problem}")
    if errors:
        raise ConfigError("invalid configuration: " + "; ".join(errors))
    return cls(**values)


# Field checks for `field(metadata={"check": ...})`: each returns an error string or None.

LOG_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})


def positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def not_negative(value: float) -> str | None:
    return None if value >= 0 else "must not be negative"


def port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be 0..65535"


def http_url(value: str) -> str | None:
    return None if value.startswith(("http://", "https://")) else "must be an http(s) URL"


def log_level(value: str) -> str | None:
    return None if value.upper() in LOG_LEVELS else f"must be one of {sorted(LOG_LEVELS)}"


def sync_database_url(value: str) -> str | None:
    """For blocking SQLAlchemy engines (Flask services)."""
    if value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
        return None
    return "must be a sqlite:/// or postgresql:// URL"


def async_database_url(value: str) -> str | None:
    """For SQLAlchemy asyncio engines (aiohttp services)."""
    if value.startswith(("sqlite+aiosqlite:", "postgresql+asyncpg:", "postgresql:")):
        return None
    return "must be a sqlite+aiosqlite:/// or postgresql+asyncpg:// URL"
