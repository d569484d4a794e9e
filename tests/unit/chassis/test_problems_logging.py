from __future__ import annotations

import json
import logging

from chassis import Problem, accept_request_id, correlation_id, validation_problem
from chassis.logging import JsonFormatter


def test_problem_document_has_rfc9457_members_and_correlation_id() -> None:
    token = correlation_id.set("req-1")
    try:
        doc = Problem(404, "no product 7").document(instance="/api/v1/products/7")
    finally:
        correlation_id.reset(token)
    assert doc["status"] == 404
    assert doc["title"] == "Not Found"
    assert doc["detail"] == "no product 7"
    assert doc["instance"] == "/api/v1/products/7"
    assert doc["type"].endswith("/not-found")
    assert doc["correlation_id"] == "req-1"


def test_validation_problem_names_the_fields() -> None:
    problem = validation_problem({"price": ["Not a valid number."], "name": ["Missing."]})
    doc = problem.document()
    assert problem.status == 422
    assert doc["detail"] == "invalid fields: name, price"
    assert doc["errors"]["price"] == ["Not a valid number."]


def test_request_id_accepted_only_when_safe() -> None:
    assert accept_request_id("abc-123") == "abc-123"
    generated = accept_request_id("bad id\r\nX-Injected: 1")
    assert generated != "bad id\r\nX-Injected: 1"
    assert len(generated) == 32
    assert accept_request_id("x" * 129) != "x" * 129
    assert accept_request_id(None)


def test_json_log_line_carries_correlation_id_and_extras() -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    record.status = 201
    token = correlation_id.set("cid-9")
    try:
        line = JsonFormatter("catalog").format(record)
    finally:
        correlation_id.reset(token)
    doc = json.loads(line)
    assert doc["msg"] == "hello you"
    assert doc["service"] == "catalog"
    assert doc["correlation_id"] == "cid-9"
    assert doc["status"] == 201
