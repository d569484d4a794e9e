"""`flag`: a route answers only callers a feature flag (chassis.flags) is on for.

    routes:
      - name: products.v2.get
        policies:
          - use: flag
            settings: {name: catalog.v2_products}    # off for this caller: 404 problem+json

The flag is evaluated by `chassis.flags` - the same function, on the same file
(PORTICO_FLAGS_FILE) as the services - for the token's client id and subject, after auth
(order 350). One `FlagStore` per gateway, kept in the pipeline's resources across reloads and
built on first use: a bad flags file refuses the config that first names the policy (at start
or on reload), later edits of the file are picked up on their own and a bad edit keeps the
last good flags (chassis.flags). Off answers 404, as if the route did not exist for this
caller; routes without the policy never evaluate a flag.
"""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, fields, post_load, validate

from chassis import Problem
from chassis.flags import MAX_ID, FlagStore

from .exchange import Exchange
from .policy import Policy, PolicyContext, Verdict

__all__ = ["FLAG_STORE", "FeatureFlag", "flag_store"]

FLAG_STORE = "flags.store"  # its key in the pipeline's resources


class _Settings(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Length(min=1, max=MAX_ID))

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> str:
        return str(data["name"])


def flag_store(resources: dict[str, Any] | None) -> FlagStore:
    """The gateway's one store (from PORTICO_FLAGS_FILE; ConfigError when that is bad)."""
    if resources is None:
        return FlagStore.from_env()
    store: FlagStore | None = resources.get(FLAG_STORE)
    if store is None:
        store = resources[FLAG_STORE] = FlagStore.from_env()
    return store


class FeatureFlag(Policy):
    """404 problem+json unless the flag named in settings is on for this caller."""

    name = "flag"
    order = 350  # after auth (300): the claims are known; before the rate limit (400)
    Settings = _Settings
    responses = {"404": {"description": "the feature is not enabled for this caller"}}

    def __init__(self, settings: Any = None, context: PolicyContext | None = None) -> None:
        super().__init__(settings, context)
        self.store = flag_store(context.resources if context is not None else None)

    def on_request(self, ex: Exchange) -> Verdict:
        claims = ex.claims
        user = claims.subject if claims is not None else None
        if not self.store.is_enabled(self.settings, user=user, client=ex.consumer):
            raise Problem(404, "this feature is not enabled for this client")
        return None
