"""The gateway's declarative configuration: one YAML file, read and checked once at start-up.

`load_config` reads the file named by `GATEWAY_CONFIG` (default: `gateway.yaml` beside this
module), substitutes `${VAR}` / `${VAR:-default}` in string values, validates it with
marshmallow and returns frozen dataclasses with every default resolved, so the request path
never looks anything up twice. A bad file raises `chassis.ConfigError` whose message names each
bad key path (`routes[2].timeout: must be > 0`), and the gateway does not start.

Unknown keys are errors: a new feature (rate limits, retries, aggregates) adds its schema field
and its dataclass field together, so no key is ever accepted and silently ignored.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates_schema,
)

from chassis import ConfigError, TokenSettings
from chassis.flags import DEFAULT_FLAGS_FILE, check_flags_file
from chassis.settings import secret_environ
from chassis.validation import key_paths

from .expressions import check_aggregates, path_params
from .policies import PolicyRef, PolicyRefField, PolicySettingsField, register

__all__ = [
    "BALANCING",
    "DEFAULT_CONFIG_PATH",
    "IDEMPOTENT_METHODS",
    "AggregateConfig",
    "AggregatePart",
    "AuthConfig",
    "BreakerConfig",
    "ConsumerClass",
    "CorsPolicy",
    "GatewayConfig",
    "HealthCheck",
    "IPNetwork",
    "PassiveEjection",
    "PolicyRef",
    "Quota",
    "RateLimitPolicy",
    "RateLimitsConfig",
    "RetryPolicy",
    "RouteAuth",
    "RouteConfig",
    "ServerConfig",
    "UpstreamConfig",
    "check_config",
    "check_flags",
    "load_config",
    "parse_config",
    "past_sunsets",
    "path_params",
    "register",
]

DEFAULT_CONFIG_PATH = Path(__file__).parent.with_name("gateway.yaml")
# Variables that may hold a password: each may be given as `<NAME>_FILE` instead (chassis.settings).
SECRET_VARIABLES = ("GATEWAY_REDIS_URL",)
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_PARAM_REF = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ON_REDIS_ERROR = ("fail_open", "fail_closed")
BUILTIN_CONSUMER_CLASSES = ("anonymous", "authenticated")
BALANCING = ("round_robin", "least_connections", "weighted")
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_ON = ("502", "503", "504", "connect_error", "timeout")


# --- the model the rest of the gateway reads ---------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthCheck:
    path: str
    interval: float
    timeout: float | None = None  # None: min(2 s, interval, the upstream's timeout)
    healthy_threshold: int = 1  # consecutive passed probes to put an instance back
    unhealthy_threshold: int = 1  # consecutive failed probes to take it out


@dataclass(frozen=True, slots=True)
class PassiveEjection:
    """Out of rotation for `ejection_time` s after `consecutive_failures` failed requests."""

    consecutive_failures: int
    ejection_time: float


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """One `chassis.resilience.CircuitBreaker` per instance."""

    failure_threshold: int
    recovery_timeout: float


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    name: str
    instances: tuple[str, ...]  # origins, no trailing slash
    timeout: float
    pool_size: int
    health: HealthCheck
    balancing: str = "round_robin"
    weights: tuple[int, ...] = ()  # one per instance (used by `weighted`); empty: all 1
    passive: PassiveEjection | None = None
    breaker: BreakerConfig | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Up to `attempts` tries in all (first included), each on another instance, for
    idempotent methods only, while the upstream's retry budget (`budget_ratio`) allows."""

    attempts: int
    on_status: frozenset[int]
    on_connect_error: bool
    on_timeout: bool
    budget_ratio: float


@dataclass(frozen=True, slots=True)
class RouteAuth:
    required: bool
    scopes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RouteConfig:
    name: str
    methods: tuple[str, ...]
    path: str
    upstream: str
    rewrite: str | None
    auth: RouteAuth
    timeout: float  # resolved: the route's own, else its upstream's
    max_body_bytes: int  # resolved: the route's own, else the server's
    rate_limit: str | None = None  # a policy name in `rate_limits.policies`
    retry: RetryPolicy | None = None
    cors: str | None = None  # a policy name in `cors`
    # Seconds the request body may take to arrive (408 past it); None: the route's timeout.
    body_timeout: float | None = None
    policies: tuple[PolicyRef, ...] = ()  # the route's own (gateway.pipeline)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str
    port: int
    max_body_bytes: int
    # Peers whose X-Forwarded-For is believed when finding a client's IP (rate-limit key).
    trusted_proxies: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True, slots=True)
class Quota:
    """`limit` requests per `period` seconds, at most `burst` at once (GCRA)."""

    limit: int
    period: int
    burst: int


