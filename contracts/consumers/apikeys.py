"""The gateway as a consumer of identity's API-key endpoints (ADR 0036): its real
`gateway.apikeys.ApiKeyCache`, over the gateway's own HTTP/1.1 transport, reads the key feed
(`GET /internal/v1/api-keys`) from a Pact mock server, checks a key against it, and exchanges
the key for an access token (`POST /internal/v1/api-keys/token`).

Labelled `api-keys` and `api-keys:token`; merged into the pact the gateway's own consumer test
wrote earlier in the run (`contracts.runner.CONSUMERS` order). The key, its digest and the
internal secret are fixed so the pact's content hash is the same every run; the provider
state makes identity hold exactly that key.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from pact import Pact, match

from ..boundaries import API_KEYS, API_KEYS_TOKEN, ISSUER
from . import ConsumerFailed, label

__all__ = ["INTERNAL_SECRET", "KEY", "KEY_ID", "KEY_SECRET", "run"]

FEED_PATH = "/internal/v1/api-keys"
KEY_ID = "0123456789abcdef"
KEY_SECRET = "contract-key-secret-" + "s" * 23  # 43 characters, as generated ones
KEY = f"pk_{KEY_ID}_{KEY_SECRET}"
INTERNAL_SECRET = "contract-internal-secret-" + "i" * 16
STATE = "an API key exists"


def _define(pact: Pact) -> None:
    digest = hashlib.sha256(KEY_SECRET.encode()).hexdigest()
    feed = pact.upon_receiving("the API keys the gateway caches")
    label(feed, API_KEYS)
    feed.given(STATE)
    feed.with_request("GET", FEED_PATH)
    feed.with_header("X-Internal-Token", INTERNAL_SECRET)
    feed.will_respond_with(200).with_body(
        {
            "keys": match.each_like(
                {
                    "id": match.regex(KEY_ID, regex=r"^[0-9a-f]{16}$"),
                    "hash": match.regex(digest, regex=r"^[0-9a-f]{64}$"),
                    "scopes": match.each_like("profile"),
                    "class": match.str("authenticated"),
                    "subject": match.str("user-1"),
                    "client_id": match.str(f"apikey:{KEY_ID}"),
                    "version": match.int(1),
                    "revoked": match.bool(False),
                }
            ),
            "generated_at": match.number(1.0),
        },
        content_type="application/json",
    )
    token = pact.upon_receiving("an API key exchanged for an access token")
    label(token, API_KEYS_TOKEN)
    token.given(STATE)
    token.with_request("POST", FEED_PATH + "/token")
    token.with_header("X-Internal-Token", INTERNAL_SECRET)
    token.with_header("X-API-Key", KEY)
    token.will_respond_with(200).with_body(
        {
            "access_token": match.regex("eyJ.example.token", regex=r"^\S+\.\S+\.\S+$"),
            "token_type": "Bearer",
            "expires_in": match.int(300),
            "version": match.int(1),
        },
        content_type="application/json",
    )


async def _gateway_uses(url: str) -> None:
    from gateway.apikeys import ApiKeyCache, ApiKeySettings
    from gateway.app import make_transport

    transport = make_transport("http1", {})
    try:
        cache = ApiKeyCache(ApiKeySettings(url=url, secret=INTERNAL_SECRET), transport)
        if await cache.refresh() != 1:
            raise ConsumerFailed(f"gateway -> {ISSUER}: the key feed gave no live key")
        entry = cache.check(KEY)
        await cache.exchange(entry, KEY)
    finally:
        await transport.close()


def run(pact_dir: Path) -> list[Path]:
    pact = Pact("gateway", ISSUER).with_specification("V4")
    _define(pact)
    with pact.serve(addr="127.0.0.1", raises=False, verbose=False) as server:
        try:
            asyncio.run(_gateway_uses(str(server.url).rstrip("/") + FEED_PATH))
        except ConsumerFailed:
            raise
        except Exception as exc:
            failed = f"gateway -> {ISSUER}: API keys: {type(exc).__name__}: {exc}"
            raise ConsumerFailed(failed) from None
        if not server.matched:
            raise ConsumerFailed("; ".join(f"gateway -> {ISSUER}: {m}" for m in server.mismatches))
    pact.write_file(pact_dir, overwrite=False)  # into the gateway's own pact with identity
    return [pact_dir / f"gateway-{ISSUER}.json"]
