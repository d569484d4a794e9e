"""`split`: a route's traffic shared between its upstream and canary upstreams, with rollback.

A route's `split:` key (ADR 0031) puts this one policy in that route's chain only, so a route
without it runs none of this code. Each request picks a side:

1. the split was rolled back: the stable side (the route's `upstream`), whatever the request;
2. a `match:` rule whose header or cookie has the given value: its named side
   (`X-Canary: always`);
3. `sticky: true` (the default): a hash of the consumer - the token's subject (or client id
   for a client's own token), else the `key:` header or cookie, else the client address -
   falls in one side's share of 10,000 buckets. The hash is BLAKE2b, not Python's salted
   `hash()`, so every gateway process puts a consumer on the same side; canary sides hold the
   lowest buckets, so raising a canary's weight only moves stable consumers onto it;
4. `sticky: false`: smooth weighted round robin, per process (exact shares, no randomness).

The stable side goes on to the route's own forward step; a canary side is forwarded here, by
a `Forward` bound to the same route with the canary's upstream (the one forward code path,
callbacks and all). With `rollback:`, each canary answer's status and time to its response
head feed a sliding window; once the window holds `min_requests` and the 5xx share passes
`error_rate` or more than 1% of answers are slower than `p99` (the p99 passed it), the split
sends everything to the stable side, logs a warning with the request's correlation id and
counts it. It stays rolled back until a reload changes the route's split (the state is kept in
`context.resources`, so a reload that leaves the split alone does not re-arm it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from chassis.logging import correlation_id

from ..ratelimit import client_ip, consumer_key
from ..routing import Route
from .exchange import Exchange
from .forward import Forward
from .policy import Policy, Verdict

__all__ = ["Rollback", "Split", "SplitSettings", "SplitState"]

log = logging.getLogger("portico.gateway.split")

BUCKETS = 10_000  # a weight of 1 is 100 buckets
MAX_SIDES = 8
MAX_RULES = 16
MAX_WINDOW_SAMPLES = 100_000  # a window never holds more (the oldest go first)
_TOKEN = validate.Regexp(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$", error="must be a field name")
_COOKIE = validate.Regexp(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$", error="must be a cookie name")
_RESOURCE = "split"


# --- settings ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """All requests whose `header` (or `cookie`) is `value` go to `upstream`."""

    header: str | None
    cookie: str | None
    value: str
    upstream: str


@dataclass(frozen=True, slots=True)
class Rollback:
    window: float  # seconds of canary answers judged
    min_requests: int  # no verdict on fewer answers than this in the window
    error_rate: float | None  # 5xx share (0-1] that trips it
    p99: float | None  # seconds: more than 1% of answers slower than this trips it


@dataclass(frozen=True, slots=True)
class SplitSettings:
    weights: tuple[tuple[str, int], ...]  # (upstream, weight) in config order, sum 100
    match: tuple[Rule, ...] = ()
    sticky: bool = True
    key_header: str | None = None
    key_cookie: str | None = None
    seed: str = ""
    rollback: Rollback | None = None

    @property
    def upstreams(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.weights)


class _KeySchema(Schema):
    header = fields.String(validate=_TOKEN, load_default=None)
    cookie = fields.String(validate=_COOKIE, load_default=None)

    @validates_schema
    def one(self, data: dict[str, Any], **_: Any) -> None:
        if (data.get("header") is None) == (data.get("cookie") is None):
            raise ValidationError("name exactly one of header or cookie")


class _RuleSchema(_KeySchema):
    value = fields.String(required=True, validate=validate.Length(min=1, max=256))
    upstream = fields.String(required=True, validate=validate.Length(min=1))

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> Rule:
        return Rule(data["header"], data["cookie"], data["value"], data["upstream"])


class _RollbackSchema(Schema):
    window = fields.Float(
        load_default=60.0,
        validate=validate.Range(min=0, max=3600, min_inclusive=False, error="must be in (0, 3600]"),
    )
    min_requests = fields.Integer(
        load_default=20, validate=validate.Range(min=1, max=MAX_WINDOW_SAMPLES)
    )
    error_rate = fields.Float(
        load_default=None,
        validate=validate.Range(min=0, max=1, min_inclusive=False, error="must be in (0, 1]"),
    )
    p99 = fields.Float(
        load_default=None,
        validate=validate.Range(min=0, max=600, min_inclusive=False, error="must be in (0, 600]"),
    )

    @validates_schema
    def some(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("error_rate") is None and data.get("p99") is None:
            raise ValidationError("set error_rate, p99 or both")

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> Rollback:
        return Rollback(data["window"], data["min_requests"], data["error_rate"], data["p99"])


class SplitSchema(Schema):
    """`split:` on a route. Which upstreams exist is checked by the config (it knows them)."""

    weights = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1)),
        values=fields.Integer(validate=validate.Range(min=0, max=100, error="must be 0..100")),
        required=True,
        validate=validate.Length(min=2, max=MAX_SIDES, error="must name 2 to {max} upstreams"),
    )
    match = fields.List(
        fields.Nested(_RuleSchema), load_default=list, validate=validate.Length(max=MAX_RULES)
    )
    sticky = fields.Boolean(load_default=True)
    key = fields.Nested(_KeySchema, load_default=None)
    seed = fields.String(load_default="", validate=validate.Length(max=64))
    rollback = fields.Nested(_RollbackSchema, load_default=None)

    @validates_schema(skip_on_field_errors=False)
    def add_up(self, data: dict[str, Any], **_: Any) -> None:
        weights = data.get("weights")
        if (
            weights
            and all(isinstance(w, int) for w in weights.values())
            and sum(weights.values()) != 100
        ):
            total = sum(weights.values())
            raise ValidationError({"weights": [f"must add up to 100, not {total}"]})

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> SplitSettings:
        key = data["key"] or {}
        return SplitSettings(
            weights=tuple(data["weights"].items()),
            match=tuple(data["match"]),
            sticky=data["sticky"],
            key_header=key.get("header"),
            key_cookie=key.get("cookie"),
            seed=data["seed"],
            rollback=data["rollback"],
        )


def check_upstreams(split: SplitSettings, stable: str, known: Any) -> dict[str, Any]:
    """The route's `split` errors a schema cannot see: upstream names (by key path)."""
    errors: dict[str, Any] = {}
    names = split.upstreams
    unknown = [n for n in names if n not in known]
    if unknown:
        errors["weights"] = [f"unknown upstream {n!r}" for n in unknown]
    elif stable not in names:
        errors["weights"] = [f"must include the route's upstream {stable!r} (the stable side)"]
    for i, rule in enumerate(split.match):
        if rule.upstream not in names:
            errors.setdefault("match", {})[i] = {
                "upstream": [f"{rule.upstream!r} is not one of the split's upstreams"]
            }
    return errors