@dataclass(frozen=True, slots=True)
class ConsumerClass:
    """Tokens of these clients, or carrying any of these scopes, get the class's quotas."""

    name: str
    client_ids: frozenset[str]
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class RateLimitPolicy:
    name: str
    quota: Quota
    classes: Mapping[str, Quota]  # consumer class (named or built-in) -> its own quota
    on_redis_error: str  # resolved: the policy's own, else the section's


@dataclass(frozen=True, slots=True)
class RateLimitsConfig:
    redis_url: str | None = None  # None: the in-process limiter (one process only)
    key_prefix: str = "portico:rl:"
    redis_timeout: float = 0.005
    redis_connect_timeout: float = 0.5
    consumer_classes: tuple[ConsumerClass, ...] = ()
    policies: Mapping[str, RateLimitPolicy] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuthConfig:
    issuer: str
    audience: str
    jwks_url: str
    jwks_refetch_interval: float


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """Who may call a route from a browser (see gateway.pipeline.cors)."""

    name: str
    allow_origins: tuple[str, ...]  # exact origins, or "*"
    allow_methods: tuple[str, ...]  # empty: the route's own methods
    allow_headers: tuple[str, ...]
    expose_headers: tuple[str, ...]
    allow_credentials: bool
    max_age: int | None


@dataclass(frozen=True, slots=True)
class AggregatePart:
    """One GET of an aggregate; `path` may use expressions (see gateway.pipeline.aggregate)."""

    name: str
    path: str
    required: bool
    timeout: float | None  # None: the matched route's timeout
    select: str | None = None


@dataclass(frozen=True, slots=True)
class AggregateConfig:
    name: str
    path: str
    mode: str  # partial | all_or_nothing
    auth: RouteAuth
    parts: tuple[AggregatePart, ...]
    cors: str | None = None
    policies: tuple[PolicyRef, ...] = ()
    # A policy name in `rate_limits.policies`: the aggregate counts once itself (and each part
    # once more on its own route); a refused token counts against the caller's address here.
    rate_limit: str | None = None


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    server: ServerConfig
    auth: AuthConfig
    upstreams: Mapping[str, UpstreamConfig]
    routes: tuple[RouteConfig, ...]
    rate_limits: RateLimitsConfig = field(default_factory=RateLimitsConfig)
    cors: Mapping[str, CorsPolicy] = field(default_factory=dict)
    aggregates: tuple[AggregateConfig, ...] = ()
    policies: tuple[PolicyRef, ...] = ()  # on every route and aggregate


# --- path syntax shared with the router --------------------------------------------------


def _check_path(path: str) -> str | None:
    """None when `path` is an exact path, a `{param}` template or a `/prefix/*`."""
    if not path.startswith("/"):
        return "must start with '/'"
    body = path[:-2] if path.endswith("/*") else path
    seen: set[str] = set()
    for segment in body.split("/")[1:]:
        if "*" in segment:
            return "'*' is only allowed as the last segment ('/prefix/*')"
        if "{" in segment or "}" in segment:
            match = _PARAM.match(segment)
            if not match:
                return f"bad parameter segment {segment!r} (use '{{name}}')"
            if path.endswith("/*"):
                return "a prefix path ('/prefix/*') cannot have parameters"
            if match.group(1) in seen:
                return f"parameter {match.group(1)!r} appears twice"
            seen.add(match.group(1))
    return None


def _positive(what: str = "must be > 0") -> validate.Range:
    return validate.Range(min=0, min_inclusive=False, error=what)


def _check_cidr(value: str) -> str | None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return "must be an IP address or CIDR block"
    return None


def check_redis_url(url: str) -> str | None:
    """None for `redis://[[user]:password@]host[:port][/db]` (no TLS, no Unix sockets here)."""
    match = re.match(
        r"^redis://(?:[^@/]*@)?([^:/@]+|\[[0-9A-Fa-f:.]+\])(?::(\d+))?(?:/(\d*))?$", url
    )
    if not match:
        return "must be redis://[[user]:password@]host[:port][/db]"
    if match.group(2) and not 0 < int(match.group(2)) <= 65535:
        return "port must be 1..65535"
    return None


def _validator(check: Any) -> Any:
    def run(value: str) -> bool:
        problem = check(value)
        if problem:
            raise ValidationError(problem)
        return True

    return run


