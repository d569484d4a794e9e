"""The framework glue turns every failure into problem+json and never leaks a traceback."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient
from flask import Flask

from chassis import Problem
from chassis import aiohttp as aio_glue
from chassis import flask as flask_glue
from tests.support.tokens import TestIssuer


def _flask_app(issuer: TestIssuer) -> Flask:
    app = Flask("t")
    flask_glue.install(app, "t", ready_checks={"db": lambda: None}, verifier=issuer.verifier())

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("secret internals")

    @app.get("/gone")
    def gone() -> str:
        raise Problem(410, "it left")

    @app.get("/scoped")
    @flask_glue.require_scopes("a:read")
    def scoped() -> dict[str, str]:
        return {"sub": flask_glue.current_claims().subject}

    return app


def test_flask_errors_are_problems() -> None:
    issuer = TestIssuer()
    client = _flask_app(issuer).test_client()
    boom = client.get("/boom", headers={"X-Request-ID": "r1"})
    assert boom.status_code == 500
    assert boom.mimetype == "application/problem+json"
    assert "secret internals" not in boom.get_data(as_text=True)
    assert "Traceback" not in boom.get_data(as_text=True)
    assert boom.json["correlation_id"] == "r1"
    assert boom.headers["X-Request-ID"] == "r1"
    assert client.get("/gone").json["detail"] == "it left"
    missing = client.get("/nowhere")
    assert (missing.status_code, missing.mimetype) == (404, "application/problem+json")
    wrong = client.post("/gone")
    assert wrong.status_code == 405
    assert "GET" in wrong.headers["Allow"]
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").json["checks"] == {"db": "ok"}
    assert b"http_requests_total" in client.get("/metrics").data


def test_flask_scopes() -> None:
    issuer = TestIssuer()
    client = _flask_app(issuer).test_client()
    assert client.get("/scoped").status_code == 401
    denied = client.get("/scoped", headers=issuer.auth(["b:read"]))
    assert denied.status_code == 403
    assert 'error="insufficient_scope"' in denied.headers["WWW-Authenticate"]
    ok = client.get("/scoped", headers=issuer.auth(["a:read"], sub="u1"))
    assert ok.json == {"sub": "u1"}


async def test_aiohttp_errors_are_problems(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    issuer = TestIssuer()
    app = web.Application()

    async def failing(_request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    async def not_ready() -> None:
        raise ConnectionError

    @aio_glue.require_scopes("a:read")
    async def scoped(request: web.Request) -> web.Response:
        return web.json_response({"sub": request[aio_glue.CLAIMS].subject})

    app.router.add_get("/boom", failing)
    app.router.add_get("/scoped", scoped)
    aio_glue.install(app, "t", ready_checks={"db": not_ready}, verifier=issuer.async_verifier())
    client: TestClient = await aiohttp_client(app)

    boom = await client.get("/boom", headers={"X-Request-ID": "r2"})
    assert boom.status == 500
    assert boom.content_type == "application/problem+json"
    text = await boom.text()
    assert "secret internals" not in text
    assert boom.headers["X-Request-ID"] == "r2"
    missing = await client.get("/nowhere")
    assert (missing.status, missing.content_type) == (404, "application/problem+json")
    wrong = await client.post("/boom")
    assert wrong.status == 405
    assert "GET" in wrong.headers["Allow"]
    ready = await client.get("/health/ready")
    assert ready.status == 503
    assert (await ready.json())["checks"]["db"].startswith("failed")
    assert (await client.get("/scoped")).status == 401
    ok = await client.get("/scoped", headers=issuer.auth(["a:read"], sub="u2"))
    assert await ok.json() == {"sub": "u2"}


def test_flask_json_responses_keep_flasks_document() -> None:
    import datetime
    import decimal
    import json

    from flask import jsonify

    doc = {
        "b": 1,
        "a": "é",
        "when": datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
        "price": decimal.Decimal("1.50"),
        "none": None,
        "list": [1.5, True],
    }
    ours, plain = Flask("ours"), Flask("plain")
    flask_glue.install(ours, "svc")
    with ours.app_context():
        body = jsonify(doc).get_data()
        big = jsonify({"big": 2**70}).get_data()  # beyond orjson: Flask's encoder answers
    with plain.app_context():
        expected = jsonify(doc).get_data()
    assert json.loads(body) == json.loads(expected)  # dates as HTTP dates, Decimal as str
    assert body.endswith(b"}\n") and body.index(b'"a"') < body.index(b'"b"')  # sorted, compact
    assert b'"when":"Wed, 01 Jan 2025 00:00:00 GMT"' in body
    assert b", " not in body.replace(b"Wed, 01", b"")  # compact separators
    assert json.loads(big) == {"big": 2**70}
