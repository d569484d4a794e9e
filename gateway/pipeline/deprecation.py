"""`deprecation`: a route's answers announce that it is deprecated, when it goes away, and
what replaces it; its use is counted per consumer on `/metrics`.

    routes:
      - name: products.get
        path: /api/v1/products/{id}
        deprecation:
          deprecated_at: 2026-12-01            # Deprecation: @1764547200   (RFC 9745)
          sunset: 2027-06-30                   # Sunset: Wed, 30 Jun 2027 00:00:00 GMT (RFC 8594)
          successor: /api/v2/products/{id}     # Link: </api/v2/products/42>;
                                               #   rel="successor-version"
          link: https://portico.dev/docs/migrations/v1-to-v2   # Link: <...>; rel="deprecation"

Dates are YAML dates (midnight UTC) or ISO 8601 date-times with a zone. The config is refused,
naming the key path, for a deprecation date after the sunset, a URL that is neither an absolute
path nor an http(s) URL (or holds spaces, quotes or angle brackets), and a successor naming a
`{param}` the route's path lacks. A sunset already past is refused on a config change only
(`python -m gateway check` and a reload, which keeps the old config: `gateway.config.
past_sunsets`); once the sunset has passed, in a running gateway or one (re)started with that
config, the route answers 410 Gone problem+json with the successor `Link`, and every other
route goes on serving - a restart after the date is no outage.

Only routes that name the policy have it in their chain: the plain path runs no deprecation
code at all. The headers go on every answer of the
route (problems too), after the upstream's own fields (an upstream `Link` field stays).

Counting: `gateway_deprecated_requests_total{route, consumer}`; consumer is the token's client
id, `anonymous` without one, and `other` for every client after the first `MAX_CONSUMERS`
distinct ones this gateway has seen (so a flood of client ids cannot grow `/metrics` without
bound). The counts live in the pipeline's `resources`, so a reload keeps them.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validates_schema
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from chassis import Problem

from ..config import path_params
from ..routing import Route
from .exchange import Exchange
from .policy import Policy, PolicyContext, Verdict

__all__ = [
    "MAX_CONSUMERS",
    "Deprecation",
    "DeprecationSettings",
    "Usage",
    "check_successor",
    "usage",
]

MAX_CONSUMERS = 100
OTHER, ANONYMOUS = "other", "anonymous"
_RESOURCE = "deprecation.usage"
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_URL = re.compile(
    r"^(?:https?://[^/?#\s<>\"'{}\\]+(?:[/?#][^\s<>\"'\\]*)?|/[^\s<>\"'\\]*)\Z", re.IGNORECASE
)
# what a path parameter may carry into a Link target: unreserved, sub-delims but , and ;
_PARAM_SAFE = "%-._~!$&'()*+=:@"


# --- settings ------------------------------------------------------------------------------


class _Instant(fields.Field):
    """A YAML date (midnight UTC), an aware datetime, or their ISO 8601 text."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.datetime:
        if isinstance(value, str):
            text = value.strip()
            try:
                value = (
                    dt.date.fromisoformat(text)
                    if len(text) == 10
                    else dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
                )
            except ValueError:
                raise ValidationError(
                    "must be a date (2027-06-30) or an ISO 8601 date-time with a zone"
                ) from None
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                raise ValidationError("needs a time zone (Z or +hh:mm)")
            return value.astimezone(dt.UTC).replace(microsecond=0)
        if isinstance(value, dt.date):
            return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
        raise ValidationError("must be a date (2027-06-30) or an ISO 8601 date-time with a zone")


def check_successor(url: str | None, route_path: str) -> str | None:
    """None when `url`'s `{param}`s are all parameters of `route_path`."""
    if url is None:
        return None
    unknown = sorted(set(_PARAM.findall(url)) - set(path_params(route_path)))
    return f"uses parameters not in the route's path: {unknown}" if unknown else None


def _url(value: str) -> None:
    if not _URL.match(value) or value.startswith("//") or len(value) > 2048:
        raise ValidationError(
            "must be an absolute path (/api/v2/...) or an http(s) URL, without spaces, "
            "quotes or angle brackets"
        )


@dataclass(frozen=True, slots=True)
class DeprecationSettings:
    deprecated_at: dt.datetime
    sunset: dt.datetime | None
    successor: str | None
    link: str | None


class _Settings(Schema):
    class Meta:
        unknown = RAISE

    deprecated_at = _Instant(required=True)
    sunset = _Instant(load_default=None)
    successor = fields.String(load_default=None, validate=_url)
    link = fields.String(load_default=None, validate=_url)

    @validates_schema(skip_on_field_errors=False)
    def check_dates(self, data: dict[str, Any], **_: Any) -> None:
        # A sunset already past is not refused here but by `gateway.config.past_sunsets`, on a
        # config change only: a restart after the sunset must not take every route down.
        sunset, deprecated = data.get("sunset"), data.get("deprecated_at")
        if sunset is None:
            return
        if deprecated is not None and deprecated > sunset:
            raise ValidationError("must not be after sunset", "deprecated_at")

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> DeprecationSettings:
        return DeprecationSettings(**data)


# --- counting ------------------------------------------------------------------------------