class _Whole(fields.Integer):
    """An integer that refuses 1.5 (marshmallow's Integer would truncate it) but takes "60"."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, float) and not value.is_integer():
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


_POLICY_NAME = validate.Regexp(
    r"^[A-Za-z0-9_:-]+\Z", error="must be letters, digits, '_', ':' or '-'"
)


# --- schemas ------------------------------------------------------------------------------


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class HealthSchema(_Strict):
    path = fields.String(
        load_default="/health/ready", validate=validate.Regexp(r"^/", error="must start with '/'")
    )
    interval = fields.Float(load_default=5.0, validate=_positive())
    timeout = fields.Float(load_default=None, validate=_positive())
    healthy_threshold = _Whole(load_default=1, validate=_positive())
    unhealthy_threshold = _Whole(load_default=1, validate=_positive())

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> HealthCheck:
        return HealthCheck(**data)


_INSTANCE_URL = fields.Url(
    require_tld=False,
    schemes={"http", "https"},
    error_messages={"invalid": "must be an http(s) URL"},
)


class InstanceSchema(_Strict):
    url = fields.Url(
        required=True,
        require_tld=False,
        schemes={"http", "https"},
        error_messages={"invalid": "must be an http(s) URL"},
    )
    weight = _Whole(load_default=1, validate=validate.Range(min=1, error="must be >= 1"))


class _Instance(fields.Field):
    """An instance: a plain URL string, or `{url, weight}`; loads as (url, weight)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            return (_INSTANCE_URL.deserialize(value), 1)
        if isinstance(value, dict):
            loaded = InstanceSchema().load(value)  # its ValidationError names url / weight
            return (loaded["url"], loaded["weight"])
        raise ValidationError("must be a URL or {url, weight}")


class PassiveSchema(_Strict):
    consecutive_failures = _Whole(load_default=5, validate=_positive())
    ejection_time = fields.Float(load_default=10.0, validate=_positive())

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> PassiveEjection:
        return PassiveEjection(**data)


class BreakerSchema(_Strict):
    failure_threshold = _Whole(load_default=5, validate=_positive())
    recovery_timeout = fields.Float(load_default=10.0, validate=_positive())

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> BreakerConfig:
        return BreakerConfig(**data)


class UpstreamSchema(_Strict):
    instances = fields.List(
        _Instance(),
        required=True,
        validate=validate.Length(min=1, error="must list at least one instance"),
    )
    timeout = fields.Float(load_default=10.0, validate=_positive())
    pool_size = fields.Integer(load_default=100, validate=_positive())
    health = fields.Nested(HealthSchema, load_default=lambda: HealthCheck("/health/ready", 5.0))
    balancing = fields.String(
        load_default="round_robin",
        validate=validate.OneOf(BALANCING, error="must be one of {choices}"),
    )
    passive = fields.Nested(PassiveSchema, load_default=None)
    breaker = fields.Nested(BreakerSchema, load_default=None)

    @validates_schema
    def check_weights(self, data: dict[str, Any], **_: Any) -> None:
        weighted = [i for i, (_url, w) in enumerate(data.get("instances", ())) if w != 1]
        if weighted and data.get("balancing") != "weighted":
            raise ValidationError(
                {
                    "instances": {
                        i: {"weight": ["only used with balancing: weighted"]} for i in weighted
                    }
                }
            )


class RetrySchema(_Strict):
    attempts = _Whole(load_default=2, validate=validate.Range(min=1, max=10, error="must be 1..10"))
    on = fields.List(
        fields.String(validate=validate.OneOf(RETRY_ON, error="must be one of {choices}")),
        load_default=lambda: ["502", "503", "504", "connect_error"],
    )
    budget_ratio = fields.Float(
        load_default=0.2,
        validate=validate.Range(min=0, max=1, min_inclusive=False, error="must be > 0 and <= 1"),
    )

    @pre_load
    def statuses_as_text(self, data: Any, **_: Any) -> Any:
        """`on: [502, timeout]`: YAML reads the codes as integers."""
        if isinstance(data, dict) and isinstance(data.get("on"), list):
            data = {**data, "on": [str(v) if isinstance(v, int) else v for v in data["on"]]}
        return data

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> RetryPolicy:
        on = set(data["on"])
        return RetryPolicy(
            attempts=data["attempts"],
            on_status=frozenset(int(v) for v in on if v.isdigit()),
            on_connect_error="connect_error" in on,
            on_timeout="timeout" in on,
            budget_ratio=data["budget_ratio"],
        )


class RouteAuthSchema(_Strict):
    required = fields.Boolean(load_default=True)
    scopes = fields.List(fields.String(validate=validate.Length(min=1)), load_default=list)

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> RouteAuth:
        return RouteAuth(required=data["required"], scopes=tuple(data["scopes"]))


