"""API keys (`X-API-Key: pk_<id>_<secret>`, ADR 0036): checked against a cache, never a call.

The cache holds every key identity has (`GET /internal/v1/api-keys`: id, SHA-256 digest of the
secret, scopes, rate-limit class, owner, version, revoked) and is refreshed every
`GATEWAY_API_KEYS_REFRESH` seconds (5). A request's key is checked here: its id found, its
secret's digest compared in constant time, the route's scopes against the key's. Unknown id,
wrong secret, revoked key: the same 401 as a bad token, so nothing tells whether an id exists.

Revocation bound: a revoked or rotated key stops working once a refresh has seen it, at most
`refresh + timeout` seconds later (7 s by default). When refreshes keep failing the cache is
trusted for `GATEWAY_API_KEYS_MAX_STALE` seconds (30) after the last good one; past that key
requests answer 503 until identity answers again, so no revoked key outlives that bound.

Upstream services verify JWTs, not keys: the first request of a key exchanges it at identity
(`POST /internal/v1/api-keys/token`) for a short-lived access token (`sub` the owner, the
key's scopes), kept until shortly before it expires and forwarded as `Authorization: Bearer`;
the key itself is never forwarded. One exchange per key per token lifetime, shared by
concurrent requests; a new version of the key (rotation, revocation) drops its token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson

from chassis import Claims, ConfigError, TokenError, from_env
from chassis.settings import http_url, positive, secret

from .transport import OutboundRequest, Transport, split_url

__all__ = [
    "API_KEY_HEADER",
    "ApiKeyCache",
    "ApiKeySettings",
    "KeyClaims",
    "KeyEntry",
    "KeysNotLoaded",
    "api_keys_for",
]

log = logging.getLogger("portico.gateway.apikeys")

API_KEY_HEADER = "X-API-Key"
# The gateway's calls to identity for keys, each a boundary with a contract (contracts/).
IDENTITY_CALLS = ("api-keys", "api-keys:token")
INTERNAL_HEADER = "X-Internal-Token"
POOL = "_control"  # the gateway's own calls (as JWKS and health probes)
MAX_KEY_LENGTH = 128  # a key is 63 characters
TOKEN_MARGIN = 30.0  # seconds before its expiry a key's token is exchanged again
_RESOURCE = "api_keys"


def _optional_url(value: str) -> str | None:
    return None if not value else http_url(value)


@dataclass(frozen=True)
class ApiKeySettings:
    """GATEWAY_API_KEYS_*: where identity's key feed is, the shared secret, the bounds.

    `url` "" (the default) turns API keys off: routes then run the token-only auth policy.
    """

    url: str = field(default="", metadata={"check": _optional_url})
    secret: str = secret("")
    refresh: float = field(default=5.0, metadata={"check": positive})
    timeout: float = field(default=2.0, metadata={"check": positive})
    max_stale: float = field(default=30.0, metadata={"check": positive})

    def problems(self) -> list[str]:
        found = []
        if self.url and len(self.secret) < 32:
            found.append("GATEWAY_API_KEYS_SECRET must be at least 32 characters")
        if self.timeout >= self.refresh:
            found.append("GATEWAY_API_KEYS_TIMEOUT must be less than GATEWAY_API_KEYS_REFRESH")
        if self.max_stale <= self.refresh + self.timeout:
            found.append(
                "GATEWAY_API_KEYS_MAX_STALE must exceed GATEWAY_API_KEYS_REFRESH + "
                "GATEWAY_API_KEYS_TIMEOUT"
            )
        return found

    @property
    def token_url(self) -> str:
        return self.url.rstrip("/") + "/token"


@dataclass(frozen=True)
class KeyClaims(Claims):
    """The claims of a request made with an API key: the owner as subject, the key's scopes,
    and the key's own rate-limit class (read by `gateway.ratelimit`)."""

    rate_class: str = "authenticated"
    key_id: str = ""


@dataclass(frozen=True, slots=True)
class KeyEntry:
    key_id: str
    digest: bytes  # sha256 of the secret
    scopes: frozenset[str]
    version: int
    claims: KeyClaims