# --- state kept across reloads --------------------------------------------------------------


class SplitState:
    """One route's split in this process: requests per side, the rollback window, the verdict.
    Kept across reloads while the route's split settings stay the same."""

    def __init__(self, route: str, settings: SplitSettings, stable: str) -> None:
        self.route = route
        self.settings = settings
        self.stable = stable
        self.sides = settings.upstreams
        self.requests = dict.fromkeys(self.sides, 0)
        self.rolled_back = False
        self.rollbacks: dict[tuple[str, str], int] = {}  # (upstream, reason) -> count
        self.samples: deque[tuple[float, bool, bool]] = deque()  # (when, error, slow)
        self.errors = 0
        self.slow = 0
        self.users = 0
        self.current = dict.fromkeys(self.sides, 0)  # smooth weighted round robin

    def observe(self, now: float, error: bool, slow: bool) -> str | None:
        """Record one canary answer; the reason when the window now passes a threshold."""
        rollback = self.settings.rollback
        assert rollback is not None
        samples = self.samples
        samples.append((now, error, slow))
        self.errors += error
        self.slow += slow
        horizon = now - rollback.window
        while samples and (samples[0][0] < horizon or len(samples) > MAX_WINDOW_SAMPLES):
            _, was_error, was_slow = samples.popleft()
            self.errors -= was_error
            self.slow -= was_slow
        count = len(samples)
        if count < rollback.min_requests:
            return None
        if rollback.error_rate is not None and self.errors / count >= rollback.error_rate:
            return "error_rate"
        if rollback.p99 is not None and self.slow * 100 > count:
            return "p99"
        return None

    def roll_back(self, upstream: str, reason: str) -> None:
        self.rolled_back = True
        key = (upstream, reason)
        self.rollbacks[key] = self.rollbacks.get(key, 0) + 1
        self.samples.clear()
        self.errors = self.slow = 0