class RouteSchema(_Strict):
    name = fields.String(required=True, validate=validate.Length(min=1))
    methods = fields.List(
        fields.String(validate=validate.OneOf(METHODS, error="must be one of {choices}")),
        required=True,
        validate=validate.Length(min=1, error="must list at least one method"),
    )
    path = fields.String(required=True)
    upstream = fields.String(required=True)
    rewrite = fields.String(load_default=None)
    auth = fields.Nested(RouteAuthSchema, load_default=lambda: RouteAuth(True, ()))
    timeout = fields.Float(load_default=None, validate=_positive())
    body_timeout = fields.Float(load_default=None, validate=_positive())
    max_body_bytes = fields.Integer(
        load_default=None, validate=validate.Range(min=0, error="must be >= 0")
    )
    rate_limit = fields.String(load_default=None)
    retry = fields.Nested(RetrySchema, load_default=None)
    cors = fields.String(load_default=None)
    policies = fields.List(PolicyRefField(), load_default=list)
    cache = PolicySettingsField("cache", load_default=None)  # gateway.pipeline.cache
    split = PolicySettingsField("split", load_default=None)  # gateway.pipeline.split
    # gateway.pipeline.deprecation: Deprecation, Sunset and successor Link on every answer
    deprecation = PolicySettingsField("deprecation", load_default=None)
    stream = PolicySettingsField("stream", load_default=None)  # gateway.pipeline.stream

    @validates_schema
    def check_paths(self, data: dict[str, Any], **_: Any) -> None:
        errors: dict[str, Any] = {}
        if data.get("retry") is not None and not IDEMPOTENT_METHODS & set(data.get("methods", ())):
            errors["retry"] = ["only GET, HEAD, OPTIONS, PUT and DELETE are retried; none is here"]
        path: str = data.get("path", "")
        problem = _check_path(path)
        if problem:
            errors["path"] = [problem]
        rewrite: str | None = data.get("rewrite")
        if rewrite is not None and not problem:
            rewrite_problem = _check_path(rewrite)
            if rewrite_problem is None:
                if path.endswith("/*") != rewrite.endswith("/*"):
                    rewrite_problem = "must be a '/prefix/*' exactly when path is one"
                else:
                    unknown = set(path_params(rewrite)) - set(path_params(path))
                    if unknown:
                        rewrite_problem = f"uses parameters not in path: {sorted(unknown)}"
            if rewrite_problem:
                errors["rewrite"] = [rewrite_problem]
        deprecation = data.get("deprecation")
        if deprecation is not None and not problem:
            successor = deprecation.settings.successor
            unknown = sorted(set(_PARAM_REF.findall(successor or "")) - set(path_params(path)))
            if unknown:
                errors["deprecation"] = {"successor": [f"uses parameters not in path: {unknown}"]}
        if errors:
            raise ValidationError(errors)


class ServerSchema(_Strict):
    host = fields.String(load_default="127.0.0.1")
    port = fields.Integer(
        load_default=8080, validate=validate.Range(min=0, max=65535, error="must be 0..65535")
    )
    max_body_bytes = fields.Integer(
        load_default=10 * 1024 * 1024, validate=validate.Range(min=0, error="must be >= 0")
    )
    trusted_proxies = fields.List(
        fields.String(validate=_validator(_check_cidr)), load_default=list
    )

    @pre_load
    def split_proxies(self, data: Any, **_: Any) -> Any:
        """`trusted_proxies` may be one string of comma-separated CIDRs (from an env var)."""
        value = data.get("trusted_proxies") if isinstance(data, dict) else None
        if isinstance(value, str):
            data = {**data, "trusted_proxies": [p.strip() for p in value.split(",") if p.strip()]}
        return data

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> ServerConfig:
        proxies = tuple(ipaddress.ip_network(p, strict=False) for p in data["trusted_proxies"])
        return ServerConfig(**{**data, "trusted_proxies": proxies})


class QuotaSchema(_Strict):
    limit = _Whole(required=True, validate=_positive())
    period = _Whole(required=True, validate=_positive("must be > 0 (whole seconds)"))
    burst = _Whole(load_default=None, validate=_positive())

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> Quota:
        burst = data["limit"] if data["burst"] is None else data["burst"]
        return Quota(limit=data["limit"], period=data["period"], burst=burst)


class PolicySchema(_Strict):
    limit = _Whole(required=True, validate=_positive())
    period = _Whole(required=True, validate=_positive("must be > 0 (whole seconds)"))
    burst = _Whole(load_default=None, validate=_positive())
    on_redis_error = fields.String(
        load_default=None, validate=validate.OneOf(ON_REDIS_ERROR, error="must be one of {choices}")
    )
    classes = fields.Dict(
        keys=fields.String(validate=_POLICY_NAME),
        values=fields.Nested(QuotaSchema),
        load_default=dict,
    )


