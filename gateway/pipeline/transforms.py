"""Header transforms: add, set, remove and rename request fields (before forwarding) and
response fields (on the response head), per route or for every route.

    policies:
      - use: transforms
        settings:
          request:
            remove: [X-Debug]
            rename: {X-Old-Name: X-New-Name}
            set: {X-User-Id: "{claims.sub}", X-Client-Id: "{claims.client_id}"}
            add: {X-Api-Version: "2"}
          response:
            remove: [Server, X-Powered-By]
            set: {X-Served-By: "portico {request_id}"}

Semantics (Kong's request- and response-transformer, in Kong's order: remove, rename, set,
add): `remove` drops every field of that name; `rename` moves every value of the old name to
the new one (replacing the new name's values; nothing happens when the old one is absent);
`set` replaces every field of that name with one (or adds it) - unlike Kong's `replace`,
which only acts when the field is present; `add` adds the field only when none of that name
is there.

Values are templates parsed once at config load: literal text with `{request_id}`,
`{claims.sub}`, `{claims.client_id}`, `{claims.scope}` (the token's scopes, space separated)
or `{claims.iss}`; `{{` and `}}` are literal braces; anything else in braces is refused with
its key path. A value that cannot be made for a request - the route has no token, the claim is
absent or empty, or the result holds a control character (CR, LF, NUL...: claims come from a
verified token, but still must not inject fields) - is left out: `set` then removes the
field, so the upstream never sees a client's own spoofed `X-User-Id` in its place.

Fields no transform may touch: hop-by-hop ones (`Connection`, `Keep-Alive`, `TE`, `Trailer`,
`Transfer-Encoding`, `Upgrade`, `Proxy-*`), the framing (`Content-Length`; `Expect` and
`Host` on requests) and those the gateway writes itself (`X-Forwarded-For`/`-Proto`/`-Host`
and `X-Request-Id` on requests; `X-Request-Id`, `Date`, `RateLimit`, `RateLimit-Policy` and
`Access-Control-*` on responses). `Authorization` may only be removed from a request (so an
upstream need not see the client's token): a transform never makes credentials.

Order 700: after auth (claims are known), the rate limit and custom policies (600), before
the forwarding headers (800). On the response head (reverse order) it runs after the forward
step and before custom, rate limit, auth and CORS policies add their fields, so it sees the
upstream's fields and never those. On an aggregate route only `response` applies (to the
composite answer): its parts are requests through their own routes, which meet those routes'
(and the global) request transforms; a part's response fields are not relayed, so response
transforms of a part's route change nothing there.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load

from ..routing import Route
from .exchange import Exchange
from .forwarding import HOP_BY_HOP
from .policy import Policy, Verdict

__all__ = [
    "PLACEHOLDERS",
    "REQUEST_PROTECTED",
    "RESPONSE_PROTECTED",
    "Rules",
    "Side",
    "Template",
    "Transforms",
    "apply_request",
    "apply_response",
    "parse_template",
]

log = logging.getLogger("portico.gateway.transforms")

# RFC 9110 section 5.6.2: a field name is a token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# Control characters other than HTAB (RFC 9110 section 5.5): never sent in a field value.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")

REQUEST_PROTECTED = HOP_BY_HOP | {
    "content-length",
    "expect",
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
}
RESPONSE_PROTECTED = HOP_BY_HOP | {
    "content-length",
    "date",
    "x-request-id",
    "ratelimit",
    "ratelimit-policy",
}
_REMOVE_ONLY = frozenset({"authorization"})  # request side


def _scope(ex: Exchange) -> str | None:
    claims = ex.claims
    return " ".join(sorted(claims.scopes)) if claims is not None else None


def _iss(ex: Exchange) -> str | None:
    claims = ex.claims
    iss = claims.raw.get("iss") if claims is not None else None
    return iss if isinstance(iss, str) else None


# placeholder -> its value for a request (None: not available for this one)
PLACEHOLDERS: Mapping[str, Callable[[Exchange], str | None]] = {
    "request_id": lambda ex: ex.rid,
    "claims.sub": lambda ex: ex.claims.subject if ex.claims is not None else None,
    "claims.client_id": lambda ex: ex.claims.client_id if ex.claims is not None else None,
    "claims.scope": _scope,
    "claims.iss": _iss,
}


@dataclass(frozen=True, slots=True)
class Template:
    """A field value: literal text, or pieces with placeholders (`names` for each piece;
    an empty name is literal text)."""

    text: str  # as written in gateway.yaml
    pieces: tuple[tuple[str, str], ...]  # (literal, placeholder or "")

    @property
    def static(self) -> bool:
        return all(not name for _, name in self.pieces)

    def render(self, ex: Exchange) -> str | None:
        """The value for `ex`, or None when a placeholder has no value or the result holds a
        control character."""
        out = []
        for literal, name in self.pieces:
            if name:
                value = PLACEHOLDERS[name](ex)
                if not value:
                    return None
                out.append(value)
            else:
                out.append(literal)
        value = "".join(out)
        if _CONTROL.search(value):
            log.warning(
                "a header transform's value holds a control character: left out",
                extra={"template": self.text, "path": ex.path},
            )
            return None
        return value


def parse_template(text: str) -> Template:
    """`text` parsed once; ValueError names an unknown placeholder or a stray brace."""
    pieces: list[tuple[str, str]] = []
    literal: list[str] = []
    at = 0
    for m in _PLACEHOLDER.finditer(text):
        literal.append(text[at : m.start()])
        at = m.end()
        token = m.group(0)
        if token in ("{{", "}}"):
            literal.append(token[0])
            continue
        name = m.group(1)
        if name is None:
            raise ValueError(f"a lone {token!r} (write {token * 2} for a literal brace)")
        name = name.strip()
        if name not in PLACEHOLDERS:
            known = ", ".join("{" + n + "}" for n in PLACEHOLDERS)
            raise ValueError(f"unknown placeholder {{{name}}} (known: {known})")
        if any(literal):
            pieces.append(("".join(literal), ""))
        literal = []
        pieces.append(("", name))
    literal.append(text[at:])
    if any(literal) or not pieces:
        pieces.append(("".join(literal), ""))
    if _CONTROL.search("".join(p for p, _ in pieces)):
        raise ValueError("a field value must not contain control characters (CR, LF, NUL...)")
    return Template(text, tuple(pieces))


def _check_name(name: Any, protected: frozenset[str], verb: str, request: bool) -> str | None:
    """Why `name` cannot be `verb`ed on this side, or None."""
    if not isinstance(name, str) or not _TOKEN.match(name):
        return "not a valid field name (an RFC 9110 token)"
    low = name.lower()
    if low in protected or low.startswith("proxy-"):
        return f"{name} is managed by the gateway and cannot be changed by a transform"
    if not request and low.startswith("access-control-"):
        return f"{name} belongs to the CORS policy and cannot be changed by a transform"
    if request and low in _REMOVE_ONLY and verb != "remove":
        return f"{name} may only be removed by a transform"
    return None


class _Names(fields.Field):
    """`remove:` - a list of field names."""

    def __init__(self, request: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.request = request

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, list):
            raise ValidationError("must be a list of field names")
        protected = REQUEST_PROTECTED if self.request else RESPONSE_PROTECTED
        errors = {
            i: [why]
            for i, name in enumerate(value)
            if (why := _check_name(name, protected, "remove", self.request))
        }
        if errors:
            raise ValidationError(errors)
        return tuple(dict.fromkeys(n.lower() for n in value))


class _Map(fields.Field):
    """`add:`, `set:` (name -> template) and `rename:` (old name -> new name)."""

    def __init__(self, request: bool, verb: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.request = request
        self.verb = verb

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, dict):
            raise ValidationError("must be a mapping of field names")
        protected = REQUEST_PROTECTED if self.request else RESPONSE_PROTECTED
        errors: dict[str, list[str]] = {}
        out: list[tuple[str, Any]] = []
        seen: set[str] = set()
        for name, raw in value.items():
            key = str(name)
            why = _check_name(name, protected, self.verb, self.request)
            if why is None and name.lower() in seen:
                why = f"{name} is named twice (field names are case-insensitive)"
            if why is None:
                seen.add(name.lower())
                if self.verb == "rename":
                    why = _check_name(raw, protected, self.verb, self.request)
                    if why is None:
                        out.append((name.lower(), raw))
                elif isinstance(raw, bool) or not isinstance(raw, str | int | float):
                    why = "must be a string (a value template)"
                else:
                    try:
                        out.append((name, parse_template(str(raw))))
                    except ValueError as exc:
                        why = str(exc)
            if why is not None:
                errors[key] = [why]
        if errors:
            raise ValidationError(errors)
        return tuple(out)


@dataclass(frozen=True, slots=True)
class Side:
    """One side's operations, in the order they run."""

    remove: tuple[str, ...] = ()  # lower case
    rename: tuple[tuple[str, str], ...] = ()  # (old, lower case; new, as written)
    set: tuple[tuple[str, Template], ...] = ()
    add: tuple[tuple[str, Template], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.remove or self.rename or self.set or self.add)