class SplitBook(Collector):
    """Every split state of one gateway (in `context.resources`), and their metrics."""

    def __init__(self) -> None:
        self.states: dict[str, SplitState] = {}
        self._registries: list[CollectorRegistry] = []

    def state_for(self, route: str, settings: SplitSettings, stable: str) -> SplitState:
        """The route's state, new (armed) when its split changed."""
        state = self.states.get(route)
        if state is None or state.settings != settings or state.stable != stable:
            state = SplitState(route, settings, stable)
        return state

    def register(self, registry: CollectorRegistry | None) -> None:
        if registry is not None and not any(r is registry for r in self._registries):
            registry.register(self)
            self._registries.append(registry)

    def collect(self) -> Iterator[Any]:
        requests = CounterMetricFamily(
            "gateway_split_requests",
            "Requests a route's split sent to each upstream (this process)",
            labels=["route", "upstream"],
        )
        rollbacks = CounterMetricFamily(
            "gateway_split_rollbacks",
            "Splits rolled back to the stable upstream, by the canary and the threshold passed",
            labels=["route", "upstream", "reason"],
        )
        states = GaugeMetricFamily(
            "gateway_split_state",
            "1 while a route's split shares traffic, 0 once rolled back to the stable upstream",
            labels=["route"],
        )
        for name, state in list(self.states.items()):
            for upstream, count in state.requests.items():
                requests.add_metric([name, upstream], count)
            for (upstream, reason), count in state.rollbacks.items():
                rollbacks.add_metric([name, upstream, reason], count)
            states.add_metric([name], 0 if state.rolled_back else 1)
        yield requests
        yield rollbacks
        yield states


def _cookie(header: str | None, name: str) -> str | None:
    """The value of cookie `name` in a `Cookie` field (RFC 6265's `name=value; ...`)."""
    if not header:
        return None
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None


def _cookies(ex: Exchange) -> str | None:
    """Every `Cookie` field of the request as one (HTTP/1.1 sends one; some clients more)."""
    values = ex.header_values("Cookie")
    return "; ".join(values) if values else None


def bucket(seed: str, key: str) -> int:
    """The consumer's bucket in [0, BUCKETS): the same in every process, for every release."""
    digest = hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


# --- the policy -------------------------------------------------------------------------------