class ConsumerClassSchema(_Strict):
    client_ids = fields.List(fields.String(validate=validate.Length(min=1)), load_default=list)
    scopes = fields.List(fields.String(validate=validate.Length(min=1)), load_default=list)

    @validates_schema
    def check_some(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("client_ids") and not data.get("scopes"):
            raise ValidationError("must list client_ids or scopes")


class RateLimitsSchema(_Strict):
    """Rate-limit policies; without `redis_url` (or GATEWAY_REDIS_URL) limits are in-process."""

    redis_url = fields.String(load_default=None)
    key_prefix = fields.String(load_default="portico:rl:")
    redis_timeout = fields.Float(load_default=0.005, validate=_positive())
    redis_connect_timeout = fields.Float(load_default=0.5, validate=_positive())
    on_redis_error = fields.String(
        load_default="fail_open",
        validate=validate.OneOf(ON_REDIS_ERROR, error="must be one of {choices}"),
    )
    consumer_classes = fields.Dict(
        keys=fields.String(
            validate=[
                _POLICY_NAME,
                validate.NoneOf(BUILTIN_CONSUMER_CLASSES, error="is a built-in class"),
            ]
        ),
        values=fields.Nested(ConsumerClassSchema),
        load_default=dict,
    )
    policies = fields.Dict(
        keys=fields.String(validate=_POLICY_NAME),
        values=fields.Nested(PolicySchema),
        load_default=dict,
    )

    @validates_schema
    def check_classes(self, data: dict[str, Any], **_: Any) -> None:
        errors: dict[str, Any] = {}
        url = data.get("redis_url")
        if url:
            problem = check_redis_url(url)
            if problem:
                errors["redis_url"] = [problem]
        known = set(BUILTIN_CONSUMER_CLASSES) | set(data.get("consumer_classes", {}))
        for name, policy in data.get("policies", {}).items():
            unknown = sorted(set(policy.get("classes", {})) - known)
            if unknown:
                errors.setdefault("policies", {})[name] = {
                    "classes": [f"unknown consumer class {c!r}" for c in unknown]
                }
        if errors:
            raise ValidationError(errors)


class AuthSchema(_Strict):
    """Every key defaults to the chassis `TokenSettings` (PORTICO_* variables)."""

    issuer = fields.String(validate=validate.Length(min=1))
    audience = fields.String(validate=validate.Length(min=1))
    jwks_url = fields.Url(require_tld=False, schemes={"http", "https"})
    jwks_refetch_interval = fields.Float(validate=_positive())


class CorsSchema(_Strict):
    allow_origins = fields.List(
        fields.String(validate=_validator(lambda v: _cors_check_origin(v))),
        required=True,
        validate=validate.Length(min=1, error="must list at least one origin (or '*')"),
    )
    allow_methods = fields.List(
        fields.String(validate=validate.OneOf(METHODS, error="must be one of {choices}")),
        load_default=list,
    )
    allow_headers = fields.List(
        fields.String(validate=validate.Length(min=1)),
        load_default=lambda: ["Authorization", "Content-Type"],
    )
    expose_headers = fields.List(fields.String(validate=validate.Length(min=1)), load_default=list)
    allow_credentials = fields.Boolean(load_default=False)
    max_age = _Whole(load_default=None, validate=validate.Range(min=0, error="must be >= 0"))

    @validates_schema
    def check_wildcards(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("allow_credentials") and "*" in data.get("allow_origins", ()):
            raise ValidationError(
                "'*' cannot be combined with allow_credentials: list the origins",
                "allow_origins",
            )
        if data.get("allow_credentials") and "*" in data.get("allow_headers", ()):
            raise ValidationError(
                "'*' cannot be combined with allow_credentials: list the headers",
                "allow_headers",
            )


_ORIGIN = re.compile(r"^https?://[^/?#\s]+\Z", re.IGNORECASE)


def check_origin(value: str) -> str | None:
    """None for '*' or a serialized origin ('https://shop.example:8443')."""
    if value == "*" or _ORIGIN.match(value):
        return None
    return "must be '*' or an origin like https://app.example.com (no path)"


def _cors_check_origin(value: str) -> str | None:
    return check_origin(value)


_PART_NAME = validate.Regexp(
    r"^[A-Za-z_][A-Za-z0-9_]*\Z", error="must be a name (letters, digits, '_')"
)


class AggregatePartSchema(_Strict):
    name = fields.String(
        required=True,
        validate=[_PART_NAME, validate.NoneOf(["errors"], error="is reserved")],
    )
    method = fields.String(
        load_default="GET", validate=validate.OneOf(["GET"], error="only GET parts are supported")
    )
    path = fields.String(required=True, validate=validate.Length(min=1))
    required = fields.Boolean(load_default=True)
    timeout = fields.Float(load_default=None, validate=_positive())
    select = fields.String(load_default=None, validate=validate.Length(min=1))

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data.pop("method")
        return data


class AggregateSchema(_Strict):
    """An aggregated GET endpoint: a small graph of GET parts (see gateway.pipeline.aggregate)."""

    name = fields.String(required=True, validate=validate.Length(min=1))
    method = fields.String(
        load_default="GET", validate=validate.OneOf(["GET"], error="aggregates answer GET only")
    )
    path = fields.String(required=True)
    mode = fields.String(
        load_default="partial",
        validate=validate.OneOf(("partial", "all_or_nothing"), error="must be one of {choices}"),
    )
    auth = fields.Nested(RouteAuthSchema, load_default=lambda: RouteAuth(True, ()))
    cors = fields.String(load_default=None)
    rate_limit = fields.String(load_default=None)
    policies = fields.List(PolicyRefField(), load_default=list)
    parts = fields.List(
        fields.Nested(AggregatePartSchema),
        required=True,
        validate=validate.Length(min=1, error="must list at least one part"),
    )

    @validates_schema
    def check_path(self, data: dict[str, Any], **_: Any) -> None:
        path: str = data.get("path", "")
        problem = _check_path(path)
        if problem is None and path.endswith("/*"):
            problem = "an aggregate path cannot be a '/prefix/*'"
        if problem:
            raise ValidationError(problem, "path")


class GatewaySchema(_Strict):
    server = fields.Nested(ServerSchema, load_default=lambda: ServerSchema().load({}))
    auth = fields.Nested(AuthSchema, load_default=dict)
    rate_limits = fields.Nested(RateLimitsSchema, load_default=lambda: RateLimitsSchema().load({}))
    upstreams = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1)),
        values=fields.Nested(UpstreamSchema),
        required=True,
        validate=validate.Length(min=1, error="must define at least one upstream"),
    )
    routes = fields.List(
        fields.Nested(RouteSchema),
        required=True,
        validate=validate.Length(min=1, error="must define at least one route"),
    )
    cors = fields.Dict(
        keys=fields.String(validate=_POLICY_NAME),
        values=fields.Nested(CorsSchema),
        load_default=dict,
    )
    aggregates = fields.List(fields.Nested(AggregateSchema), load_default=list)
    policies = fields.List(PolicyRefField(), load_default=list)

    @validates_schema
    def check_cors_and_aggregates(self, data: dict[str, Any], **_: Any) -> None:
        """CORS and rate-limit policy names exist; aggregates form a valid graph over the routes."""
        policies = data.get("cors", {})
        errors: dict[str, Any] = {}
        for section in ("routes", "aggregates"):
            for i, item in enumerate(data.get(section, [])):
                if item.get("cors") is not None and item["cors"] not in policies:
                    errors.setdefault(section, {}).setdefault(i, {})["cors"] = [
                        f"unknown CORS policy {item['cors']!r}"
                    ]
        limits = data.get("rate_limits", {}).get("policies", {})
        for i, item in enumerate(data.get("aggregates", [])):
            if item.get("rate_limit") is not None and item["rate_limit"] not in limits:
                errors.setdefault("aggregates", {}).setdefault(i, {})["rate_limit"] = [
                    f"unknown rate-limit policy {item['rate_limit']!r}"
                ]
        routes = data.get("routes", [])
        for i, problems in check_aggregates(data.get("aggregates", []), routes).items():
            errors.setdefault("aggregates", {}).setdefault(i, {}).update(problems)
        if errors:
            raise ValidationError(errors)

    @validates_schema
    def check_references(self, data: dict[str, Any], **_: Any) -> None:
        upstreams = data.get("upstreams", {})
        policies = data.get("rate_limits", {}).get("policies", {})
        names: dict[str, int] = {}
        claimed: dict[tuple[str, str], str] = {}
        errors: dict[int, dict[str, Any]] = {}
        for i, route in enumerate(data.get("routes", [])):
            here = errors.setdefault(i, {})
            if route["upstream"] not in upstreams:
                here["upstream"] = [f"unknown upstream {route['upstream']!r}"]
            if route.get("rate_limit") is not None and route["rate_limit"] not in policies:
                here["rate_limit"] = [f"unknown rate-limit policy {route['rate_limit']!r}"]
            split = route.get("split")
            if split is not None and (
                bad := split.cls.check(split.settings, route["upstream"], upstreams)
            ):
                here["split"] = bad  # upstream names: gateway.pipeline.split.Split.check
            if route.get("stream") is not None and set(route["methods"]) - {"GET", "HEAD"}:
                here["stream"] = ["a stream route takes GET only (gateway.pipeline.stream)"]
            if route["name"] in names:
                here["name"] = [f"duplicate of routes[{names[route['name']]}].name"]
            names.setdefault(route["name"], i)
            for method in route["methods"]:
                other = claimed.setdefault((method, route["path"]), route["name"])
                if other != route["name"]:
                    here.setdefault("methods", []).append(
                        f"{method} {route['path']} is already routed by {other!r}"
                    )
        errors = {i: e for i, e in errors.items() if e}
        if errors:
            raise ValidationError({"routes": errors})


