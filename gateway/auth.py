"""Stage 1: who is calling, and may they use this route.

Tokens are checked with the chassis `AsyncTokenVerifier` (the same checks every service runs
again behind us). The hot path is `verifier.cached(token)`: a token verified before and still
in date costs one dict lookup and a subset test, with no await. The `Authorization` header
itself is forwarded unchanged by the proxy.
"""

from __future__ import annotations

from typing import Any

import orjson

from chassis import AsyncTokenVerifier, Claims, TokenError, TokenPolicy, bearer_token, token_problem

from .config import AuthConfig
from .routing import Route
from .transport import OutboundRequest, Transport, split_url

__all__ = ["JWKS_POOL", "authenticate", "authenticate_cached", "jwks_fetcher", "make_verifier"]

JWKS_POOL = "_control"  # the transport pool for the gateway's own calls (JWKS, health, specs)
_JWKS_TIMEOUT = 5.0


class JwksUnavailable(Exception):
    """The JWKS endpoint answered with something other than a key set."""


def jwks_fetcher(transport: Transport, url: str, timeout: float = _JWKS_TIMEOUT) -> Any:
    """An async callable fetching the issuer's JWKS through the gateway's own transport."""
    origin, target = split_url(url)
    request = OutboundRequest(
        pool=JWKS_POOL,
        origin=origin,
        method="GET",
        target=target,
        headers={"Accept": "application/json"},
        timeout=timeout,
    )

    async def fetch() -> dict[str, Any]:
        response = await transport.send(request)
        try:
            body = await response.read()
        finally:
            response.close()
        if response.status != 200:
            raise JwksUnavailable(f"JWKS answered {response.status}")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise JwksUnavailable("JWKS is not JSON") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise JwksUnavailable("JWKS has no keys list")
        return doc

    return fetch


def make_verifier(config: AuthConfig, transport: Transport) -> AsyncTokenVerifier:
    return AsyncTokenVerifier(
        TokenPolicy(issuer=config.issuer, audience=config.audience),
        jwks_fetcher(transport, config.jwks_url),
        refetch_interval=config.jwks_refetch_interval,
    )


def authenticate_cached(
    verifier: AsyncTokenVerifier, route: Route, authorization: str | None
) -> Claims | None:
    """`authenticate` without an await for a token verified before and still in date; None
    when the token must be verified (`authenticate`). Raises the same 401/403 problems."""
    try:
        claims = verifier.cached(bearer_token(authorization))
        if claims is not None and not route.scopes <= claims.scopes:
            claims.require(route.scope_list)
    except TokenError as exc:
        raise token_problem(exc) from None
    return claims


async def authenticate(
    verifier: AsyncTokenVerifier, route: Route, authorization: str | None
) -> Claims | None:
    """Claims of a valid token carrying the route's scopes; raise a 401/403/503 Problem."""
    if not route.auth_required:
        return None
    try:
        token = bearer_token(authorization)
        claims = verifier.cached(token)
        if claims is None:
            claims = await verifier.verify(token)
        if not route.scopes <= claims.scopes:
            claims.require(route.scope_list)  # raises InsufficientScope naming what is missing
    except TokenError as exc:
        raise token_problem(exc) from None
    return claims
