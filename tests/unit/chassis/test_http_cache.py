"""chassis.http_cache: entity tags, the 304 rules of RFC 9110, and the Flask / aiohttp glue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from flask import Flask, Response, jsonify

from chassis import aiohttp as aio_glue
from chassis import flask as flask_glue
from chassis.http_cache import (
    ANY,
    MAX_AGE_LIMIT,
    CachePolicy,
    EntityTag,
    check_max_age,
    http_date,
    is_not_modified,
    not_modified_headers,
    parse_entity_tags,
    parse_http_date,
    representation_etag,
    validator_headers,
    version_etag,
)

# --- entity tags --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"abc"', (EntityTag("abc"),)),
        ('W/"abc"', (EntityTag("abc", weak=True),)),
        ('""', (EntityTag(""),)),
        ('"a", W/"b" ,"c"', (EntityTag("a"), EntityTag("b", True), EntityTag("c"))),
        (' , "a",, ,"b" ,', (EntityTag("a"), EntityTag("b"))),  # empty elements allowed
        ('"a,b"', (EntityTag("a,b"),)),  # a comma inside a tag is part of it
        ('"caf\xe9"', (EntityTag("caf\xe9"),)),  # obs-text
        ("*", ANY),
        ("  *\t", ANY),
        ("", ()),
    ],
)
def test_parse_entity_tags(value: str, expected: Any) -> None:
    assert parse_entity_tags(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "abc",  # unquoted
        '"abc',  # unterminated
        'w/"abc"',  # the weak prefix is case-sensitive
        'W/ "abc"',
        '"a" "b"',  # no comma
        '"a"x',
        '"a b"',  # space is not an etagc
        '"a\x7fb"',
        '*, "a"',  # "*" is the whole field or nothing
        '"' + "a" * 9000 + '"',  # too long to parse at all
    ],
)
def test_malformed_tag_fields_parse_to_none(value: str) -> None:
    assert parse_entity_tags(value) is None
    assert parse_entity_tags(None) is None


def test_tag_formatting_and_comparison() -> None:
    strong, weak = EntityTag("v3"), EntityTag("v3", weak=True)
    assert str(strong) == '"v3"' and str(weak) == 'W/"v3"'
    assert strong.weak_match(weak) and weak.weak_match(strong) and weak.weak_match(weak)
    assert strong.strong_match(EntityTag("v3"))
    assert not strong.strong_match(weak) and not weak.strong_match(weak)
    assert not strong.weak_match(EntityTag("v4"))
    with pytest.raises(ValueError):
        EntityTag('a"b')


def test_version_and_representation_tags() -> None:
    assert version_etag(7) == EntityTag("v7")
    tag = representation_etag(b'{"a":1}')
    assert not tag.weak and tag == representation_etag(b'{"a":1}')
    assert tag != representation_etag(b'{"a":2}')
    assert parse_entity_tags(str(tag)) == (tag,)  # the tag round-trips as a header


# --- dates and policy ---------------------------------------------------------------------

MOMENT = datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC)


def test_http_dates() -> None:
    assert http_date(MOMENT) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert http_date(MOMENT.replace(tzinfo=None, microsecond=5)) == http_date(MOMENT)
    assert http_date(MOMENT.astimezone(timezone_plus_2())) == http_date(MOMENT)
    for text in (
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850
        "Sun Nov  6 08:49:37 1994",  # obsolete asctime
    ):
        assert parse_http_date(text) == MOMENT, text
    for bad in ("", "yesterday", "Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994", "9" * 100):
        assert parse_http_date(bad) is None, bad


def timezone_plus_2() -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=2))


def test_cache_policy_header_and_bounds() -> None:
    assert CachePolicy().header == "private, no-cache"  # the safe default
    assert CachePolicy(60, public=True).header == "public, max-age=60"
    assert CachePolicy(0, public=True).header == "public, no-cache"
    assert CachePolicy(30).header == "private, max-age=30"
    for bad in (-1, MAX_AGE_LIMIT + 1):
        with pytest.raises(ValueError):
            CachePolicy(bad)
        assert check_max_age(bad)
    assert check_max_age(0) is None and check_max_age(MAX_AGE_LIMIT) is None


def test_validator_headers_and_what_a_304_keeps() -> None:
    headers = validator_headers(CachePolicy(5, public=True), EntityTag("x"), MOMENT)
    assert headers == {
        "Cache-Control": "public, max-age=5",
        "ETag": '"x"',
        "Last-Modified": "Sun, 06 Nov 1994 08:49:37 GMT",
    }
    assert validator_headers(CachePolicy()) == {"Cache-Control": "private, no-cache"}
    full = {**headers, "Content-Type": "application/json", "Content-Length": "9", "Vary": "A"}
    kept = {"Cache-Control": "public, max-age=5", "ETag": '"x"', "Vary": "A"}
    assert not_modified_headers(full) == kept


# --- the 304 rules ------------------------------------------------------------------------

TAG = EntityTag("v2")


def nm(method: str = "GET", **kwargs: Any) -> bool:
    kwargs.setdefault("etag", TAG)
    kwargs.setdefault("last_modified", MOMENT)
    return is_not_modified(method, **kwargs)


@pytest.mark.parametrize(
    "header",
    ['"v2"', 'W/"v2"', '"v1", "v2"', '"v1", W/"v2"', "*", ' "v9" , "v2" '],
)
def test_if_none_match_that_matches_is_304(header: str) -> None:
    assert nm(if_none_match=[header])
    assert nm("HEAD", if_none_match=[header])


def test_if_none_match_over_several_header_lines() -> None:
    assert nm(if_none_match=['"v1"', '"v2"'])
    assert not nm(if_none_match=['"v1"', '"v3"'])


@pytest.mark.parametrize("header", ['"v1"', 'W/"v1"', '"V2"', "v2", '"v2" junk', ""])
def test_if_none_match_that_does_not_match_is_200(header: str) -> None:
    assert not nm(if_none_match=[header])


def test_a_weak_current_tag_also_matches_weakly() -> None:
    assert nm(if_none_match=['"v2"'], etag=EntityTag("v2", weak=True))


def test_only_get_and_head_are_304() -> None:
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert not nm(method, if_none_match=["*"])


def test_no_validators_no_304() -> None:
    assert not nm()
    assert not nm(if_none_match=['"v2"'], etag=None)
    assert nm(if_none_match=["*"], etag=None)  # the representation exists


def test_if_modified_since() -> None:
    now = MOMENT + timedelta(days=1)
    same, later = http_date(MOMENT), http_date(MOMENT + timedelta(seconds=1))
    earlier = http_date(MOMENT - timedelta(seconds=1))
    assert nm(if_modified_since=[same], now=now)
    assert nm(if_modified_since=[later], now=now)
    assert not nm(if_modified_since=[earlier], now=now)
    # second precision: a change within the same second as the date is not "modified since"
    assert nm(if_modified_since=[same], last_modified=MOMENT.replace(microsecond=900), now=now)
    # naive timestamps (SQLite) are UTC
    assert nm(if_modified_since=[same], last_modified=MOMENT.replace(tzinfo=None), now=now)


def test_if_modified_since_is_ignored_when_it_must_be() -> None:
    now = MOMENT + timedelta(days=1)
    same = http_date(MOMENT)
    assert not nm(if_modified_since=["not a date"], now=now)
    assert not nm(if_modified_since=[same, same], now=now)  # more than one member
    assert not nm(if_modified_since=[same], last_modified=None, now=now)
    assert not nm(if_modified_since=[same], now=MOMENT - timedelta(days=1))  # a future date
    assert not nm("POST", if_modified_since=[same], now=now)
    # If-None-Match present: the date is not consulted at all (RFC 9110 13.2.2 step 4)
    assert not nm(if_none_match=['"v1"'], if_modified_since=[same], now=now)
    assert not nm(if_none_match=["garbage"], if_modified_since=[same], now=now)


# --- Flask glue ---------------------------------------------------------------------------

POLICY = CachePolicy(60, public=True)


def _flask_app() -> Flask:
    app = Flask("t")
    flask_glue.install(app, "t")

    @app.get("/versioned")
    def versioned() -> Response:
        resp = jsonify({"v": 2})
        return flask_glue.cacheable(resp, POLICY, etag=TAG, last_modified=MOMENT)

    @app.get("/hashed")
    def hashed() -> Response:
        return flask_glue.cacheable(jsonify({"v": 2}), CachePolicy())

    @app.get("/created")
    def created() -> Response:
        resp = jsonify({})
        resp.status_code = 201
        return flask_glue.cacheable(resp, POLICY, etag=TAG)

    return app


def test_flask_200_carries_validators_and_304_has_no_body() -> None:
    client = _flask_app().test_client()
    ok = client.get("/versioned")
    assert ok.status_code == 200 and ok.get_json() == {"v": 2}
    assert ok.headers["ETag"] == '"v2"'
    assert ok.headers["Cache-Control"] == "public, max-age=60"
    assert ok.headers["Last-Modified"] == "Sun, 06 Nov 1994 08:49:37 GMT"
    for method in (client.get, client.head):
        nm = method("/versioned", headers={"If-None-Match": 'W/"v1", W/"v2"'})
        assert nm.status_code == 304 and nm.data == b""
        assert nm.headers["ETag"] == '"v2"' and nm.headers["Cache-Control"] == POLICY.header
        assert "Content-Type" not in nm.headers and "Last-Modified" not in nm.headers
        assert nm.headers["X-Request-ID"]  # the chassis's after_request still runs
    by_date = client.get("/versioned", headers={"If-Modified-Since": ok.headers["Last-Modified"]})
    assert by_date.status_code == 304
    assert client.get("/versioned", headers={"If-None-Match": '"v1"'}).status_code == 200


def test_flask_tag_from_the_body_and_other_statuses_untouched() -> None:
    client = _flask_app().test_client()
    ok = client.get("/hashed")
    assert ok.headers["ETag"] == str(representation_etag(ok.data))
    assert ok.headers["Cache-Control"] == "private, no-cache" and "Last-Modified" not in ok.headers
    assert client.get("/hashed", headers={"If-None-Match": ok.headers["ETag"]}).status_code == 304
    created = client.get("/created", headers={"If-None-Match": "*"})
    assert created.status_code == 201 and "Cache-Control" not in created.headers


# --- aiohttp glue -------------------------------------------------------------------------


def _aiohttp_app() -> web.Application:
    app = web.Application()
    aio_glue.install(app, "t")

    async def versioned(request: web.Request) -> web.Response:
        resp = web.json_response({"v": 2})
        return aio_glue.cacheable(request, resp, POLICY, etag=TAG, last_modified=MOMENT)

    async def hashed(request: web.Request) -> web.Response:
        return aio_glue.cacheable(request, web.json_response({"v": 2}), CachePolicy())

    async def missing(request: web.Request) -> web.Response:
        return aio_glue.cacheable(request, web.json_response({}, status=404), POLICY)

    app.router.add_get("/versioned", versioned)
    app.router.add_get("/hashed", hashed)
    app.router.add_get("/missing", missing)
    return app


async def test_aiohttp_200_carries_validators_and_304_has_no_body(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_aiohttp_app())
    ok = await client.get("/versioned")
    assert ok.status == 200 and await ok.json() == {"v": 2}
    assert ok.headers["ETag"] == '"v2"' and ok.headers["Cache-Control"] == POLICY.header
    assert ok.headers["Last-Modified"] == "Sun, 06 Nov 1994 08:49:37 GMT"
    for method in (client.get, client.head):
        nm = await method(
            "/versioned", headers=[("If-None-Match", '"v1"'), ("If-None-Match", 'W/"v2"')]
        )
        assert nm.status == 304 and await nm.read() == b""
        assert nm.headers["ETag"] == '"v2"' and nm.headers["Cache-Control"] == POLICY.header
        assert "Content-Type" not in nm.headers and "Last-Modified" not in nm.headers
        assert nm.headers["X-Request-ID"]
    by_date = await client.get(
        "/versioned", headers={"If-Modified-Since": ok.headers["Last-Modified"]}
    )
    assert by_date.status == 304
    stale = await client.get("/versioned", headers={"If-None-Match": '"v1"'})
    assert stale.status == 200 and await stale.json() == {"v": 2}


async def test_aiohttp_tag_from_the_body_and_other_statuses_untouched(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_aiohttp_app())
    ok = await client.get("/hashed")
    assert ok.headers["ETag"] == str(representation_etag(await ok.read()))
    again = await client.get("/hashed", headers={"If-None-Match": ok.headers["ETag"]})
    assert again.status == 304
    missing = await client.get("/missing", headers={"If-None-Match": "*"})
    assert missing.status == 404 and "ETag" not in missing.headers
