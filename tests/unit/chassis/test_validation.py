"""chassis.validation: numbers bounded as text before any arithmetic, whole-string patterns,
JSON bodies and query strings refused as 400/422 problems (never a 500) by both glues."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from flask import Flask
from marshmallow import Schema, ValidationError

from chassis import (
    BoundedDecimal,
    BoundedInteger,
    FullMatch,
    OutOfBounds,
    Problem,
    load_json,
    parse_decimal,
    parse_integer,
    query_params,
)
from chassis import aiohttp as chassis_aiohttp
from chassis import flask as chassis_flask
from chassis.validation import IDEMPOTENCY_KEY_MISSING, domain_rule, idempotency_key

ARABIC_TEN = "\u0661\u0660"  # Arabic-Indic digits: Decimal() and int() read them as 10
FULLWIDTH_TEN = "\uff11\uff10"  # fullwidth digits, the same
DEEP = b"[" * 10_000 + b"]" * 10_000
DEEP_OBJECT = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
LONE_SURROGATE = b'{"name": "\\ud800"}'
LOW_SURROGATE = b'{"name": "x\\udc00"}'


# --- numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12.50", Decimal("12.50")),
        ("0", Decimal("0")),
        ("0.00", Decimal("0.00")),
        ("1234567.5", Decimal("1234567.5")),
        (12, Decimal(12)),
        (12.5, Decimal("12.5")),
        (0.0, Decimal("0.0")),
    ],
)
def test_parse_decimal_accepts(value: Any, expected: Decimal) -> None:
    assert parse_decimal(value, digits=7, places=2) == expected


@pytest.mark.parametrize(
    "value",
    [
        "1e999990",  # the freeze: an exponent
        "1E5",
        "1" * 5000,  # a huge integer as text
        10**30,  # a huge JSON integer
        10**400,
        1e300,
        float("inf"),
        float("nan"),
        "-0.00",
        "-0",
        -0.0,
        "-1.00",
        -1,
        " 1.00",
        "1.00 ",
        "1.00\n",
        "\t1",
        ARABIC_TEN,
        FULLWIDTH_TEN,
        "1" + ARABIC_TEN,
        "+1.00",
        "1_000",
        "1.",
        ".5",
        "1.234",
        "12345678",
        "00000001",  # the documented pattern is \d{1,7}: leading zeros count
        1e-05,
        "NaN",
        "Infinity",
        "",
        True,
        None,
        [],
        {"a": 1},
    ],
)
def test_parse_decimal_refuses(value: Any) -> None:
    with pytest.raises(OutOfBounds):
        parse_decimal(value, digits=7, places=2)


def test_parse_decimal_signed_and_text_only() -> None:
    assert parse_decimal("-1.5", digits=3, places=1, signed=True) == Decimal("-1.5")
    with pytest.raises(OutOfBounds, match="negative zero"):
        parse_decimal("-0.0", digits=3, places=1, signed=True)
    with pytest.raises(OutOfBounds, match="decimal string"):
        parse_decimal(12, digits=3, places=2, numbers=False)
    with pytest.raises(OutOfBounds, match="decimal string"):
        parse_decimal(1.5, digits=3, places=2, numbers=False)


@pytest.mark.parametrize(
    ("value", "expected"), [("20", 20), ("-3", -3), (7, 7), ("0", 0), (2.0, 2), (-5.0, -5)]
)
def test_parse_integer_accepts(value: Any, expected: int) -> None:
    assert parse_integer(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        " 20",
        "20 ",
        "20\n",
        "+20",
        "2_0",
        ARABIC_TEN,
        FULLWIDTH_TEN,
        "1e3",
        "1" * 19,
        "1" * 5000,  # int() itself raises past 4300 digits; refused before that
        10**18,
        -(10**18),
        10**400,
        2.5,
        1e18,  # an integral double is bounded like an int
        1e308,
        True,
        None,
        "",
    ],
)
def test_parse_integer_refuses(value: Any) -> None:
    with pytest.raises(OutOfBounds):
        parse_integer(value)


def test_parse_integer_strict_takes_json_integers_only() -> None:
    """JSON numbers only; `5.0` is one (JSON Schema's `integer`, as the OpenAPI says)."""
    assert parse_integer(5, strict=True) == 5
    assert parse_integer(5.0, strict=True) == 5
    with pytest.raises(OutOfBounds):
        parse_integer(5.5, strict=True)
    with pytest.raises(OutOfBounds):
        parse_integer("5", strict=True)


class Numbers(Schema):
    price = BoundedDecimal(digits=7, places=2)
    count = BoundedInteger()
    strict = BoundedInteger(strict=True)


def test_fields_name_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        Numbers().load({"price": "1e999990", "count": ARABIC_TEN, "strict": "5"})
    assert set(caught.value.messages) == {"price", "count", "strict"}
    loaded = Numbers().load({"price": "9.99", "count": "3", "strict": 4})
    assert loaded == {"price": Decimal("9.99"), "count": 3, "strict": 4}


def test_bounded_decimal_never_rounds() -> None:
    with pytest.raises(ValidationError):
        Numbers().load({"price": "9.999"})


def test_full_match_refuses_a_trailing_newline() -> None:
    check = FullMatch(r"^[A-Z0-9][A-Z0-9-]{2,63}$")
    assert check("SKU-1") == "SKU-1"
    for bad in ("SKU-1\n", "SKU-1\nX", "\nSKU-1", "sku-1"):
        with pytest.raises(ValidationError):
            check(bad)


# --- JSON and query strings -----------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", [DEEP, DEEP_OBJECT, LONE_SURROGATE, LOW_SURROGATE, b"\xff", b"1e999990"]
)
def test_load_json_refuses_with_400(raw: bytes) -> None:
    with pytest.raises(Problem) as caught:
        load_json(raw)
    assert caught.value.status == 400


