"""Settings read once from the environment, cast, and validated at start-up.

A service declares a frozen dataclass whose fields carry their defaults; `from_env` reads
`PREFIX_FIELD` for each field, casts it by the field's annotation and raises one
`ConfigError` that names every bad variable, so a mis-set deployment stops before serving.

Secret fields (declared with `secret(...)`: database URLs with passwords, broker and Redis URLs,
client secrets, signing secrets) may instead be given as `<NAME>_FILE`, the path of a file whose
stripped content is the value - Docker secrets under /run/secrets and Kubernetes Secrets mounted
as files, so a password never sits in the process environment. Setting both, or naming a file
that cannot be read, is a start-up error naming the variable; secret values are never echoed in
error messages.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "ConfigError",
    "env_name",
    "from_env",
    "is_secret",
    "read_secret",
    "secret",
    "secret_environ",
]

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


FILE_SUFFIX = "_FILE"
_HIDDEN = "<secret>"


def secret(default: Any = dataclasses.MISSING, *, check: Any = None, env: str | None = None) -> Any:
    """A settings field holding a secret: also read from `<NAME>_FILE`, never shown in repr
    or in error messages. `check` and `env` mean what they mean in plain field metadata."""
    metadata: dict[str, Any] = {"secret": True}
    if check is not None:
        metadata["check"] = check
    if env is not None:
        metadata["env"] = env
    return dataclasses.field(default=default, repr=False, metadata=metadata)


def _redacted(raw: str | None) -> str:
    """A secret as error messages show it: a URL without its password, anything else hidden."""
    if raw and "://" in raw:
        parts = urlsplit(raw)
        if parts.password is None:
            return repr(raw)
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return repr(urlunsplit(parts._replace(netloc=f"{user}:***@{host}")))
    return _HIDDEN


def is_secret(field: dataclasses.Field[Any]) -> bool:
    return bool(field.metadata.get("secret"))


def env_name(field: dataclasses.Field[Any], prefix: str) -> str:
    """The variable a field is read from: its `env` metadata, else PREFIX + NAME."""
    return field.metadata.get("env") or f"{prefix}{field.name.upper()}"


def read_secret(name: str, environ: Mapping[str, str], errors: list[str]) -> str | None:
    """`NAME`'s value, from the variable itself or from the file `NAME_FILE` names.

    None when neither is set. Problems (both set, an unreadable or empty file) are appended to
    `errors` naming the variable, so a caller reports every bad setting at once.
    """
    file_var = name + FILE_SUFFIX
    if file_var not in environ:
        return environ.get(name)
    if name in environ:
        errors.append(f"{name} and {file_var}: set one, not both")
        return None
    path = environ[file_var]
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        errors.append(f"{file_var}={path!r}: cannot read the file: {reason}")
        return None
    if not value:
        errors.append(f"{file_var}={path!r}: the file is empty")
        return None
    return value


def secret_environ(environ: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    """A copy of `environ` where each of `names` given as `NAME_FILE` holds the file's content,
    for code that reads variables without a settings dataclass (the gateway's config file)."""
    env = dict(environ)
    errors: list[str] = []
    for name in names:
        value = read_secret(name, environ, errors)
        if value is not None:
            env[name] = value
    if errors:
        raise ConfigError("invalid configuration: " + "; ".join(errors))
    return env


def from_env(cls: type[T], prefix: str, environ: Mapping[str, str] | None = None) -> T:
    """Build `cls` (a dataclass) from `PREFIX_<FIELD>` variables; defaults where unset.

    A field's metadata may carry `env` (an exact variable name, for settings shared by every
    service such as the token issuer), `check` (a callable returning an error string or None)
    and `secret` (see `secret()`: the value may come from `<NAME>_FILE` and is never echoed).
    A secret field whose class also declares the `<NAME>_FILE` field itself (identity's secret
    key, generated into that file when missing) leaves the file to that field: only setting
    both is refused here.
    """
    env = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    declared = {env_name(f, prefix) for f in fields}
    values: dict[str, Any] = {}
    errors: list[str] = []
    for field in fields:
        name = env_name(field, prefix)
        hidden = is_secret(field)
        raw: str | None = env.get(name)
        if hidden:
            if name + FILE_SUFFIX in declared:
                if name in env and name + FILE_SUFFIX in env:
                    errors.append(f"{name} and {name}{FILE_SUFFIX}: set one, not both")
                    continue
            else:
                failed = len(errors)
                raw = read_secret(name, env, errors)
                if len(errors) > failed:
                    continue
        shown = _redacted(raw) if hidden else repr(raw)
        if raw is not None:
            try:
                values[field.name] = _cast(raw, hints[field.name])
            except ValueError as exc:
                errors.append(f"{name}={shown}: {exc}")
                continue
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            errors.append(f"{name}: required but not set")
            continue
        check = field.metadata.get("check")
        if check is not None and field.name in values:
            problem = check(values[field.name])
            if problem:
                errors.append(f"{name}={shown}: {problem}")
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