class KeysNotLoaded(TokenError):
    """No fresh copy of the keys (identity unreachable past the bound): 503, as an unreachable
    JWKS is for tokens."""

    status = 503
    error = None


_INVALID = "the API key is invalid"


def _entry(doc: dict[str, Any]) -> KeyEntry:
    scopes = frozenset(str(s) for s in doc["scopes"])
    key_id = str(doc["id"])
    claims = KeyClaims(
        raw={
            "sub": doc["subject"],
            "client_id": doc["client_id"],
            "scope": " ".join(scopes),
            "api_key": key_id,
        },
        subject=str(doc["subject"]),
        client_id=str(doc["client_id"]),
        scopes=scopes,
        expires_at=float("inf"),
        rate_class=str(doc["class"]),
        key_id=key_id,
    )
    return KeyEntry(key_id, bytes.fromhex(doc["hash"]), scopes, int(doc["version"]), claims)


def parse(value: str) -> tuple[str, str] | None:
    """(id, secret) of something shaped like a key."""
    if len(value) > MAX_KEY_LENGTH:
        return None
    prefix, _, rest = value.partition("_")
    key_id, _, secret_ = rest.partition("_")
    if prefix != "pk" or not key_id or not secret_:
        return None
    return key_id, secret_


class ApiKeyCache:
    """Identity's keys, refreshed in the background; tokens exchanged for keys, per key."""

    def __init__(
        self,
        settings: ApiKeySettings,
        transport: Transport | None = None,
        *,
        fetch_keys: Callable[[], Any] | None = None,
        exchange: Callable[[str], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self._fetch_keys = fetch_keys or self._fetch_keys_http
        self._exchange = exchange or self._exchange_http
        self.clock = clock
        self.entries: dict[str, KeyEntry] = {}
        self.loaded_at: float | None = None  # clock() of the last good refresh
        self.tokens: dict[str, tuple[str, int, float]] = {}  # id -> token, version, renew at
        self._pending: dict[str, asyncio.Task[str]] = {}
        self._task: asyncio.Task[None] | None = None
        self._users = 0

    # --- the request path -----------------------------------------------------------------

    def check(self, value: str) -> KeyEntry:
        """The key's entry, or TokenError (401; 503 when the cache is past its bound)."""
        loaded = self.loaded_at
        if loaded is None or self.clock() - loaded > self.settings.max_stale:
            raise KeysNotLoaded("API keys cannot be checked right now")
        parsed = parse(value)
        entry = self.entries.get(parsed[0]) if parsed is not None else None
        digest = hashlib.sha256(parsed[1].encode()).digest() if parsed is not None else b""
        if entry is None or not hmac.compare_digest(entry.digest, digest):
            raise TokenError(_INVALID)
        return entry

    def token_for(self, entry: KeyEntry) -> str | None:
        """The key's access token when one is held and not due for renewal."""
        held = self.tokens.get(entry.key_id)
        if held is None or held[1] != entry.version or held[2] <= self.clock():
            return None
        return held[0]

    async def exchange(self, entry: KeyEntry, value: str) -> str:
        """A token for the key from identity. One call per key at a time, in a task of its
        own: concurrent requests of the key share it, and a caller that goes away (its
        request cancelled) does not cancel it for the others."""
        task = self._pending.get(entry.key_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._exchange_once(entry, value))
            self._pending[entry.key_id] = task
            task.add_done_callback(partial(self._exchanged, entry.key_id))
        return await asyncio.shield(task)

    async def _exchange_once(self, entry: KeyEntry, value: str) -> str:
        token, ttl = await self._exchange(value)
        renew_at = self.clock() + max(ttl - TOKEN_MARGIN, ttl / 2)
        if self.entries.get(entry.key_id) is entry:  # not rotated or revoked meanwhile
            self.tokens[entry.key_id] = (token, entry.version, renew_at)
        return token

    def _exchanged(self, key_id: str, task: asyncio.Task[str]) -> None:
        if self._pending.get(key_id) is task:
            del self._pending[key_id]
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter re-raises it, or none is left

    # --- the refresher --------------------------------------------------------------------

    async def refresh(self) -> int:
        """Replace the keys with identity's current ones; returns how many are live."""
        docs = await self._fetch_keys()
        entries = {}
        for doc in docs:
            if not doc.get("revoked"):
                entry = _entry(doc)
                entries[entry.key_id] = entry
        for key_id, (_token, version, _at) in list(self.tokens.items()):
            now = entries.get(key_id)
            if now is None or now.version != version:
                del self.tokens[key_id]
        self.entries = entries
        self.loaded_at = self.clock()
        return len(entries)

    async def _run(self, started: float) -> None:
        """A refresh starts every `refresh` seconds and takes at most `timeout`: a key revoked
        at T is gone by T + refresh + timeout, whatever the fetch in flight at T read.
        `started`: when the first one (`start`'s) began."""
        failing = False
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.0, started + self.settings.refresh - loop.time()))
            started = loop.time()
            try:
                await asyncio.wait_for(self.refresh(), self.settings.timeout)
                if failing:
                    log.info("API keys refreshed again", extra={"keys": len(self.entries)})
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    log.warning("API keys could not be refreshed", extra={"error": str(exc)})
                failing = True

    async def start(self) -> None:
        """Load once (bounded by the timeout), then refresh in the background. Counted: the
        policies of every config that uses the cache start it, the last `stop` ends it."""
        self._users += 1
        if self._task is not None:
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._task = loop.create_task(self._run(started), name="api-keys")
        with contextlib.suppress(Exception):  # logged by the next refresh if it fails too
            await asyncio.wait_for(self.refresh(), self.settings.timeout)

    async def stop(self) -> None:
        self._users -= 1
        if self._users > 0 or self._task is None:
            return
        task, self._task = self._task, None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def stats(self) -> dict[str, Any]:
        age = None if self.loaded_at is None else round(self.clock() - self.loaded_at, 1)
        return {"keys": len(self.entries), "tokens": len(self.tokens), "age": age}

    # --- identity over HTTP ---------------------------------------------------------------

    async def _call(self, method: str, url: str, extra: dict[str, str]) -> tuple[int, Any]:
        """(status, the JSON body or None) of a call to identity."""
        assert self.transport is not None
        origin, target = split_url(url)
        request = OutboundRequest(
            pool=POOL,
            origin=origin,
            method=method,
            target=target,
            headers={
                "Accept": "application/json",
                INTERNAL_HEADER: self.settings.secret,
                **extra,
            },
            timeout=self.settings.timeout,
        )
        response = await self.transport.send(request)
        try:
            body = await response.read()
        finally:
            response.close()
        try:
            return response.status, orjson.loads(body)
        except orjson.JSONDecodeError:
            return response.status, None

    async def _fetch_keys_http(self) -> list[dict[str, Any]]:
        status, doc = await self._call("GET", self.settings.url, {})
        if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise KeysNotLoaded(f"the key feed answered {status} without a keys list")
        return doc["keys"]  # type: ignore[no-any-return]

    async def _exchange_http(self, value: str) -> tuple[str, float]:
        try:
            status, doc = await self._call("POST", self.settings.token_url, {API_KEY_HEADER: value})
        except Exception as exc:  # transport failures: the key may be fine, we cannot tell
            raise KeysNotLoaded(f"identity could not exchange the key: {exc}") from None
        if status == 401:  # revoked since the last refresh, or the owner lost every scope
            raise TokenError(_INVALID)
        if status != 200 or not isinstance(doc, dict) or "access_token" not in doc:
            raise KeysNotLoaded(f"identity answered {status} to the key exchange")
        return str(doc["access_token"]), float(doc["expires_in"])


def api_keys_for(context: Any) -> ApiKeyCache | None:
    """The gateway's one key cache (kept across config reloads in `context.resources`), or
    None when GATEWAY_API_KEYS_URL is unset. ConfigError names bad settings at start."""
    resources = getattr(context, "resources", None)
    if resources is not None and _RESOURCE in resources:
        return resources[_RESOURCE]  # type: ignore[no-any-return]
    settings = from_env(ApiKeySettings, "GATEWAY_API_KEYS_")
    if not settings.url:
        return None
    problems = settings.problems()
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    cache = ApiKeyCache(settings, context.transport)
    if resources is not None:
        resources[_RESOURCE] = cache
    return cache
