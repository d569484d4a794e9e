"""Catalog settings, read once from `CATALOG_*` variables (token settings: `PORTICO_*`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from chassis import from_env

__all__ = ["CatalogSettings"]

_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def _check_url(value: str) -> str | None:
    if not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
        return "must be a sqlite:/// or postgresql:// URL"
    return None


def _check_level(value: str) -> str | None:
    return None if value.upper() in _LEVELS else f"must be one of {sorted(_LEVELS)}"


@dataclass(frozen=True)
class CatalogSettings:
    # Relative to the working directory, like every service's default (var/ is git-ignored).
    database_url: str = field(
        default="sqlite:///var/catalog/catalog.db", metadata={"check": _check_url}
    )
    log_level: str = field(default="INFO", metadata={"check": _check_level})
    # Bigger bodies are refused with 413 before any parsing.
    max_body_bytes: int = 64 * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CatalogSettings:
        return from_env(cls, "CATALOG_", environ)
