"""Bounded input: numbers, patterns, query strings and JSON bodies checked before any work.

Why this exists: `Decimal` and `int` accept far more than an API means to (`1e999990`,
Arabic-Indic or fullwidth digits, `" 1.00"`, `"1_000"`, `"-0.00"`), and arithmetic on what
they accept costs time that grows with the input (one `min_price=1e999990` held a catalog
worker for ~26 s). `re.match` with `...$` lets a trailing newline through. The standard `json`
module recurses (a deeply nested body is a `RecursionError`, a 500) and returns lone
surrogates that fail later.

So every number a client sends is checked as text first - ASCII digits only, no sign unless
allowed, no exponent, no whitespace, a bounded count of digits - and only then converted;
every pattern matches the whole string; every JSON body goes through `load_json` (orjson:
nesting bounded at 1024 levels, lone surrogates and invalid UTF-8 refused); every query
string through `query_params` (strict UTF-8). The framework glue (`chassis.flask`,
`chassis.aiohttp`) turns the failures into problem+json: 400 for an unreadable body or query
string, 422 naming the field for a value out of bounds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Literal, overload
from urllib.parse import parse_qsl

import orjson
from marshmallow import ValidationError, fields, validate

from .problems import TYPE_BASE, Problem, validation_problem

__all__ = [
    "IDEMPOTENCY_KEY_MISSING",
    "MAX_INTEGER_DIGITS",
    "MAX_JSON_DEPTH",
    "BoundedDecimal",
    "BoundedInteger",
    "FullMatch",
    "OutOfBounds",
    "domain_rule",
    "idempotency_key",
    "key_paths",
    "load_json",
    "parse_decimal",
    "parse_integer",
    "query_params",
]

# 18 digits always fit a signed 64-bit column (PostgreSQL BIGINT, SQLite INTEGER).
MAX_INTEGER_DIGITS = 18
# orjson's own limit, documented by orjson; deeper input is refused while parsing, natively.
MAX_JSON_DEPTH = 1024

# ASCII digits only ([0-9], never \d: that also matches Arabic-Indic or fullwidth digits).
_DECIMAL = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")
_INTEGER = re.compile(r"-?[0-9]+")
# Visible ASCII, 1-255 chars; the OpenAPI parameters say `^[!-~]{1,255}$`.
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # fullmatch: the whole value
# The problem type of a required Idempotency-Key left out: 400, as the IETF
# httpapi-idempotency-key-header draft says for a resource that requires the key.
IDEMPOTENCY_KEY_MISSING = TYPE_BASE + "idempotency-key-missing"


class OutOfBounds(ValueError):
    """A value outside what the API accepts; the message is meant for the client."""


def _decimal_text(value: Any, numbers: bool) -> str:
    """The text of a decimal value, refusing types (and float forms) that are not decimals."""
    if isinstance(value, str):
        return value
    if numbers and isinstance(value, int) and not isinstance(value, bool):
        return ""  # handled by the caller, which bounds the int's magnitude first
    if numbers and isinstance(value, float):
        if not math.isfinite(value):
            raise OutOfBounds("must be a finite number")
        return repr(value)
    raise OutOfBounds(
        "must be a number or a decimal string like 12.50"
        if numbers
        else "must be a decimal string like 12.50"
    )


def parse_decimal(
    value: Any, *, digits: int, places: int, signed: bool = False, numbers: bool = True
) -> Decimal:
    """`value` as a Decimal with at most `digits` integer digits and `places` decimal places.

    Accepts decimal text (`"12.50"`: ASCII digits, optional `-` when `signed`, no exponent,
    no whitespace, no `+` or `_`) and, when `numbers`, JSON numbers (int or float) of the same
    bounds. Negative zero is refused. Nothing is rounded: more places is an error.
    Raises `OutOfBounds`; the text is bounded before any conversion or arithmetic.
    """
    if isinstance(value, int) and not isinstance(value, bool) and numbers:
        if not -(10**digits) < value < 10**digits:  # an int comparison: cheap at any size
            raise OutOfBounds(f"must have at most {digits} digits before the decimal point")
        if value < 0 and not signed:
            raise OutOfBounds("must not be negative")
        return Decimal(value)
    text = _decimal_text(value, numbers)
    if isinstance(value, float) and "e" in text:  # repr of a tiny or huge float
        if abs(value) >= 1:
            raise OutOfBounds(f"must have at most {digits} digits before the decimal point")
        raise OutOfBounds(f"must have at most {places} decimal places")
    # The regex is linear; Decimal() and arithmetic only ever see text within the bounds.
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise OutOfBounds(
            "must be a decimal like 12.50 (digits 0-9, no sign, exponent or spaces)"
            if not signed
            else "must be a decimal like -12.50 (digits 0-9, no exponent or spaces)"
        )
    sign, whole, fraction = match.groups()
    if len(whole) > digits:  # leading zeros count: the documented pattern is \d{1,digits}
        raise OutOfBounds(f"must have at most {digits} digits before the decimal point")
    if fraction is not None and len(fraction) > places:
        raise OutOfBounds(f"must have at most {places} decimal places")
    if sign and not signed:
        raise OutOfBounds("must not be negative")
    number = Decimal(text)
    if sign and not number:
        raise OutOfBounds("must not be negative zero")
    return number


def parse_integer(value: Any, *, digits: int = MAX_INTEGER_DIGITS, strict: bool = False) -> int:
    """`value` as an int of at most `digits` digits.

    Always accepts a JSON integer (not a bool), and a JSON number with no fractional part
    (`5.0`: JSON Schema's `integer`, which the OpenAPI documents promise); unless `strict`,
    also integer text (query parameters): ASCII digits with an optional `-`, nothing else (no
    spaces, `+`, `_`, or non-ASCII digits, which `int()` would take). Raises `OutOfBounds`
    before converting.
    """
    if isinstance(value, float) and value.is_integer():
        if not -(10**digits) < value < 10**digits:
            raise OutOfBounds(f"must have at most {digits} digits")
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if not -(10**digits) < value < 10**digits:
            raise OutOfBounds(f"must have at most {digits} digits")
        return value
    if strict or not isinstance(value, str):
        raise OutOfBounds("must be an integer")
    if len(value) > digits + 1:
        raise OutOfBounds(f"must have at most {digits} digits")
    if _INTEGER.fullmatch(value) is None or len(value.lstrip("-")) > digits:
        raise OutOfBounds("must be an integer (digits 0-9, no spaces)")
    return int(value)


class BoundedDecimal(fields.Decimal):
    """A decimal in (text, or a JSON number when `numbers`), bounded before conversion.

    `places` here is a maximum, never a rounding: `12.345` with places=2 is refused. Dumping
    is `fields.Decimal`'s (give `as_string=True` for money out).
    """

    def __init__(
        self,
        *,
        digits: int,
        places: int,
        signed: bool = False,
        numbers: bool = True,
        **kwargs: Any,
    ) -> None:
        self.digits = digits
        self.max_places = places
        self.signed = signed
        self.numbers = numbers
        super().__init__(**kwargs)

    def _validated(self, value: Any) -> Decimal:
        try:
            return parse_decimal(
                value,
                digits=self.digits,
                places=self.max_places,
                signed=self.signed,
                numbers=self.numbers,
            )
        except OutOfBounds as exc:
            raise ValidationError(str(exc)) from exc


class BoundedInteger(fields.Integer):
    """An integer in: a JSON int (or, unless `strict`, integer text), at most `digits` long.

    Give the real range with `validate.Range` as usual; `digits` only bounds the work.
    """

    def __init__(self, *, digits: int = MAX_INTEGER_DIGITS, **kwargs: Any) -> None:
        self.digits = digits
        super().__init__(**kwargs)

    def _validated(self, value: Any) -> int:
        try:
            return parse_integer(value, digits=self.digits, strict=self.strict)
        except OutOfBounds as exc:
            raise ValidationError(str(exc)) from exc


class FullMatch(validate.Regexp):
    """`validate.Regexp` that matches the whole string: `^a$` lets "a\\n" through with
    `re.match`, never with `re.fullmatch`. Still a Regexp, so apispec documents the pattern."""

    def __call__(self, value: str | bytes) -> str | bytes:
        if self.regex.fullmatch(value) is None:  # type: ignore[arg-type]
            raise ValidationError(self._format_error(value))
        return value


def domain_rule(check: Callable[[Any], str | None]) -> Callable[[Any], None]:
    """A marshmallow validator from a domain check that returns an error message or None.

    The domain states its rules once, without marshmallow (`check_sku(value) -> str | None`);
    the schemas of every service wrap them with this one adapter.
    """

    def validator(value: Any) -> None:
        error = check(value)
        if error:
            raise ValidationError(error)

    return validator


def load_json(raw: bytes) -> Any:
    """A request body as JSON, or `Problem(400)`.

    orjson refuses, while parsing and natively: nesting deeper than `MAX_JSON_DEPTH`, lone
    surrogates (`"\\ud800"`), invalid UTF-8, NaN/Infinity and numbers beyond a double's range.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, f"the request body is not valid JSON: {exc.msg}") from exc


def query_params(raw: bytes | str) -> dict[str, str]:
    """The query string as name -> first value, decoded as strict UTF-8, or `Problem(400)`.

    Werkzeug and yarl replace undecodable bytes (`%ED%A0%80`, a UTF-8-encoded lone surrogate,
    `%FF`); an API that refuses them says so instead of searching for U+FFFD.
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        text.encode("utf-8")  # a str may carry surrogates (surrogateescape): refuse them too
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except (UnicodeError, ValueError) as exc:
        raise Problem(400, "the query string is not valid UTF-8") from exc
    params: dict[str, str] = {}
    for name, value in pairs:
        params.setdefault(name, value)
    return params


def key_paths(messages: Any, where: str = "") -> list[str]:
    """marshmallow's nested error messages as `clients[0].scope: message` lines: a config
    file's reader (the gateway's YAML, identity's clients file) names the key to fix."""
    if isinstance(messages, dict):
        lines: list[str] = []
        for key, sub in messages.items():
            if isinstance(key, int):
                path = f"{where}[{key}]"
            elif (key == "value" and where) or key == "_schema":
                path = where  # fields.Dict nests its value errors under "value"
            else:
                path = f"{where}.{key}" if where else str(key)
            lines.extend(key_paths(sub, path))
        return lines
    if isinstance(messages, list):
        lines = []
        for m in messages:
            if isinstance(m, str):
                lines.append(f"{where or '<root>'}: {m.rstrip('.')}")
            else:
                lines.extend(key_paths(m, where))
        return lines
    return [f"{where or '<root>'}: {messages}"]


@overload
def idempotency_key(headers: Mapping[str, str], *, required: Literal[True] = ...) -> str: ...
@overload
def idempotency_key(headers: Mapping[str, str], *, required: bool) -> str | None: ...
def idempotency_key(headers: Mapping[str, str], *, required: bool = True) -> str | None:
    """The request's `Idempotency-Key`, checked: the one answer every service gives.

    Missing where required: 400 (`IDEMPOTENCY_KEY_MISSING`); present but not 1-255 visible
    ASCII chars: 422 naming the header. Takes any headers mapping (Flask's and aiohttp's both
    fit), so the Flask and the aiohttp services share it. Not required: None when absent.
    """
    key = headers.get("Idempotency-Key")
    if key is None:
        if not required:
            return None
        raise Problem(
            400,
            "the Idempotency-Key header is required",
            type_=IDEMPOTENCY_KEY_MISSING,
            errors={"Idempotency-Key": ["is required"]},
        )
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise validation_problem({"Idempotency-Key": ["must be 1-255 visible ASCII chars"]})
    return key
