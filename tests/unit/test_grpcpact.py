"""The gRPC pact rules (contracts.grpcpact, ADR 0028) on answers built by hand: only the
listed paths are checked, plus the status; `[*]` means every element."""

from __future__ import annotations

from typing import Any

from contracts.grpcpact import check


def expected(**rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": "FAILED_PRECONDITION",
        "details": [
            {"@type": "t/google.rpc.PreconditionFailure", "violations": [{"subject": "SKU-1"}]}
        ],
        "matchingRules": rules,
    }


def answer(*subjects: Any, status: str = "FAILED_PRECONDITION") -> dict[str, Any]:
    violations = [{"subject": s} for s in subjects]
    return {
        "status": status,
        "details": [{"@type": "t/google.rpc.PreconditionFailure", "violations": violations}],
    }


def test_only_the_status_and_the_listed_paths_count() -> None:
    assert check(expected(), answer("anything", 3)) == []
    assert check(expected(), answer(status="OK")) == [
        "status: expected FAILED_PRECONDITION, got OK"
    ]


def test_type_compares_json_types() -> None:
    rule = {"details[0].violations[*].subject": {"match": "type"}}
    assert check(expected(**rule), answer("SKU-9", "SKU-8")) == []
    assert check(expected(**rule), answer("SKU-9", 7)) == [
        "rule details[0].violations[*].subject (type): details[0].violations[1].subject is a "
        "number, expected a string like 'SKU-1'"
    ]


def test_every_element_and_an_empty_list_fail_by_place() -> None:
    rule = {"details[0].violations[*].subject": {"match": "regex", "regex": "^SKU-"}}
    assert check(expected(**rule), answer("SKU-2", "X")) == [
        "rule details[0].violations[*].subject (regex ^SKU-): "
        "details[0].violations[1].subject is 'X'"
    ]
    assert check(expected(**rule), answer()) == [
        "rule details[0].violations[*].subject (regex): "
        "details[0].violations[*] (no elements) is not in the answer"
    ]


def test_equality_and_quoted_keys() -> None:
    rule = {"details[0]['@type']": {"match": "equality"}}
    assert check(expected(**rule), answer("SKU-1")) == []
    other = answer("SKU-1")
    other["details"][0]["@type"] = "t/google.rpc.BadRequest"
    assert check(expected(**rule), other) == [
        "rule details[0]['@type'] (equality): details[0].@type is 't/google.rpc.BadRequest', "
        "not 't/google.rpc.PreconditionFailure'"
    ]


def test_a_rule_without_an_example_or_an_unknown_match_is_named() -> None:
    assert check(expected(**{"details[0].reason": {"match": "type"}}), answer("SKU-1")) == [
        "rule details[0].reason (type): details[0].reason is not in the answer"
    ]
    with_reason = answer("SKU-1")
    with_reason["details"][0]["reason"] = "x"
    assert check(expected(**{"details[0].reason": {"match": "type"}}), with_reason) == [
        "rule details[0].reason (type): the pact's example has no details[0].reason"
    ]
    assert check(expected(**{"details": {"match": "include"}}), answer()) == [
        "rule details: unknown match 'include'"
    ]
