"""`policies:` entries in gateway.yaml: which policy class, its settings, its order.

An entry is a name or dotted path (`use:`), or a mapping::

    policies:
      - use: examples.plugins.tenant:TenantHeader   # module:Class or module.Class
        settings: {header: X-Tenant, allowed: [acme]}
        order: 650                                  # optional: else the class's own

The class is imported here, by name, to load its settings with its own marshmallow schema
(`Settings`), so a bad setting is refused with its key path like any built-in key
(`routes[2].policies[0].settings.allowed: ...`). This module imports no gateway code: the
names of the pluggable policies shipped with the gateway are strings in `BUILTIN`, resolved
the same way as a user's dotted path; `register` adds a name.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError, fields

__all__ = ["BUILTIN", "PolicyRef", "PolicyRefField", "PolicySettingsField", "register", "resolve"]

# name -> "module:Class" of the policies a route may name by a short name
BUILTIN: dict[str, str] = {
    "noop": "gateway.pipeline.noop:NoOp",
    "cache": "gateway.pipeline.cache:Cache",
    "transforms": "gateway.pipeline.transforms:Transforms",
    "split": "gateway.pipeline.split:Split",
    "deprecation": "gateway.pipeline.deprecation:Deprecation",
    "flag": "gateway.pipeline.feature_flag:FeatureFlag",
    "stream": "gateway.pipeline.stream:Stream",
}
_KEYS = frozenset({"use", "settings", "order"})


@dataclass(frozen=True, slots=True, eq=False)
class PolicyRef:
    """A policy named in the config: its class, loaded settings and order."""

    use: str
    cls: Any  # the Policy subclass
    settings: Any  # what its Settings schema loaded (None without one)
    order: int  # the entry's `order:`, else the class's

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PolicyRef) and (self.use, self.settings, self.order) == (
            other.use,
            other.settings,
            other.order,
        )

    def __hash__(self) -> int:
        return hash((self.use, self.order))


def register(name: str, target: str | type) -> None:
    """Make `name` usable in `policies:` for a class or its "module:Class" path."""
    BUILTIN[name] = (
        target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"
    )


def resolve(use: str) -> Any:
    """The class named by a registered name, `module:Class` or `module.Class`."""
    path = BUILTIN.get(use, use)
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValidationError(f"unknown policy {use!r} (a registered name or module:Class)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValidationError(f"cannot import {module_name!r}: {exc}") from None
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ValidationError(f"{module_name!r} has no {attr!r}")
    if not isinstance(target, type) or not callable(getattr(target, "on_request", None)):
        raise ValidationError(f"{use!r} is not a policy class (gateway.pipeline.Policy)")
    return target


class PolicyRefField(fields.Field):
    """One `policies:` entry, loaded as a `PolicyRef` (errors keyed use / settings / order)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> PolicyRef:
        if isinstance(value, str):
            value = {"use": value}
        if not isinstance(value, dict):
            raise ValidationError("must be a policy name or {use, settings, order}")
        unknown = sorted(str(k) for k in value if k not in _KEYS)
        if unknown:
            raise ValidationError({k: ["Unknown field."] for k in unknown})
        use = value.get("use")
        if not isinstance(use, str) or not use:
            raise ValidationError({"use": ["Missing data for required field."]})
        try:
            cls = resolve(use)
        except ValidationError as exc:
            raise ValidationError({"use": exc.messages}) from None
        order = value.get("order", cls.order)
        if isinstance(order, bool) or not isinstance(order, int):
            raise ValidationError({"order": ["must be an integer"]})
        raw = value.get("settings")
        schema = getattr(cls, "Settings", None)
        if schema is None:
            if raw:
                raise ValidationError({"settings": [f"{use} takes no settings"]})
            settings = None
        else:
            if raw is not None and not isinstance(raw, dict):
                raise ValidationError({"settings": ["must be a mapping"]})
            try:
                settings = schema().load(raw or {})
            except ValidationError as exc:
                raise ValidationError({"settings": exc.messages}) from None
        return PolicyRef(use=use, cls=cls, settings=settings, order=order)


class PolicySettingsField(fields.Field):
    """A route key that attaches one registered policy with its settings (`cache: {ttl: 30}`
    is `policies: [{use: cache, settings: {ttl: 30}}]`; errors keyed under the key itself)."""

    def __init__(self, use: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.use = use

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> PolicyRef:
        if value is True:
            value = {}
        if not isinstance(value, dict):
            raise ValidationError("must be a mapping of settings (or true for the defaults)")
        cls = resolve(self.use)
        schema = getattr(cls, "Settings", None)
        settings = schema().load(value) if schema is not None else None
        return PolicyRef(use=self.use, cls=cls, settings=settings, order=cls.order)
