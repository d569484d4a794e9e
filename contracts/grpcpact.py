"""Verifying gRPC interactions (ADR 0028): our own small pact format, checked against a real
server.

A gRPC pact is a V4 pact file whose `metadata.portico.kind` is "grpc" and whose interactions
are `Synchronous/gRPC`: a `method` (`/package.Service/Method`), a `request` (`metadata`, and the
`message` as `json_format.MessageToDict(msg, preserving_proto_field_name=True)`) and the
`response` the consumer relies on: the `status` (a `grpc.StatusCode` name), an example
`message` or, on errors, the `details` decoded from the rich status (`grpc-status-details-bin`,
each an `Any` as JSON with its `@type`), and `matchingRules`. The verifier calls the method
for real and checks the status and each rule; nothing else of the answer is compared.

Rule paths are relative to the response object: `message.order_id`,
`details[0].violations[*].subject` (`[*]`: every element; a path that reaches nothing fails,
and so does `[*]` over an absent or empty list). `match` is `type` (the same JSON type as the
example at that path), `equality` (the example's value) or `regex` (a string the regex
finds a match in, as Pact's `regex`; anchor it with ^ and $).

The method and its messages are looked up in the default descriptor pool, that is in the
generated code the provider's own server imports: a method the provider's proto does not
have is a failure, not a crash.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2  # noqa: F401 - registers the detail types

__all__ = [
    "GRPC_INTERACTION",
    "GrpcProvider",
    "call",
    "check",
    "is_grpc_pact",
    "pact_proto",
    "verify_interaction",
]

GRPC_INTERACTION = "Synchronous/gRPC"
_DETAILS_KEY = "grpc-status-details-bin"
_MISSING = object()
_TOKEN = re.compile(r"\.?([A-Za-z_@$][\w@-]*)|\['([^']+)'\]|\[(\d+|\*)\]")


def is_grpc_pact(doc: Mapping[str, Any]) -> bool:
    """Whether a pact file's metadata marks it as a gRPC pact."""
    meta = doc.get("metadata")
    portico = meta.get("portico") if isinstance(meta, dict) else None
    return isinstance(portico, dict) and portico.get("kind") == "grpc"


@dataclass
class GrpcProvider:
    """A provider's gRPC server running for real, with its provider states."""

    name: str
    target: str  # host:port
    states: Mapping[str, Callable[..., None]] = field(default_factory=dict)
    close: Callable[[], None] = lambda: None


class Unverifiable(Exception):
    """The interaction cannot be called as written (unknown method, a bad request message)."""


def pact_proto(doc: Mapping[str, Any]) -> str:
    """The proto file a gRPC pact names (`metadata.portico.proto`, relative to the repo)."""
    portico = (doc.get("metadata") or {}).get("portico") or {}
    return str(portico.get("proto") or "")


def _classes(method: str, proto: str = "") -> tuple[type[Message], type[Message]]:
    """The request and response classes of `/package.Service/Method` (defined in `proto`,
    relative to the repo, when one is named)."""
    m = re.fullmatch(r"/([\w.]+)/(\w+)", method)
    if m is None:
        raise Unverifiable(f"method {method!r} is not of the form /package.Service/Method")
    try:
        service = descriptor_pool.Default().FindServiceByName(m.group(1))
    except KeyError:
        raise Unverifiable(f"unknown method {method}: no service {m.group(1)}") from None
    found = service.methods_by_name.get(m.group(2))
    if found is None:
        raise Unverifiable(f"unknown method {method}: {m.group(1)} has no {m.group(2)}")
    defined_in = found.containing_service.file.name  # relative to proto/
    if proto and proto.removeprefix("proto/") != defined_in:
        raise Unverifiable(f"{method} is defined in proto/{defined_in}, not in the pact's {proto}")
    if found.client_streaming or found.server_streaming:
        raise Unverifiable(f"{method} is a streaming method (only unary calls are supported)")
    return (
        message_factory.GetMessageClass(found.input_type),
        message_factory.GetMessageClass(found.output_type),
    )


def _details(trailers: Any) -> list[dict[str, Any]]:
    for key, value in trailers or ():
        if key == _DETAILS_KEY:
            status = status_pb2.Status.FromString(value)
            return [
                json_format.MessageToDict(d, preserving_proto_field_name=True)
                for d in status.details
            ]
    return []


def call(
    channel: grpc.Channel,
    method: str,
    message: Mapping[str, Any],
    metadata: list[tuple[str, str]],
    timeout: float = 10.0,
    proto: str = "",
) -> dict[str, Any]:
    """Call a unary method; the answer as the pact writes one (status, message or details)."""
    request_cls, response_cls = _classes(method, proto)
    try:
        request = json_format.ParseDict(dict(message), request_cls())
    except json_format.ParseError as exc:
        raise Unverifiable(f"the request message does not fit {method}: {exc}") from None
    stub = channel.unary_unary(
        method,
        request_serializer=request_cls.SerializeToString,
        response_deserializer=response_cls.FromString,
    )
    try:
        reply = stub(request, metadata=metadata, timeout=timeout)
    except grpc.RpcError as exc:
        out: dict[str, Any] = {"status": exc.code().name, "status_message": exc.details()}
        details = _details(exc.trailing_metadata())
        if details:
            out["details"] = details
        return out
    return {
        "status": "OK",
        "message": json_format.MessageToDict(reply, preserving_proto_field_name=True),
    }