def test_load_json_accepts_ordinary_documents() -> None:
    assert load_json(b'{"a": [1, 2.5, "\\ud83d\\ude00"]}') == {"a": [1, 2.5, "\U0001f600"]}
    assert load_json(b"[" * 500 + b"]" * 500)  # nesting within the bound is fine


@pytest.mark.parametrize("raw", [b"q=%ED%A0%80", b"q=%FF", b"q=a&r=%C0%AF", "q=\udcff"])
def test_query_params_refuse_undecodable_text(raw: bytes | str) -> None:
    with pytest.raises(Problem) as caught:
        query_params(raw)
    assert caught.value.status == 400


def test_query_params_decode_and_keep_the_first_value() -> None:
    assert query_params(b"q=caf%C3%A9+au+lait&q=second&empty=") == {
        "q": "café au lait",
        "empty": "",
    }


# --- both glues -----------------------------------------------------------------------------


class Body(Schema):
    name = BoundedInteger(required=False)
    price = BoundedDecimal(digits=7, places=2, required=False)


class Query(Schema):
    limit = BoundedInteger(load_default=20)


def flask_app() -> Flask:
    app = Flask(__name__)
    chassis_flask.install(app, "test")

    @app.post("/body")
    def body() -> Any:
        return {"ok": str(chassis_flask.json_body(Body()))}

    @app.get("/query")
    def query() -> Any:
        return {"limit": chassis_flask.query_args(Query())["limit"]}

    return app


ATTACKS: list[tuple[bytes, int]] = [
    (DEEP, 400),
    (DEEP_OBJECT, 400),
    (LONE_SURROGATE, 400),
    (LOW_SURROGATE, 400),
    (b'{"price": "1e999990"}', 422),
    (b'{"price": 1000000000000000000000000000000}', 422),
    (b'{"price": "-0.00"}', 422),
]


@pytest.mark.parametrize(("raw", "status"), ATTACKS)
def test_flask_json_body_answers_problems(raw: bytes, status: int) -> None:
    resp = (
        flask_app()
        .test_client()
        .post("/body", data=raw, headers={"Content-Type": "application/json"})
    )
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
    if status == 422:
        assert "price" in resp.get_json()["errors"]


@pytest.mark.parametrize(
    ("query", "status"),
    [("limit=5", 200), (f"limit={ARABIC_TEN}", 422), ("limit=%205", 422), ("limit=%ED%A0%80", 400)],
)
def test_flask_query_args(query: str, status: int) -> None:
    resp = flask_app().test_client().get(f"/query?{query}")
    assert resp.status_code == status, resp.get_data(as_text=True)
    if status != 200:
        assert resp.mimetype == "application/problem+json"


Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def aio(aiohttp_client: Callable[[web.Application], Awaitable[Client]]) -> Client:
    app = web.Application()
    chassis_aiohttp.install(app, "test")

    async def body(request: web.Request) -> web.Response:
        return web.json_response({"ok": str(await chassis_aiohttp.json_body(request, Body()))})

    async def query(request: web.Request) -> web.Response:
        return web.json_response({"limit": chassis_aiohttp.query_args(request, Query())["limit"]})

    app.router.add_post("/body", body)
    app.router.add_get("/query", query)
    return await aiohttp_client(app)


@pytest.mark.parametrize(("raw", "status"), ATTACKS)
async def test_aiohttp_json_body_answers_problems(aio: Client, raw: bytes, status: int) -> None:
    resp = await aio.post("/body", data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"


@pytest.mark.parametrize(
    ("query", "status"),
    [("limit=5", 200), (f"limit={ARABIC_TEN}", 422), ("limit=%205", 422), ("limit=%ED%A0%80", 400)],
)
async def test_aiohttp_query_args(aio: Client, query: str, status: int) -> None:
    resp = await aio.get(f"/query?{query}")
    assert resp.status == status, await resp.text()
    if status != 200:
        assert resp.content_type == "application/problem+json"


def test_idempotency_key_missing_is_400_malformed_is_422_optional_is_none() -> None:
    """One answer for every service: the IETF Idempotency-Key draft's 400 for a missing key."""
    assert idempotency_key({"Idempotency-Key": "k-1"}) == "k-1"
    assert idempotency_key({}, required=False) is None
    with pytest.raises(Problem) as missing:
        idempotency_key({})
    assert missing.value.status == 400 and missing.value.type == IDEMPOTENCY_KEY_MISSING
    assert missing.value.extra["errors"] == {"Idempotency-Key": ["is required"]}
    for bad in ("", "k" * 256, "a b", "clé", "k\n"):
        with pytest.raises(Problem) as malformed:
            idempotency_key({"Idempotency-Key": bad}, required=False)
        assert (
            malformed.value.status == 422 and "Idempotency-Key" in malformed.value.extra["errors"]
        )


def test_domain_rule_turns_a_domain_check_into_a_marshmallow_validator() -> None:
    """The one adapter the services' schemas wrap their domain checks with."""

    def check_even(value: int) -> str | None:
        return None if value % 2 == 0 else "must be even"

    class Even(Schema):
        n = BoundedInteger(required=True, validate=domain_rule(check_even))

    assert Even().load({"n": 4}) == {"n": 4}
    with pytest.raises(ValidationError) as err:
        Even().load({"n": 3})
    assert err.value.messages == {"n": ["must be even"]}
