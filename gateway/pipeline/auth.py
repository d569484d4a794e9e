"""Auth: the caller's token and the route's scopes (401/403/503), before anything counts.

A token verified before and still in date costs a dict lookup (`authenticate_cached`), and
the chain goes on inline; a new token is verified in a task (`authenticate`). A refused token
still counts against the client's address when the route is rate-limited (ADR 0013), so a
flood of forged tokens is throttled like anonymous calls.

With API keys on (GATEWAY_API_KEYS_URL, ADR 0036) every route that requires auth also takes
`X-API-Key` instead of a token (`KeyAuth`): a request without one runs the token path after
that one header lookup; with one, the key is checked against `gateway.apikeys`' cache (no
call), its scopes like a token's, and the upstream gets the key's access token instead of the
key. Both headers: 400. Without the setting the plain `Auth` is bound: nothing changes.
"""

from __future__ import annotations

from typing import Any

from chassis import Problem, TokenError, token_problem

from ..apikeys import API_KEY_HEADER, ApiKeyCache, KeyEntry, api_keys_for
from ..auth import authenticate, authenticate_cached
from ..routing import Route
from .exchange import Exchange
from .policy import Policy, Verdict

__all__ = ["Auth", "KeyAuth"]

_BOTH = "send either an Authorization token or an X-API-Key, not both"


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
        self.keys: ApiKeyCache | None = None
        if context is not None and type(self) is Auth:
            self.keys = api_keys_for(context)

    def bind(self, route: Route) -> Policy | None:
        if not route.auth_required:
            return None
        bound = Auth(None, self.context) if self.keys is None else KeyAuth(None, self.context)
        bound.keys = self.keys
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


class KeyAuth(Auth):
    """`Auth` that also takes an API key (bound only when API keys are on)."""

    def on_request(self, ex: Exchange) -> Verdict:
        value = ex.header(API_KEY_HEADER)
        if value is None:
            return Auth.on_request(self, ex)
        return self._key(ex, value)

    def _key(self, ex: Exchange, value: str) -> Verdict:
        route, keys = self.route, self.keys
        assert route is not None and keys is not None
        if ex.authorization is not None or len(ex.header_values(API_KEY_HEADER)) > 1:
            raise Problem(400, _BOTH if ex.authorization is not None else "one X-API-Key only")
        try:
            entry = keys.check(value)
            if not route.scopes <= entry.scopes:
                entry.claims.require(route.scope_list)
        except TokenError as exc:
            problem = token_problem(exc)
            if self.limiter is None:
                raise problem from None
            return self._refused(ex, problem)
        ex.claims = entry.claims
        ex.consumer = entry.claims.client_id
        ex.set_header(API_KEY_HEADER, None)  # the key never goes upstream; its token does
        token = keys.token_for(entry)
        if token is None:
            return self._exchange(ex, entry, value)
        self._bearer(ex, token)
        return None

    async def _exchange(self, ex: Exchange, entry: KeyEntry, value: str) -> None:
        keys = self.keys
        assert keys is not None
        try:
            token = await keys.exchange(entry, value)
        except TokenError as exc:
            ex.claims = None
            problem = token_problem(exc)
            if self.limiter is None:
                raise problem from None
            raise await self._count_refused(ex, problem) from None
        self._bearer(ex, token)

    @staticmethod
    def _bearer(ex: Exchange, token: str) -> None:
        ex.authorization = "Bearer " + token
        ex.headers.append(("Authorization", ex.authorization))

    async def start(self) -> None:
        if self.keys is not None:
            await self.keys.start()

    async def stop(self) -> None:
        if self.keys is not None:
            await self.keys.stop()

    def stats(self) -> dict[str, Any] | None:
        return {"api_keys": self.keys.stats()} if self.keys is not None else None
