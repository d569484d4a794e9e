"""Issue 15 item 8 on payments (Flask): amounts are bounded ASCII decimal text, patterns match
in full, unreadable JSON and query strings are 400 problems, never a 500."""

from __future__ import annotations

from typing import Any

import pytest

from services.payments.domain import parse_amount

from .conftest import Api

ARABIC_TEN = "\u0661\u0660"
FULLWIDTH_TEN = "\uff11\uff10"


def refused(resp: Any, status: int, field: str | None = None) -> None:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
    if field is not None:
        assert field in resp.get_json()["errors"]


@pytest.mark.parametrize(
    "amount",
    [
        ARABIC_TEN,  # charged EUR 10.00 on main: \d matches Arabic-Indic digits
        FULLWIDTH_TEN,
        "1" + ARABIC_TEN,
        "-0.00",
        " 1.00",
        "1.00\n",  # `...$` matched before the newline on main
        "1e999990",
        "1" * 30,
        "1.001",
        "0.00",
        79.8,  # numbers stay refused: no binary floats for money
        10**30,
    ],
)
def test_amount_out_of_bounds_is_422(api: Api, amount: Any) -> None:
    refused(api.charge("k-1", amount=amount), 422, "amount")


@pytest.mark.parametrize("text", [ARABIC_TEN, "10\n", "1" + FULLWIDTH_TEN])
def test_parse_amount_takes_ascii_digits_in_full(text: str) -> None:
    with pytest.raises(ValueError):
        parse_amount(text)


def test_order_id_must_match_in_full(api: Api) -> None:
    refused(api.charge("k-1", order_id="o1\n"), 422, "order_id")


@pytest.mark.parametrize(
    ("query", "status"),
    [
        (f"limit={ARABIC_TEN}", 422),
        ("limit=%2010", 422),
        ("order_id=o1%0A", 422),
        ("order_id=%ED%A0%80", 400),
    ],
)
def test_list_query_out_of_bounds(api: Api, query: str, status: int) -> None:
    refused(api.client.get(f"/api/v1/payments?{query}", headers=api.read), status)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 10_000 + b"]" * 10_000,  # above payments' body limit: 413 before parsing
        b"[" * 2_000 + b"]" * 2_000,  # within it, deeper than the parser's bound
        b'{"order_id": "\\ud800", "amount": "1.00", "payment_method": "pm_card_ok"}',
    ],
)
def test_unreadable_json_is_a_4xx_problem(api: Api, raw: bytes) -> None:
    resp = api.client.post(
        "/api/v1/payments",
        data=raw,
        headers={**api.write, "Idempotency-Key": "k-1", "Content-Type": "application/json"},
    )
    refused(resp, 413 if len(raw) > 10_000 else 400)


def test_in_bounds_amounts_still_charge(api: Api) -> None:
    for i, amount in enumerate(["0.01", "12.5", "100000000.00"]):
        resp = api.charge(f"k-{i}", amount=amount, order_id=f"o{i}")
        assert resp.status_code == 201, resp.get_data(as_text=True)
