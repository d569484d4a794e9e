"""Schemathesis over the gateway's merged /openapi.json, on a real stack of its own.

Every operation of the merged document is fuzzed, writes included, with a token carrying every
scope identity supports: a bounded number of valid requests (positive mode) and of requests
the document forbids (negative mode) per operation. Each answer must be no server error, a
status the operation documents (with its content type and schema), a 4xx for every request the
document forbids and a non-4xx for every request it allows (credentials and state aside:
401/403/404/409/412/429 are fine answers to a valid request).

The stack is its own (fuzzed writes must not disturb the other end-to-end tests) with the
rate-limit budgets raised, so that 429s do not hide everything after the first hundred cases.
Kept to ~2 minutes on 2 cores: few examples, no shrinking, derandomized, no stateful phase.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi import checks as openapi_checks

from gateway.config import DEFAULT_CONFIG_PATH
from tests.e2e.conftest import isolated_stack
from tools.stack import Stack

EXAMPLES = int(os.environ.get("PORTICO_SCHEMA_EXAMPLES", "12"))

# A valid request may still meet credentials or state it does not control: an unknown id (404),
# a taken name (409), a stale If-Match (412), a spent budget (429); never a 400/422.
_VALID_MAY_GET = ["2xx", "3xx", "401", "403", "404", "409", "412", "429"]
# The OAuth protocol endpoints answer a well-formed request for an unknown client, code or
# redirect URI with RFC 6749's 400/401: that is about credentials, not the request's shape.
_OAUTH_VALID_MAY_GET = [*_VALID_MAY_GET, "400"]
# An order for a sku the catalog does not have is a 422 naming `items`: the document cannot
# say which skus exist.
_ORDER_VALID_MAY_GET = [*_VALID_MAY_GET, "422"]

# Streams (ADR 0035): open until the client leaves.
LIVE = {"GET /api/v1/notifications/stream", "GET /api/v1/notifications/ws"}

_CHECKS = [
    not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.negative_data_rejection,
    openapi_checks.positive_data_acceptance,
]


def _config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "checks": {"positive_data_acceptance": {"expected-statuses": _VALID_MAY_GET}},
            "operations": [
                {
                    "include-path-regex": "^/oauth/",
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": _OAUTH_VALID_MAY_GET}
                    },
                },
                {
                    "include-path": "/api/v1/orders",
                    "include-method": "POST",
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": _ORDER_VALID_MAY_GET}
                    },
                },
            ],
        }
    )


def _generous_gateway_config(path: Path) -> Path:
    """The packaged gateway.yaml with every rate-limit budget raised (nothing else changed)."""
    config = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    for policy in config["rate_limits"]["policies"].values():
        policy.update(limit=1_000_000, period=60, burst=1_000_000)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("schema-stack")
    env = {"GATEWAY_CONFIG": str(_generous_gateway_config(workdir / "gateway.yaml"))}
    with isolated_stack(workdir, env) as started:
        yield started


@pytest.fixture(scope="module")
def token(api: Stack) -> str:
    """client_credentials through the dev client, asking for every scope identity supports."""
    gateway = api.gateway_url
    meta = requests.get(f"{gateway}/.well-known/oauth-authorization-server", timeout=10).json()
    creds = api.credentials()
    resp = requests.post(
        f"{gateway}/oauth/token",
        data={"grant_type": "client_credentials", "scope": " ".join(meta["scopes_supported"])},
        auth=(creds["client_id"], creds["client_secret"]),
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    granted = set(resp.json()["scope"].split())
    assert granted == set(meta["scopes_supported"]), granted
    return str(resp.json()["access_token"])


def _label(case: Any) -> str:
    """The exact request, as curl (the all-scope token left out)."""
    return " ".join(case.as_curl_command().split())[:600]


def _fuzz(
    operation: Any, mode: GenerationMode, base_url: str, token: str, failures: list[str]
) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,  # the same cases every run: no flaky CI
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        if mode == GenerationMode.POSITIVE and case.query and "cursor" in case.query:
            # A cursor is valid only as a value this API returned: none can be generated.
            del case.query["cursor"]
        query = case.query or {}
        if mode == GenerationMode.POSITIVE and {"min_price", "max_price"} <= set(query):
            # max_price >= min_price: stated in words, beyond what JSON Schema can say.
            low, high = sorted((query["min_price"], query["max_price"]), key=Decimal)
            query["min_price"], query["max_price"] = low, high
        if mode == GenerationMode.POSITIVE and {"from", "to"} <= set(query):
            # The sales report: to >= from, at most 366 days (stated in words, as above).
            first, last = sorted(date.fromisoformat(str(query[k])) for k in ("from", "to"))
            query["from"], query["to"] = str(first), str(min(last, first + timedelta(days=365)))
        headers = {"Authorization": f"Bearer {token}"}
        if case.headers and "Authorization" in case.headers:  # the document's own scheme
            headers = {}
        response = case.call(base_url=base_url, headers=headers, timeout=15)
        try:
            case.validate_response(response, checks=_CHECKS, headers=headers)
        except (Exception, BaseExceptionGroup) as exc:  # collected, all reported at the end
            message = " | ".join(str(exc).split("\n")[:6])[:500]
            failures.append(
                f"[{mode.value}] {_label(case)} -> {response.status_code}: {message}"
                f" body={response.text[:200]!r}"
            )

    try:
        run()
    except Unsatisfiable:  # negative mode: nothing to negate (no parameters, no body)
        assert mode == GenerationMode.NEGATIVE, f"{operation.label}: no valid case"


def test_the_merged_spec_holds(api: Stack, token: str) -> None:
    schema = schemathesis.openapi.from_url(f"{api.gateway_url}/openapi.json", config=_config())
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {f"{op.method.upper()} {op.path}" for op in operations}
    # identity's own document is merged in: its users and OAuth endpoints are fuzzed too
    assert {"POST /api/v1/users", "GET /api/v1/users/me", "POST /oauth/token"} <= labels, labels
    # Live streams never end, so a fuzzed call would hang on a valid one: they are documented
    # here and exercised by tests/integration/test_notification_streams.py and the contracts.
    assert labels >= LIVE, labels
    failures: list[str] = []
    for operation in operations:
        if f"{operation.method.upper()} {operation.path}" in LIVE:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, api.gateway_url, token, failures)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(sorted(set(failures))[:60])
