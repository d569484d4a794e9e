"""Schemathesis against the gateway's merged /openapi.json on the real stack: a bounded number
of generated requests per operation, with a token carrying every scope; no 5xx, and every
answer matches its documented status, content type and schema.

GETs are all fuzzed; of the writes only those that are safe on a throwaway stack (no saga or
payment side effects that outlive the request): product create/update. Kept well under a
minute: few examples, no shrinking, no stateful phase."""

from __future__ import annotations

from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.specs.openapi import checks as openapi_checks

from tools.stack import Stack

EXAMPLES = 8
_SAFE_WRITES = {("POST", "/api/v1/products"), ("PATCH", "/api/v1/products/{id}")}


@pytest.fixture(scope="module")
def token(stack: Stack, creds: dict[str, str]) -> str:
    spec = requests.get(f"{stack.gateway_url}/openapi.json", timeout=10).json()
    flows = spec["components"]["securitySchemes"]["oauth2"]["flows"]
    scopes = " ".join(sorted(flows["clientCredentials"]["scopes"]))
    resp = requests.post(
        f"{stack.gateway_url}/oauth/token",
        data={"grant_type": "client_credentials", "scope": scopes},
        auth=(creds["client_id"], creds["client_secret"]),
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def _fuzzed(operation: Any) -> bool:
    method, path = operation.method.upper(), operation.path
    if path in ("/oauth/token", "/readyz"):  # the token endpoint is exercised by the fixture
        return False
    return method == "GET" or (method, path) in _SAFE_WRITES


_CHECKS = [
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
]


def _fuzz(operation: Any, base_url: str, token: str, failures: list[str]) -> None:
    label = f"{operation.method.upper()} {operation.path}"

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,  # the same examples every run: no flaky CI
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        response = case.call(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        where = f"{label} -> {response.status_code}"
        if response.status_code >= 500:
            failures.append(f"{where}: {response.text[:300]}")
            return
        for check in _CHECKS:
            try:
                case.validate_response(response, checks=[check])
            except (Exception, BaseExceptionGroup) as exc:  # collected, all reported at the end
                failures.append(f"{where}: {str(exc)[:400]}")

    run()


def test_the_merged_spec_holds(stack: Stack, token: str) -> None:
    schema = schemathesis.openapi.from_url(f"{stack.gateway_url}/openapi.json")
    failures: list[str] = []
    operations = [r.ok() for r in schema.get_all_operations()]
    fuzzed = [op for op in operations if _fuzzed(op)]
    assert len(fuzzed) >= 8, [f"{o.method} {o.path}" for o in operations]
    for operation in fuzzed:
        _fuzz(operation, stack.gateway_url, token, failures)
    assert not failures, "\n".join(sorted(set(failures))[:25])
