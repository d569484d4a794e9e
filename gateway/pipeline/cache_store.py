"""Where the response cache (`gateway.pipeline.cache`) keeps its entries.

Two stores with one interface (`get`, `put`, `purge`):

- `MemoryStore` (the default): one process's LRU with a byte budget; `get` answers at once,
  so a hit never leaves the chain's inline runner.
- `RedisStore` (when GATEWAY_REDIS_URL is set): shared by every gateway process, on the
  gateway's own minimal Redis client (`gateway.ratelimit.RedisClient`, a connection of its
  own: a large entry must not delay a rate-limit decision behind it). An entry is one string
  with a time to live; every entry's key is also in the set of its group (route + path), and
  every group in the set of its route, so a purge is one Lua call.

Entries are grouped by decoded path (query strings aside) and listed by route: a purge names a
route and a path (every entry of that path goes, whatever its query or consumer), or a route
alone (all of its entries).

A store that fails raises `gateway.ratelimit.RedisError`; the cache then bypasses itself
(a cache that is down never fails a request).
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..ratelimit import RedisClient, RedisReplyError, pack_command

__all__ = ["Entry", "MemoryStore", "RedisStore", "decode", "encode"]


@dataclass(slots=True)
class Entry:
    """One stored response: the upstream's status, fields (end-to-end ones, no Date, no
    Content-Length) and body, and what its freshness was computed from (epoch seconds, so
    that processes sharing Redis agree)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    stored: float  # when the response (or its last 304) was received
    lifetime: float  # freshness lifetime, seconds (0: revalidate before every use)
    grace: float = 0.0  # stale-if-error: seconds past expiry it may still be served on error
    initial_age: float = 0.0  # the upstream's own Age when received
    vary: tuple[tuple[str, str], ...] = ()  # the request fields named by Vary, and their values
    etag: str | None = None
    last_modified: str | None = None
    keep: float = 0.0  # how long the store keeps it past `stored` (seconds)
    size: int = field(default=0, compare=False)

    def age(self, now: float) -> float:
        return max(0.0, now - self.stored) + self.initial_age

    def fresh(self, now: float) -> bool:
        return self.age(now) < self.lifetime

    def usable_stale(self, now: float) -> bool:
        """Within its stale-if-error grace."""
        return self.age(now) < self.lifetime + self.grace


_HEAD = struct.Struct("!I")


def encode(entry: Entry) -> bytes:
    meta = orjson.dumps(
        [
            entry.status,
            entry.headers,
            entry.stored,
            entry.lifetime,
            entry.grace,
            entry.initial_age,
            entry.vary,
            entry.etag,
            entry.last_modified,
            entry.keep,
        ]
    )
    return _HEAD.pack(len(meta)) + meta + entry.body


def decode(raw: bytes) -> Entry:
    (n,) = _HEAD.unpack_from(raw)
    status, headers, stored, lifetime, grace, age, vary, etag, modified, keep = orjson.loads(
        raw[4 : 4 + n]
    )
    return Entry(
        status,
        [(k, v) for k, v in headers],
        raw[4 + n :],
        stored,
        lifetime,
        grace,
        age,
        tuple((k, v) for k, v in vary),
        etag,
        modified,
        keep,
        len(raw),
    )


def entry_size(entry: Entry) -> int:
    return len(entry.body) + sum(len(k) + len(v) + 4 for k, v in entry.headers) + 200