# --- loading -------------------------------------------------------------------------------


def _substitute(value: Any, where: str, environ: Mapping[str, str], errors: list[str]) -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string value (never in keys)."""
    if isinstance(value, str):

        def one(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            errors.append(f"{where or '<root>'}: environment variable {name} is not set")
            return ""

        return _ENV_REF.sub(one, value) if "${" in value else value
    if isinstance(value, dict):
        return {
            k: _substitute(v, f"{where}.{k}" if where else str(k), environ, errors)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_substitute(v, f"{where}[{i}]", environ, errors) for i, v in enumerate(value)]
    return value


def _rate_limits(raw: dict[str, Any], environ: Mapping[str, str]) -> RateLimitsConfig:
    """GATEWAY_REDIS_URL, when set and not empty, overrides `rate_limits.redis_url`."""
    redis_url = environ.get("GATEWAY_REDIS_URL") or raw["redis_url"] or None
    if redis_url:
        problem = check_redis_url(redis_url)
        if problem:
            raise ConfigError(
                f"invalid redis URL (GATEWAY_REDIS_URL or rate_limits.redis_url): {problem}"
            )
    policies = {
        name: RateLimitPolicy(
            name=name,
            quota=Quota(
                limit=p["limit"],
                period=p["period"],
                burst=p["limit"] if p["burst"] is None else p["burst"],
            ),
            classes=dict(p["classes"]),
            on_redis_error=p["on_redis_error"] or raw["on_redis_error"],
        )
        for name, p in raw["policies"].items()
    }
    classes = tuple(
        ConsumerClass(name, frozenset(c["client_ids"]), frozenset(c["scopes"]))
        for name, c in raw["consumer_classes"].items()
    )
    return RateLimitsConfig(
        redis_url=redis_url,
        key_prefix=raw["key_prefix"],
        redis_timeout=raw["redis_timeout"],
        redis_connect_timeout=raw["redis_connect_timeout"],
        consumer_classes=classes,
        policies=policies,
    )


def _build(
    data: dict[str, Any], tokens: TokenSettings, environ: Mapping[str, str] | None = None
) -> GatewayConfig:
    server: ServerConfig = data["server"]
    auth = AuthConfig(
        issuer=data["auth"].get("issuer", tokens.issuer),
        audience=data["auth"].get("audience", tokens.audience),
        jwks_url=data["auth"].get("jwks_url", tokens.jwks_url),
        jwks_refetch_interval=data["auth"].get(
            "jwks_refetch_interval", tokens.jwks_refetch_interval
        ),
    )
    upstreams = {
        name: UpstreamConfig(
            name=name,
            instances=tuple(url.rstrip("/") for url, _weight in raw["instances"]),
            timeout=raw["timeout"],
            pool_size=raw["pool_size"],
            health=raw["health"],
            balancing=raw["balancing"],
            weights=tuple(weight for _url, weight in raw["instances"]),
            passive=raw["passive"],
            breaker=raw["breaker"],
        )
        for name, raw in data["upstreams"].items()
    }
    routes = tuple(
        RouteConfig(
            name=raw["name"],
            methods=tuple(dict.fromkeys(raw["methods"])),
            path=raw["path"],
            upstream=raw["upstream"],
            rewrite=raw["rewrite"],
            auth=raw["auth"],
            timeout=raw["timeout"] or upstreams[raw["upstream"]].timeout,
            max_body_bytes=(
                server.max_body_bytes if raw["max_body_bytes"] is None else raw["max_body_bytes"]
            ),
            rate_limit=raw["rate_limit"],
            retry=raw["retry"],
            cors=raw["cors"],
            body_timeout=raw["body_timeout"],
            policies=tuple(raw["policies"])
            + tuple(raw[key] for key in ("cache", "split", "deprecation") if raw[key])
            + (
                (raw["stream"], *raw["stream"].cls.companions(raw["stream"]))
                if raw["stream"]
                else ()
            ),
        )
        for raw in data["routes"]
    )
    return GatewayConfig(
        server=server,
        auth=auth,
        upstreams=upstreams,
        routes=routes,
        rate_limits=_rate_limits(data["rate_limits"], environ or {}),
        cors={
            name: CorsPolicy(
                name=name,
                allow_origins=tuple(p["allow_origins"]),
                allow_methods=tuple(p["allow_methods"]),
                allow_headers=tuple(p["allow_headers"]),
                expose_headers=tuple(p["expose_headers"]),
                allow_credentials=p["allow_credentials"],
                max_age=p["max_age"],
            )
            for name, p in data["cors"].items()
        },
        aggregates=tuple(
            AggregateConfig(
                name=a["name"],
                path=a["path"],
                mode=a["mode"],
                auth=a["auth"],
                parts=tuple(AggregatePart(**p) for p in a["parts"]),
                cors=a["cors"],
                policies=tuple(a["policies"]),
                rate_limit=a["rate_limit"],
            )
            for a in data["aggregates"]
        ),
        policies=tuple(data["policies"]),
    )


def parse_config(
    raw: Any, *, source: str = "gateway config", environ: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Validate an already-parsed YAML document; raise ConfigError naming every bad key."""
    env = secret_environ(os.environ if environ is None else environ, SECRET_VARIABLES)
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid {source}: the document must be a mapping")
    errors: list[str] = []
    substituted = _substitute(raw, "", env, errors)
    if errors:
        raise ConfigError(f"invalid {source}: " + "; ".join(errors))
    try:
        data = GatewaySchema().load(substituted)
    except ValidationError as exc:
        raise ConfigError(f"invalid {source}: " + "; ".join(key_paths(exc.messages))) from None
    return _build(data, TokenSettings.from_env(env), env)