@dataclass(frozen=True, slots=True)
class Rules:
    request: Side = Side()
    response: Side = Side()


def _side_schema(request: bool) -> type[Schema]:
    class _Side(Schema):
        class Meta:
            unknown = RAISE

        remove = _Names(request)
        rename = _Map(request, "rename")
        set = _Map(request, "set")
        add = _Map(request, "add")

        @post_load
        def make(self, data: dict[str, Any], **_: Any) -> Side:
            return Side(**data)

    return _Side


class _Settings(Schema):
    class Meta:
        unknown = RAISE

    request = fields.Nested(_side_schema(True), unknown=RAISE)
    response = fields.Nested(_side_schema(False), unknown=RAISE)

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> Rules:
        return Rules(**data)


# --- applying -------------------------------------------------------------------------------


def apply_request(side: Side, ex: Exchange) -> None:
    """The request side on `ex.headers` (before the forwarding headers are made)."""
    headers = ex.headers
    if side.remove:
        gone = side.remove
        headers = [p for p in headers if p[0].lower() not in gone]
    for old, new in side.rename:
        values = [v for k, v in headers if k.lower() == old]
        if values:
            low = new.lower()
            headers = [p for p in headers if p[0].lower() not in (old, low)]
            headers.extend((new, v) for v in values)
    for name, template in side.set:
        low = name.lower()
        headers = [p for p in headers if p[0].lower() != low]
        value = template.render(ex)
        if value is not None:
            headers.append((name, value))
    for name, template in side.add:
        low = name.lower()
        if not any(k.lower() == low for k, _ in headers):
            value = template.render(ex)
            if value is not None:
                headers.append((name, value))
    ex.headers = headers