class Usage(Collector):
    """Deprecated-route answers per (route, consumer), consumers capped at `max_consumers`."""

    def __init__(self, max_consumers: int = MAX_CONSUMERS) -> None:
        self.max_consumers = max_consumers
        self.counts: dict[tuple[str, str], int] = {}
        self._consumers: set[str] = set()
        self._lock = threading.Lock()  # scrapes run in a thread of their own

    def count(self, route: str, consumer: str | None) -> None:
        with self._lock:
            if consumer is None:
                label = ANONYMOUS
            elif consumer in self._consumers:
                label = consumer
            elif len(self._consumers) < self.max_consumers:
                self._consumers.add(consumer)
                label = consumer
            else:
                label = OTHER
            key = (route, label)
            self.counts[key] = self.counts.get(key, 0) + 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "gateway_deprecated_requests",
            "Answers of deprecated routes, by route and consumer (token client id; "
            f"'{ANONYMOUS}' without one; '{OTHER}' past {self.max_consumers} distinct clients)",
            labels=["route", "consumer"],
        )
        with self._lock:
            counts = list(self.counts.items())
        for (route, consumer), n in sorted(counts):
            family.add_metric([route, consumer], n)
        yield family


def usage(resources: dict[str, Any] | None) -> Usage:
    """The gateway's one `Usage`, kept in the pipeline's resources across reloads."""
    if resources is None:
        return Usage()
    found = resources.get(_RESOURCE)
    if found is None:
        found = resources[_RESOURCE] = Usage()
    return found


# --- the policy ----------------------------------------------------------------------------


def _link_maker(settings: DeprecationSettings) -> Callable[[dict[str, str] | None], str] | None:
    """The `Link` value, fixed or (a successor with params) made from the request's params."""
    tail = f'<{settings.link}>; rel="deprecation"' if settings.link else ""
    successor = settings.successor
    if successor is None:
        return (lambda _params: tail) if tail else None
    pieces = _PARAM.split(successor)  # literal, name, literal, name, ..., literal
    if len(pieces) == 1:
        fixed = f'<{successor}>; rel="successor-version"' + (f", {tail}" if tail else "")
        return lambda _params: fixed
    suffix = '>; rel="successor-version"' + (f", {tail}" if tail else "")

    def make(params: dict[str, str] | None) -> str:
        given = params or {}
        out = ["<"]
        for i, piece in enumerate(pieces):
            out.append(quote(given.get(piece, ""), safe=_PARAM_SAFE) if i % 2 else piece)
        out.append(suffix)
        return "".join(out)

    return make


class Deprecation(Policy):
    """The route's answers carry Deprecation, Sunset and Link; each is counted (module doc)."""

    name = "deprecation"
    order = 650  # its fields go on after the cache (700) and transforms decided the answer
    Settings = _Settings
    responses = {
        "410": {
            "description": "Gone: past this operation's Sunset (see Link rel=successor-version)"
        }
    }

    def __init__(self, settings: Any = None, context: PolicyContext | None = None) -> None:
        super().__init__(settings, context)
        s: DeprecationSettings = settings
        self.usage = usage(context.resources if context is not None else None)
        since = int(s.deprecated_at.timestamp())
        self.fixed: list[tuple[str, str]] = [("Deprecation", f"@{since}")]
        if s.sunset is not None:
            self.fixed.append(("Sunset", format_datetime(s.sunset, usegmt=True)))
        self.link = _link_maker(s)
        self.route_name = ""
        self.gone_at = s.sunset.timestamp() if s.sunset is not None else math.inf

    def bind(self, route: Route) -> Policy | None:
        problem = check_successor(self.settings.successor, route.config.path)
        if problem:
            raise ValueError(f"successor {problem}")
        bound = Deprecation.__new__(Deprecation)
        bound.settings, bound.context, bound.usage = self.settings, self.context, self.usage
        bound.fixed, bound.link, bound.route_name = self.fixed, self.link, route.name
        bound.order, bound.gone_at = self.order, self.gone_at
        return bound

    def on_request(self, ex: Exchange) -> Verdict:
        """Past its sunset the route is gone: 410, with the successor in `Link` (the head's
        fields still go on). Only a gateway started with that config gets here (a change to a
        past sunset is refused) or one still running when the date passes."""
        if time.time() >= self.gone_at:
            successor = self.settings.successor
            hint = f"; use {successor}" if successor else ""
            raise Problem(410, f"this API was retired at its sunset{hint}")
        return None

    def on_response_head(self, ex: Exchange) -> None:
        ex.response_extra.extend(self.fixed)
        if self.link is not None:
            ex.response_extra.append(("Link", self.link(ex.params)))
        self.usage.count(self.route_name, ex.consumer)

    def document_operation(self, op: dict[str, Any]) -> None:
        """In `/openapi.json`: the operation is deprecated, its answers carry the fields."""
        op["deprecated"] = True
        s: DeprecationSettings = self.settings
        note = f"Deprecated since {s.deprecated_at.date().isoformat()}"
        if s.sunset is not None:
            note += f"; removed after {s.sunset.date().isoformat()} (Sunset)"
        if s.successor is not None:
            note += f"; use {s.successor} instead"
        op["description"] = f"{note}.\n\n{op.get('description', '')}".rstrip()
        headers = {
            "Deprecation": {
                "description": "RFC 9745: when this operation was deprecated (@unix seconds)",
                "schema": {"type": "string"},
            },
            "Sunset": {
                "description": "RFC 8594: when this operation goes away",
                "schema": {"type": "string"},
            },
            "Link": {
                "description": 'rel="successor-version" (and rel="deprecation" documentation)',
                "schema": {"type": "string"},
            },
        }
        responses = op.get("responses") or {}
        for status, response in list(responses.items()):
            if str(status)[0] == "2" and isinstance(response, dict) and "$ref" not in response:
                responses[status] = {
                    **response,
                    "headers": {**headers, **(response.get("headers") or {})},
                }