def _tokens(path: str) -> list[str | int]:
    path = path.removeprefix("$")
    out: list[str | int] = []
    pos = 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if m is None or m.end() == pos:
            raise Unverifiable(f"matching rule path {path!r} cannot be read at {path[pos:]!r}")
        name, quoted, index = m.groups()
        if index is not None:
            out.append(-1 if index == "*" else int(index))  # -1: every element
        else:
            out.append(name or quoted)
        pos = m.end()
    return out


def _resolve(doc: Any, tokens: list[str | int], at: str = "") -> Iterator[tuple[str, Any]]:
    """(concrete path, value or _MISSING) for every place `tokens` reaches in `doc`."""
    if not tokens:
        yield at, doc
        return
    head, rest = tokens[0], tokens[1:]
    if isinstance(head, str):
        value = doc.get(head, _MISSING) if isinstance(doc, dict) else _MISSING
        here = f"{at}.{head}" if at else head
        if value is _MISSING:
            yield here, _MISSING
        else:
            yield from _resolve(value, rest, here)
        return
    if not isinstance(doc, list):
        yield f"{at}[{'*' if head < 0 else head}]", _MISSING
        return
    if head >= 0:
        if head < len(doc):
            yield from _resolve(doc[head], rest, f"{at}[{head}]")
        else:
            yield f"{at}[{head}]", _MISSING
        return
    if not doc:
        yield f"{at}[*] (no elements)", _MISSING
    for i, item in enumerate(doc):
        yield from _resolve(item, rest, f"{at}[{i}]")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _example(expected: Any, tokens: list[str | int], concrete: str) -> Any:
    """The example value for one concrete place (`[*]`: the same index, else the first)."""
    indices = [int(i) for i in re.findall(r"\[(\d+)\]", concrete)]
    picked: list[str | int] = []
    for t in tokens:
        if t == -1:
            picked.append(indices[len([p for p in picked if isinstance(p, int)])] if indices else 0)
        else:
            picked.append(t)
    values = [v for _, v in _resolve(expected, picked)]
    if values and values[0] is not _MISSING:
        return values[0]
    first = [0 if t == -1 else t for t in tokens]
    values = [v for _, v in _resolve(expected, first)]
    return values[0] if values else _MISSING


def check(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """Why `actual` fails the consumer's expectations (the status, then each rule); [] if not."""
    problems = []
    if actual.get("status") != expected.get("status"):
        said = actual.get("status_message")
        problems.append(
            f"status: expected {expected.get('status')}, got {actual.get('status')}"
            + (f" ({said})" if said else "")
        )
        return problems  # the rules describe an answer of the expected status
    rules = expected.get("matchingRules") or {}
    if not isinstance(rules, dict):
        return ["matchingRules must be an object of path -> rule"]
    for path, rule in rules.items():
        match = rule.get("match") if isinstance(rule, dict) else None
        if match not in ("type", "equality", "regex"):
            problems.append(f"rule {path}: unknown match {match!r}")
            continue
        tokens = _tokens(str(path))
        for concrete, value in _resolve(dict(actual), tokens):
            if value is _MISSING:
                problems.append(f"rule {path} ({match}): {concrete} is not in the answer")
                continue
            example = _example(expected, tokens, concrete)
            if match == "regex":
                regex = str(rule.get("regex", ""))
                if not (isinstance(value, str) and re.search(regex, value)):
                    problems.append(f"rule {path} (regex {regex}): {concrete} is {value!r}")
            elif example is _MISSING:
                problems.append(f"rule {path} ({match}): the pact's example has no {concrete}")
            elif match == "type" and _json_type(value) != _json_type(example):
                problems.append(
                    f"rule {path} (type): {concrete} is a {_json_type(value)}, "
                    f"expected a {_json_type(example)} like {example!r}"
                )
            elif match == "equality" and value != example:
                problems.append(f"rule {path} (equality): {concrete} is {value!r}, not {example!r}")
    return problems


def verify_interaction(
    channel: grpc.Channel,
    interaction: Mapping[str, Any],
    provider: GrpcProvider,
    token: str,
    proto: str = "",
) -> list[str]:
    """Set the interaction's provider states, make its call, and say what fails ([]: passed).
    The pact's example bearer token is swapped for `token`, one the provider trusts; `proto`:
    the file the pact says its methods come from."""
    problems = []
    for st in interaction.get("providerStates") or []:
        name = st.get("name") if isinstance(st, dict) else None
        setter = provider.states.get(str(name))
        if setter is None:
            return [f"provider {provider.name} has no state {name!r}"]
        try:
            setter(**(st.get("params") or {}))
        except Exception as exc:
            return [f"state {name!r} failed: {type(exc).__name__}: {exc}"]
    request = interaction.get("request") or {}
    metadata = []
    for key, value in (request.get("metadata") or {}).items():
        value = str(value)
        if key.lower() == "authorization" and value.startswith("Bearer "):
            value = f"Bearer {token}"
        metadata.append((key.lower(), value))
    try:
        actual = call(
            channel,
            str(interaction.get("method")),
            request.get("message") or {},
            metadata,
            proto=proto,
        )
        problems.extend(check(interaction.get("response") or {}, actual))
    except Unverifiable as exc:
        problems.append(str(exc))
    return problems
