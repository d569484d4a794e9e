"""Auth: the caller's token and the route's scopes (401/403/503), before anything counts.

A token verified before and still in date costs a dict lookup (`authenticate_cached`), and
the chain goes on inline; a new token is verified in a task (`authenticate`). A refused token
still counts against the client's address when the route is rate-limited (ADR 0013), so a
flood of forged tokens is throttled like anonymous calls.
"""

from __future__ import annotations

from typing import Any

from chassis import Problem

from ..auth import authenticate, authenticate_cached
from ..routing import Route
from .exchange import Exchange
from .policy import Policy, Verdict

__all__ = ["Auth"]


class Auth(Policy):
    name = "auth"
    order = 300

    def __init__(self, settings: Any = None, context: Any = None) -> None:
        super().__init__(settings, context)
        self.route: Route | None = None
        self.verifier = context.verifier if context is not None else None
        limiter = context.limiter if context is not None else None
        self.limiter: Any = None
        self._limited = limiter

    def bind(self, route: Route) -> Policy | None:
        if not route.auth_required:
            return None
        bound = Auth(None, self.context)
        bound.route = route
        limiter = self._limited
        if limiter is not None and limiter.by_route.get(route.name) is not None:
            bound.limiter = limiter
        return bound

    def on_request(self, ex: Exchange) -> Verdict:
        route = self.route
        assert route is not None
        try:
            claims = authenticate_cached(self.verifier, route, ex.authorization)
        except Problem as problem:
            if self.limiter is None:
                raise
            return self._refused(ex, problem)
        if claims is None:
            return self._verify(ex)
        ex.claims = claims
        ex.consumer = claims.client_id
        return None

    async def _verify(self, ex: Exchange) -> None:
        route = self.route
        assert route is not None
        try:
            claims = await authenticate(self.verifier, route, ex.authorization)
        except Problem as problem:
            if self.limiter is None:
                raise
            raise await self._count_refused(ex, problem) from None
        ex.claims = claims
        if claims is not None:
            ex.consumer = claims.client_id

    async def _refused(self, ex: Exchange, problem: Problem) -> None:
        raise await self._count_refused(ex, problem)

    async def _count_refused(self, ex: Exchange, problem: Problem) -> Problem:
        limiter = self.limiter
        route = self.route
        assert route is not None
        return await limiter.refused(
            route.name, problem, lambda: limiter.client_ip_of(ex.remote, tuple(ex.forwarded_for))
        )
