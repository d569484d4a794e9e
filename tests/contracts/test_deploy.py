"""can-i-deploy from the recorded matrix, and publishing to a Pact Broker - here a stand-in
HTTP server that checks every request the way the broker's API takes it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from contracts.__main__ import main
from contracts.deploy import (
    Results,
    Verification,
    broker_can_i_deploy,
    can_i_deploy,
    pact_sha,
    publish,
)


def v(consumer: str, cv: str, provider: str, pv: str, sha: str, ok: bool = True) -> Verification:
    return Verification(consumer, cv, provider, pv, sha, ok, passed=3, failed=0 if ok else 1)


def test_a_service_is_deployable_when_every_pair_it_meets_verified() -> None:
    results = Results()
    results.record(
        [v("orders", "a1", "catalog", "a1", "s1"), v("gateway", "a1", "orders", "a1", "s2")]
    )
    answer = can_i_deploy(results, "orders", "a1")
    assert answer.deployable, answer.render()
    assert [(r[0], r[2], r[4]) for r in answer.rows] == [
        ("orders", "catalog", "true"),
        ("gateway", "orders", "true"),
    ]
    assert "can-i-deploy: yes" in answer.render()


def test_a_failed_or_missing_pair_says_no_naming_it() -> None:
    results = Results()
    results.record(
        [v("orders", "a1", "catalog", "a1", "s1"), v("gateway", "a1", "orders", "a1", "s2")]
    )
    # catalog b2 failed orders' pact: orders a1 may not meet it
    results.record([v("orders", "a1", "catalog", "b2", "s1", ok=False)])
    answer = can_i_deploy(results, "orders", "a1")
    assert not answer.deployable
    assert answer.reasons == ["orders a1 -> catalog b2: verification failed"]
    # ... but it may meet catalog a1, which verified it
    assert can_i_deploy(results, "orders", "a1", {"catalog": "a1"}).deployable
    # orders c3 wrote a new pact with catalog that no catalog version verified
    results.record([v("orders", "c3", "inventory", "a1", "s9")])
    results.pacts.append(
        {"consumer": "orders", "consumer_version": "c3", "provider": "catalog"}
        | {"pact_sha": "s-new", "recorded_at": 0.0}
    )
    answer = can_i_deploy(results, "orders", "c3", {"catalog": "a1"})
    assert answer.reasons == [
        "orders c3 -> catalog a1: never verified",
        "gateway a1 -> orders c3: never verified",  # only orders a1 verified gateway's pact
    ]
    # and as a provider: gateway's latest pact with orders was never verified by orders d4
    results.record([v("orders", "d4", "catalog", "a1", "s1")])
    answer = can_i_deploy(results, "orders", "d4", {"catalog": "a1"})
    assert answer.reasons == ["gateway a1 -> orders d4: never verified"]


def test_an_unchanged_pact_carries_its_verification_to_the_next_consumer_version() -> None:
    results = Results()
    results.record([v("orders", "a1", "catalog", "p1", "same")])
    results.pacts.append(
        {"consumer": "orders", "consumer_version": "a2", "provider": "catalog"}
        | {"pact_sha": "same", "recorded_at": 9e99}
    )
    assert can_i_deploy(results, "orders", "a2").deployable


def test_an_unknown_version_says_no_and_an_abbreviated_sha_resolves() -> None:
    results = Results()
    results.record([v("orders", "0123abcd", "catalog", "0123abcd", "s1")])
    assert not can_i_deploy(results, "orders", "fff").deployable
    assert can_i_deploy(results, "orders", "0123").deployable


def test_the_command_reads_the_recorded_matrix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "verifications.json"
    results = Results()
    results.record(
        [
            v("orders", "a1", "catalog", "a1", "s1"),
            v("orders", "a1", "payments", "a1", "s3", ok=False),
        ]
    )
    results.save(path)
    monkeypatch.setenv("CONTRACTS_RESULTS", str(path))
    monkeypatch.delenv("PACT_BROKER_BASE_URL", raising=False)
    assert main(["can-i-deploy", "catalog", "--version", "a1"]) == 0
    assert main(["can-i-deploy", "orders", "--version", "a1"]) == 1
    out = capsys.readouterr().out
    assert "orders a1 -> payments a1: verification failed" in out and "can-i-deploy: NO" in out
    assert main(["can-i-deploy", "payments", "--version", "zz"]) == 1


def test_the_pact_hash_ignores_key_order_and_whitespace() -> None:
    assert pact_sha(b'{"a": 1, "b": [1, 2]}') == pact_sha(b'{"b":[1,2],"a":1}')
    assert pact_sha(b'{"a": 1}') != pact_sha(b'{"a": 2}')


# --- the broker stand-in ------------------------------------------------------------------


class Broker:
    """Just enough of the Pact Broker's HAL API, recording what it was sent."""

    def __init__(self, link_on_put: bool = True) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.link_on_put = link_on_put
        self.deployable = True
        broker = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, doc: Any) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/hal+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _record(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                broker.requests.append((self.command, self.path, dict(self.headers), body))
                return body

            def _pact_links(self) -> dict[str, Any]:
                # /pacts/provider/P/consumer/C/version/V
                parts = self.path.split("/")
                provider, consumer = parts[3], parts[5]
                href = (
                    f"http://{self.headers['Host']}/pacts/provider/{provider}/consumer/"
                    f"{consumer}/pact-version/sha-{consumer}-{provider}/verification-results"
                )
                return {"_links": {"pb:publish-verification-results": {"href": href}}}

            def do_PUT(self) -> None:
                body = self._record()
                ok = self.path.startswith("/pacts/provider/") and "/version/" in self.path
                if not ok or self.headers.get("Content-Type") != "application/json":
                    return self._answer(400, {"error": "bad pact publication"})
                json.loads(body)
                self._answer(200, self._pact_links() if broker.link_on_put else {})

            def do_GET(self) -> None:
                self._record()
                if self.path.startswith("/can-i-deploy?"):
                    return self._answer(
                        200,
                        {
                            "summary": {"deployable": broker.deployable, "reason": "stand-in"},
                            "matrix": [
                                {
                                    "consumer": {"name": "orders", "version": {"number": "a1"}},
                                    "provider": {"name": "catalog", "version": {"number": "a1"}},
                                    "verificationResult": {"success": broker.deployable},
                                }
                            ],
                        },
                    )
                self._answer(200, self._pact_links())

            def do_POST(self) -> None:
                body = json.loads(self._record())
                ok = self.path.endswith("/verification-results") and isinstance(
                    body.get("success"), bool
                )
                if not ok or not body.get("providerApplicationVersion"):
                    return self._answer(400, {"error": "bad verification result"})
                self._answer(201, {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Broker:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def broker() -> Iterator[Broker]:
    with Broker() as b:
        yield b


def _pact(tmp_path: Path, consumer: str, provider: str) -> Path:
    path = tmp_path / f"{consumer}-{provider}.json"
    doc = {"consumer": {"name": consumer}, "provider": {"name": provider}, "interactions": []}
    path.write_text(json.dumps(doc), "utf-8")
    return path


def test_publishing_puts_each_pact_then_posts_its_verification_result(
    broker: Broker, tmp_path: Path
) -> None:
    pacts = [
        (_pact(tmp_path, "orders", "catalog"), v("orders", "c1", "catalog", "p1", "x")),
        (_pact(tmp_path, "gateway", "orders"), v("gateway", "c1", "orders", "p1", "y", ok=False)),
    ]
    assert publish(broker.url, pacts, token="t0k") == []
    methods = [(m, p) for m, p, _, _ in broker.requests]
    assert methods == [
        ("PUT", "/pacts/provider/catalog/consumer/orders/version/c1"),
        (
            "POST",
            "/pacts/provider/catalog/consumer/orders/pact-version/sha-orders-catalog/verification-results",
        ),
        ("PUT", "/pacts/provider/orders/consumer/gateway/version/c1"),
        (
            "POST",
            "/pacts/provider/orders/consumer/gateway/pact-version/sha-gateway-orders/verification-results",
        ),
    ]
    assert all(h.get("Authorization") == "Bearer t0k" for _, _, h, _ in broker.requests)
    assert broker.requests[0][3] == pacts[0][0].read_bytes()
    first, second = (json.loads(r[3]) for r in broker.requests[1::2])
    assert first["success"] is True and first["providerApplicationVersion"] == "p1"
    assert second["success"] is False and second["testResults"] == {"passed": 3, "failed": 1}


def test_publishing_follows_the_pact_document_when_the_put_has_no_link(tmp_path: Path) -> None:
    with Broker(link_on_put=False) as b:
        pacts = [(_pact(tmp_path, "orders", "catalog"), v("orders", "c1", "catalog", "p1", "x"))]
        assert publish(b.url, pacts) == []
        assert [m for m, _, _, _ in b.requests] == ["PUT", "GET", "POST"]


def test_a_broker_refusal_or_absence_is_named(tmp_path: Path) -> None:
    pacts = [(_pact(tmp_path, "orders", "catalog"), v("orders", "", "catalog", "p1", "x"))]
    with Broker() as b:
        [error] = publish(b.url, [(pacts[0][0], v("orders", "c1", "catalog", "", "x"))])
        assert error.startswith("publishing orders -> catalog (orders-catalog.json): POST ")
        assert "400" in error
        url = b.url
    [error] = publish(url, pacts)
    assert error.startswith("publishing orders -> catalog (orders-catalog.json): PUT ")


def test_can_i_deploy_asks_the_broker_when_one_is_configured(
    broker: Broker, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PACT_BROKER_BASE_URL", broker.url)
    assert main(["can-i-deploy", "orders", "--version", "a1", "--to-environment", "prod"]) == 0
    _, path, _, _ = broker.requests[-1]
    assert path == "/can-i-deploy?pacticipant=orders&version=a1&environment=prod"
    broker.deployable = False
    assert main(["can-i-deploy", "orders", "--version", "a1"]) == 1
    assert "orders | a1" in capsys.readouterr().out.replace("  ", "")
    answer = broker_can_i_deploy(broker.url, "orders", "a1")
    assert answer.rows == [("orders", "a1", "catalog", "a1", "false")]
    monkeypatch.setenv("PACT_BROKER_BASE_URL", "http://127.0.0.1:9")
    assert main(["can-i-deploy", "orders", "--version", "a1"]) == 2