class MemoryStore:
    """An LRU of entries within `max_bytes` (bodies and fields counted), one per process."""

    sync = True

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._entries: OrderedDict[str, tuple[Entry, str, str]] = OrderedDict()
        self._groups: dict[str, set[str]] = {}  # path -> keys
        self._routes: dict[str, set[str]] = {}  # route -> paths it stored entries under

    def __len__(self) -> int:
        return len(self._entries)

    def get_now(self, key: str) -> Entry | None:
        found = self._entries.get(key)
        if found is None:
            return None
        entry = found[0]
        if time.time() - entry.stored > entry.keep:
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put_now(self, key: str, route: str, path: str, entry: Entry) -> None:
        entry.size = entry_size(entry)
        if entry.size > self.max_bytes:
            return
        if key in self._entries:
            self._remove(key)
        self._entries[key] = (entry, route, path)
        self.used += entry.size
        self._groups.setdefault(path, set()).add(key)
        self._routes.setdefault(route, set()).add(path)
        while self.used > self.max_bytes and self._entries:
            self._remove(next(iter(self._entries)))  # the least recently used

    def _remove(self, key: str) -> None:
        entry, route, path = self._entries.pop(key)
        self.used -= entry.size
        keys = self._groups.get(path)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._groups[path]
                paths = self._routes.get(route)
                if paths is not None:
                    paths.discard(path)
                    if not paths:
                        del self._routes[route]

    def purge_now(self, route: str, path: str | None) -> int:
        if path is not None:
            paths = [path]
            known = self._routes.get(route)
            if known is not None:
                known.discard(path)
        else:
            paths = list(self._routes.pop(route, ()))
        gone = 0
        for p in paths:
            for key in list(self._groups.get(p, ())):
                self._remove(key)
                gone += 1
        return gone

    def clear(self) -> None:
        self._entries.clear()
        self._groups.clear()
        self._routes.clear()
        self.used = 0

    # the awaitable interface, for callers that serve both stores
    async def get(self, key: str) -> Entry | None:
        return self.get_now(key)

    async def put(self, key: str, route: str, path: str, entry: Entry) -> None:
        self.put_now(key, route, path, entry)

    async def purge(self, route: str, path: str | None) -> int:
        return self.purge_now(route, path)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


# KEYS: entry, group set, route set; ARGV: value, time to live (ms)
_PUT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
redis.call('SADD', KEYS[3], KEYS[2])
if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[3], ARGV[2]) end
return 1
"""

# KEYS: route set, and a group set or nothing (then every group of the route goes)
_PURGE = """
local groups
if #KEYS > 1 then groups = {KEYS[2]} else groups = redis.call('SMEMBERS', KEYS[1]) end
local gone = 0
for _, g in ipairs(groups) do
  local members = redis.call('SMEMBERS', g)
  for _, k in ipairs(members) do gone = gone + redis.call('DEL', k) end
  redis.call('DEL', g)
  redis.call('SREM', KEYS[1], g)
end
return gone
"""


def _digest(*parts: str) -> str:
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=16).hexdigest()


class RedisStore:
    """Entries in Redis, shared by every gateway process (see the module's docstring)."""

    sync = False

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "portico:cache:",
        timeout: float = 0.05,
        connect_timeout: float = 0.5,
        client: RedisClient | None = None,
    ) -> None:
        self.prefix = prefix
        self.client = client or RedisClient(url, timeout=timeout, connect_timeout=connect_timeout)
        self._put_sha = self.client.register_script(_PUT)
        self._purge_sha = self.client.register_script(_PURGE)

    def entry_key(self, key: str) -> str:
        return f"{self.prefix}e:{_digest(key)}"

    def group_key(self, path: str) -> str:
        return f"{self.prefix}g:{_digest(path)}"

    def route_key(self, route: str) -> str:
        return f"{self.prefix}r:{_digest(route)}"

    async def start(self) -> None:
        await self.client.start(wait=self.client.connect_timeout)

    async def close(self) -> None:
        await self.client.close()

    async def get(self, key: str) -> Entry | None:
        raw = await self.client.call(pack_command("GET", self.entry_key(key)))
        if raw is None:
            return None
        return decode(raw)

    async def _script(self, sha: bytes, *args: str | bytes | int) -> Any:
        payload = pack_command("EVALSHA", sha, *args)
        try:
            return await self.client.call(payload)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            await self.client.call(self.client.script_load_command(sha))
            return await self.client.call(payload)

    async def put(self, key: str, route: str, path: str, entry: Entry) -> None:
        ttl_ms = max(1, int(entry.keep * 1000))
        await self._script(
            self._put_sha,
            3,
            self.entry_key(key),
            self.group_key(path),
            self.route_key(route),
            encode(entry),
            ttl_ms,
        )

    async def purge(self, route: str, path: str | None) -> int:
        if path is None:
            return int(await self._script(self._purge_sha, 1, self.route_key(route)))
        return int(
            await self._script(self._purge_sha, 2, self.route_key(route), self.group_key(path))
        )
