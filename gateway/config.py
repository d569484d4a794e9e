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
    validate,
    validates_schema,
)

from chassis import ConfigError, TokenSettings

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "AuthConfig",
    "ConsumerClass",
    "GatewayConfig",
    "HealthCheck",
    "IPNetwork",
    "Quota",
    "RateLimitPolicy",
    "RateLimitsConfig",
    "RouteAuth",
    "RouteConfig",
    "ServerConfig",
    "UpstreamConfig",
    "load_config",
    "parse_config",
    "path_params",
]

DEFAULT_CONFIG_PATH = Path(__file__).with_name("gateway.yaml")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ON_REDIS_ERROR = ("fail_open", "fail_closed")
BUILTIN_CONSUMER_CLASSES = ("anonymous", "authenticated")


# --- the model the rest of the gateway reads ---------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthCheck:
    path: str
    interval: float


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    name: str
    instances: tuple[str, ...]
    timeout: float
    pool_size: int
    health: HealthCheck


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
class GatewayConfig:
    server: ServerConfig
    auth: AuthConfig
    upstreams: Mapping[str, UpstreamConfig]
    routes: tuple[RouteConfig, ...]
    rate_limits: RateLimitsConfig = field(default_factory=RateLimitsConfig)


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


def path_params(path: str) -> list[str]:
    return [m.group(1) for seg in path.split("/") if (m := _PARAM.match(seg))]


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
    r"^[A-Za-z0-9_:-]+$", error="must be letters, digits, '_', ':' or '-'"
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

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> HealthCheck:
        return HealthCheck(**data)


class UpstreamSchema(_Strict):
    instances = fields.List(
        fields.Url(
            require_tld=False,
            schemes={"http", "https"},
            error_messages={"invalid": "must be an http(s) URL"},
        ),
        required=True,
        validate=validate.Length(min=1, error="must list at least one instance"),
    )
    timeout = fields.Float(load_default=10.0, validate=_positive())
    pool_size = fields.Integer(load_default=100, validate=_positive())
    health = fields.Nested(HealthSchema, load_default=lambda: HealthCheck("/health/ready", 5.0))


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
    max_body_bytes = fields.Integer(
        load_default=None, validate=validate.Range(min=0, error="must be >= 0")
    )
    rate_limit = fields.String(load_default=None)

    @validates_schema
    def check_paths(self, data: dict[str, Any], **_: Any) -> None:
        errors: dict[str, list[str]] = {}
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

    @validates_schema
    def check_references(self, data: dict[str, Any], **_: Any) -> None:
        upstreams = data.get("upstreams", {})
        policies = data.get("rate_limits", {}).get("policies", {})
        names: dict[str, int] = {}
        claimed: dict[tuple[str, str], str] = {}
        errors: dict[int, dict[str, list[str]]] = {}
        for i, route in enumerate(data.get("routes", [])):
            here = errors.setdefault(i, {})
            if route["upstream"] not in upstreams:
                here["upstream"] = [f"unknown upstream {route['upstream']!r}"]
            if route.get("rate_limit") is not None and route["rate_limit"] not in policies:
                here["rate_limit"] = [f"unknown rate-limit policy {route['rate_limit']!r}"]
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


def _flatten(messages: Any, where: str = "") -> list[str]:
    """marshmallow's nested messages as `a.b[2].c: message` lines."""
    if isinstance(messages, dict):
        lines: list[str] = []
        for key, sub in messages.items():
            if isinstance(key, int):
                path = f"{where}[{key}]"
            elif (key == "value" and where) or key == "_schema":
                path = where  # fields.Dict nests its value errors under "value"
            else:
                path = f"{where}.{key}" if where else str(key)
            lines.extend(_flatten(sub, path))
        return lines
    if isinstance(messages, list):
        return [f"{where or '<root>'}: {m.rstrip('.')}" for m in messages if isinstance(m, str)]
    return [f"{where or '<root>'}: {messages}"]


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
            instances=tuple(url.rstrip("/") for url in raw["instances"]),
            timeout=raw["timeout"],
            pool_size=raw["pool_size"],
            health=raw["health"],
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
        )
        for raw in data["routes"]
    )
    return GatewayConfig(
        server=server,
        auth=auth,
        upstreams=upstreams,
        routes=routes,
        rate_limits=_rate_limits(data["rate_limits"], environ or {}),
    )


def parse_config(
    raw: Any, *, source: str = "gateway config", environ: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Validate an already-parsed YAML document; raise ConfigError naming every bad key."""
    env = os.environ if environ is None else environ
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid {source}: the document must be a mapping")
    errors: list[str] = []
    substituted = _substitute(raw, "", env, errors)
    if errors:
        raise ConfigError(f"invalid {source}: " + "; ".join(errors))
    try:
        data = GatewaySchema().load(substituted)
    except ValidationError as exc:
        raise ConfigError(f"invalid {source}: " + "; ".join(_flatten(exc.messages))) from None
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
