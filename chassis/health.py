"""Liveness and readiness.

Liveness says the process can answer at all and is never more than a constant. Readiness
runs the named checks (database, broker, upstreams) and reports each one, so that an operator
sees which dependency holds the instance out of rotation.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

__all__ = ["LIVE", "Check", "run_checks", "run_checks_async"]

log = logging.getLogger(__name__)

Check = Callable[[], Any]  # returns (or awaits) anything; raising means "not ready"
LIVE = {"status": "ok"}


def _report(results: dict[str, str]) -> tuple[int, dict[str, Any]]:
    ok = all(v == "ok" for v in results.values())
    return (200 if ok else 503), {"status": "ok" if ok else "unavailable", "checks": results}


def run_checks(checks: Mapping[str, Check]) -> tuple[int, dict[str, Any]]:
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:
            log.warning("readiness check failed", extra={"check": name, "error": repr(exc)})
            results[name] = f"failed: {type(exc).__name__}"
    return _report(results)


async def run_checks_async(
    checks: Mapping[str, Callable[[], Any | Awaitable[Any]]], limit: float = 2.0
) -> tuple[int, dict[str, Any]]:
    async def one(name: str, check: Callable[[], Any]) -> tuple[str, str]:
        try:
            result = check()
            if inspect.isawaitable(result):
                await asyncio.wait_for(result, limit)
            return name, "ok"
        except Exception as exc:
            log.warning("readiness check failed", extra={"check": name, "error": repr(exc)})
            return name, f"failed: {type(exc).__name__}"

    pairs = await asyncio.gather(*(one(n, c) for n, c in checks.items()))
    return _report(dict(pairs))