class Split(Policy):
    name = "split"
    order = 900  # after auth (the consumer) and the forwarding headers, before forward (1000)
    Settings = SplitSchema
    responses = {
        "502": {"description": "the chosen upstream (stable or canary) is unavailable"},
        "503": {"description": "the chosen upstream has no instance ready"},
    }

    def __init__(self, settings: SplitSettings | None = None, context: Any = None) -> None:
        super().__init__(settings, context)
        self.state: SplitState | None = None
        self.book: SplitBook | None = None
        self.forwards: dict[str, Forward] = {}  # canary upstream -> its forward step
        self.cuts: tuple[tuple[int, str], ...] = ()  # (bucket bound, upstream), canaries first
        self.trusted: tuple[Any, ...] = ()

    @staticmethod
    def check(settings: SplitSettings, stable: str, upstreams: Any) -> dict[str, Any]:
        """For the config's reference checks: errors by key path under `split`."""
        return check_upstreams(settings, stable, upstreams)

    def bind(self, route: Route) -> Policy | None:
        settings = self.settings
        assert isinstance(settings, SplitSettings) and self.context is not None
        resources = self.context.resources
        if resources is None:
            resources = {}
        book = resources.get(_RESOURCE)
        if book is None:
            book = resources[_RESOURCE] = SplitBook()
        bad = check_upstreams(settings, route.upstream, self.context.config.upstreams)
        if bad:  # named via `policies:` rather than `split:` (whose keys the config checks)
            raise ValueError(f"bad split upstreams: {bad}")
        bound = Split(settings, self.context)
        bound.book = book
        bound.state = book.state_for(route.name, settings, route.upstream)
        for upstream in settings.upstreams:
            if upstream != route.upstream:
                forward = Forward(None, self.context).bind(
                    dataclasses.replace(route, upstream=upstream)
                )
                assert isinstance(forward, Forward)
                bound.forwards[upstream] = forward
        ordered = [w for w in settings.weights if w[0] != route.upstream]
        ordered += [w for w in settings.weights if w[0] == route.upstream]
        cuts, total = [], 0
        for upstream, weight in ordered:
            total += weight * (BUCKETS // 100)
            cuts.append((total, upstream))
        bound.cuts = tuple(cuts)
        bound.trusted = self.context.config.server.trusted_proxies
        return bound

    async def start(self) -> None:
        """Serve this state's metrics once this config serves (the pool's registry is the
        gateway's /metrics by then)."""
        assert self.book is not None and self.state is not None
        upstreams = self.context.upstreams if self.context is not None else None
        self.book.register(getattr(upstreams, "registry", None))
        self.book.states[self.state.route] = self.state
        self.state.users += 1

    async def stop(self) -> None:
        assert self.book is not None and self.state is not None
        self.state.users -= 1
        if self.state.users <= 0 and self.book.states.get(self.state.route) is self.state:
            del self.book.states[self.state.route]

    def stats(self) -> dict[str, Any] | None:
        """The admin view's line for this split (ADR 0034): weights, requests per side, and
        whether (and why) it was rolled back."""
        state = self.state
        if state is None:
            return None
        return {
            "stable": state.stable,
            "weights": dict(state.settings.weights),
            "requests": dict(state.requests),
            "rolled_back": state.rolled_back,
            "rollbacks": {f"{u}:{r}": n for (u, r), n in state.rollbacks.items()},
        }

    # --- per request -------------------------------------------------------------------------

    def on_request(self, ex: Exchange) -> Verdict:
        state = self.state
        assert state is not None
        side = state.stable if state.rolled_back else self._side(ex, state)
        state.requests[side] += 1
        if side == state.stable:
            return None  # the route's own forward step
        ex.log_field("upstream", side)
        ex.set_var("split", (side, time.monotonic()))
        return self.forwards[side].on_request(ex)

    def _side(self, ex: Exchange, state: SplitState) -> str:
        settings = state.settings
        for rule in settings.match:
            if rule.header is not None:
                got = ex.header(rule.header)
            else:
                got = _cookie(_cookies(ex), rule.cookie or "")
            if got is not None and got.strip() == rule.value:
                return rule.upstream
        if not settings.sticky:
            return self._next_round(state)
        point = bucket(settings.seed, self._consumer(ex, settings))
        for bound, upstream in self.cuts:
            if point < bound:
                return upstream
        return state.stable

    def _consumer(self, ex: Exchange, settings: SplitSettings) -> str:
        """Whose side this is: the token's, else the configured field's, else the address."""
        if ex.claims is not None:
            return consumer_key(ex.claims, lambda: "")
        if settings.key_header is not None:
            value = ex.header(settings.key_header)
            if value:
                return "key:" + value
        elif settings.key_cookie is not None:
            value = _cookie(_cookies(ex), settings.key_cookie)
            if value:
                return "key:" + value
        return "ip:" + client_ip(ex.remote, ex.forwarded_for, self.trusted)

    @staticmethod
    def _next_round(state: SplitState) -> str:
        """Smooth weighted round robin (nginx's): exact shares, evenly interleaved."""
        current = state.current
        for upstream, weight in state.settings.weights:
            current[upstream] += weight
        best = max(current, key=current.__getitem__)
        current[best] -= 100
        return best

    def on_response_head(self, ex: Exchange) -> None:
        chosen = ex.var("split")
        state = self.state
        if chosen is None or state is None or state.settings.rollback is None:
            return
        if state.rolled_back:
            return
        upstream, began = chosen
        now = time.monotonic()
        p99 = state.settings.rollback.p99
        reason = state.observe(now, ex.status >= 500, p99 is not None and now - began > p99)
        if reason is not None:
            self._roll_back(ex, state, upstream, reason)

    @staticmethod
    def _roll_back(ex: Exchange, state: SplitState, upstream: str, reason: str) -> None:
        count = len(state.samples)
        errors, slow = state.errors, state.slow
        state.roll_back(upstream, reason)
        token = correlation_id.set(ex.rid) if ex.rid else None
        try:
            log.warning(
                "split rolled back to the stable upstream",
                extra={
                    "route": state.route,
                    "canary": upstream,
                    "stable": state.stable,
                    "reason": reason,
                    "window_requests": count,
                    "window_errors": errors,
                    "window_slow": slow,
                },
            )
        finally:
            if token is not None:
                correlation_id.reset(token)