def _response_values(ex: Exchange, low: str) -> list[str]:
    """Every value of the answer's fields called `low`: the upstream's or the gateway's
    answer's (unless dropped), then those the policies added."""
    values: list[str] = []
    if ex.response_drop is None or low not in ex.response_drop:
        answer = ex.answer
        if answer is not None:
            values = [v for k, v in answer.headers if k.lower() == low]
        elif ex.response is not None:
            fields_ = ex.response.headers
            if hasattr(fields_, "getall"):
                values = [str(v) for v in fields_.getall(low, ())]
            else:
                values = [str(v) for k, v in fields_.items() if k.lower() == low]
    values.extend(v for k, v in ex.response_extra if k.lower() == low)
    return values


def apply_response(side: Side, ex: Exchange) -> None:
    """The response side, through the exchange's answer-field helpers."""
    for name in side.remove:
        ex.drop_response_header(name)
    for old, new in side.rename:
        values = _response_values(ex, old)
        if values:
            ex.drop_response_header(old)
            ex.drop_response_header(new)
            for value in values:
                ex.add_response_header(new, value)
    for name, template in side.set:
        ex.drop_response_header(name)
        value = template.render(ex)
        if value is not None:
            ex.add_response_header(name, value)
    for name, template in side.add:
        if ex.response_header(name) is None:
            value = template.render(ex)
            if value is not None:
                ex.add_response_header(name, value)


class Transforms(Policy):
    """Header transforms (module docstring). `bind` picks the phases a route needs, so a side
    left empty costs nothing per request."""

    name = "transforms"
    order = 700
    Settings = _Settings

    def bind(self, route: Route) -> Policy | None:
        rules: Rules = self.settings
        request = rules.request if route.upstream else Side()  # aggregates: response only
        response = rules.response
        if request and response:
            bound: Policy = self
        elif request:
            bound = _RequestTransforms(rules, self.context)
        elif response:
            bound = _ResponseTransforms(rules, self.context)
        else:
            return None
        bound.order = self.order  # the entry's own `order:` when it named one
        return bound

    def on_request(self, ex: Exchange) -> Verdict:
        apply_request(self.settings.request, ex)
        return None

    def on_response_head(self, ex: Exchange) -> None:
        apply_response(self.settings.response, ex)


class _RequestTransforms(Policy):
    name = "transforms"
    order = 700

    def on_request(self, ex: Exchange) -> Verdict:
        apply_request(self.settings.request, ex)
        return None


class _ResponseTransforms(Policy):
    name = "transforms"
    order = 700

    def on_response_head(self, ex: Exchange) -> None:
        apply_response(self.settings.response, ex)
