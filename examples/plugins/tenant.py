"""A tenant header check: a third-party gateway policy, loaded from gateway.yaml by dotted path.

    policies:
      - use: examples.plugins.tenant:TenantHeader
        settings: {header: X-Tenant, allowed: [acme, globex]}

A request without the header, or naming a tenant not allowed, is answered 400 / 403
problem+json by the gateway and never reaches the upstream; an allowed one goes on, with the
tenant in its access line and echoed on the answer (`X-Tenant`).
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, post_load, validate

from chassis import Problem
from gateway.pipeline import Exchange, Policy, Verdict

__all__ = ["TenantHeader"]


class _Settings(Schema):
    header = fields.String(load_default="X-Tenant", validate=validate.Length(min=1))
    allowed = fields.List(
        fields.String(validate=validate.Length(min=1)),
        required=True,
        validate=validate.Length(min=1, error="must list at least one tenant"),
    )

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {"header": data["header"], "allowed": frozenset(data["allowed"])}


class TenantHeader(Policy):
    name = "tenant"
    order = 350  # after auth (300), before the rate limit (400)
    Settings = _Settings
    responses = {
        "400": {"description": "the tenant header is missing"},
        "403": {"description": "this tenant is not allowed here"},
    }

    def on_request(self, ex: Exchange) -> Verdict:
        header: str = self.settings["header"]
        tenant = ex.header(header)
        if tenant is None:
            raise Problem(400, f"the {header} header is required")
        if tenant not in self.settings["allowed"]:
            raise Problem(403, f"tenant {tenant!r} is not allowed here")
        ex.set_var("tenant", tenant)
        ex.log_field("tenant", tenant)
        return None  # continue: decided at once, the chain stays inline

    def on_response_head(self, ex: Exchange) -> None:
        tenant = ex.var("tenant")
        if tenant is not None:
            ex.add_response_header(self.settings["header"], tenant)