def load_config(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Read the file at `path`, else `$GATEWAY_CONFIG`, else the packaged `gateway.yaml`."""
    env = os.environ if environ is None else environ
    file = Path(path or env.get("GATEWAY_CONFIG") or DEFAULT_CONFIG_PATH)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read gateway config {file}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"gateway config {file} is not valid YAML: {exc}") from None
    return parse_config(raw, source=f"gateway config {file}", environ=env)


def check_config(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> list[str]:
    """Every problem in a config file as `key.path: message` lines; empty when it is valid.

    Unlike `load_config` it goes on past unset variables, so one run lists all that is wrong
    (`python -m gateway check`, like `krakend check`); the flags file's problems follow.
    """
    env = os.environ if environ is None else environ
    return _check_gateway(path, env) + check_flags(env)


def _check_gateway(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> list[str]:
    file = Path(path or env.get("GATEWAY_CONFIG") or DEFAULT_CONFIG_PATH)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        return [f"<file>: cannot read {file}: {exc.strerror}"]
    except yaml.YAMLError as exc:
        return [f"<file>: not valid YAML: {exc}"]
    if not isinstance(raw, dict):
        return ["<root>: the document must be a mapping"]
    try:
        env = secret_environ(env, SECRET_VARIABLES)
    except ConfigError as exc:
        return [str(exc)]
    errors: list[str] = []
    substituted = _substitute(raw, "", env, errors)
    try:
        data = GatewaySchema().load(substituted)
    except ValidationError as exc:
        return errors + key_paths(exc.messages)
    if errors:
        return errors
    try:
        config = _build(data, TokenSettings.from_env(env), env)
    except ConfigError as exc:
        return [str(exc)]
    return past_sunsets(config)


def past_sunsets(config: GatewayConfig, now: dt.datetime | None = None) -> list[str]:
    """`routes[i].deprecation.sunset: ... is in the past`, one line per deprecated route whose
    sunset has passed. A config change naming one is refused (`python -m gateway check`, a
    reload); a gateway that starts with one serves it, the route answering 410 Gone, so a
    restart after the sunset is no outage of the other routes (ADR 0032)."""
    now = now or dt.datetime.now(dt.UTC)
    found = []
    for i, route in enumerate(config.routes):
        for ref in route.policies:
            sunset = getattr(ref.settings, "sunset", None) if ref.use == "deprecation" else None
            if isinstance(sunset, dt.datetime) and sunset <= now:
                found.append(f"routes[{i}].deprecation.sunset: {sunset.isoformat()} is in the past")
    return found


def check_flags(environ: Mapping[str, str]) -> list[str]:
    """The flags file's problems (PORTICO_FLAGS_FILE, else `flags.yaml` when present), each
    as `PORTICO_FLAGS_FILE=<path>: key.path: message` (chassis.flags)."""
    named = environ.get("PORTICO_FLAGS_FILE") or None
    path = Path(named or DEFAULT_FLAGS_FILE)
    if named is None and not path.exists():
        return []
    return [f"PORTICO_FLAGS_FILE={path}: {line}" for line in check_flags_file(path)]
