"""HTTP caching for every service, written once: validators, Cache-Control and 304s.

Framework-neutral (strings in, strings out); `chassis.flask.cacheable` and
`chassis.aiohttp.cacheable` are the thin glue a read view calls on its 200 response::

    resp = jsonify(doc)
    return cacheable(resp, policy, etag=version_etag(product.version),
                     last_modified=product.updated_at)

What it implements (RFC 9110 section 8.8, 13.1.2, 13.1.3, 13.2.2, 15.4.5; RFC 9111 5.2):

- `ETag`: strong, from a version the service already keeps (`version_etag`) or from the
  representation's bytes (`representation_etag`). `Last-Modified` when the resource has a
  modification time.
- `If-None-Match` (`*`, a list, several header lines) with the weak comparison: a match on a
  GET or HEAD answers 304 with no body. When it is present `If-Modified-Since` is ignored.
  A malformed `If-None-Match` matches nothing (a full 200, never a wrong 304).
- `If-Modified-Since`: one valid HTTP-date, not in the future, compared at second precision.
- `Cache-Control` from a `CachePolicy`. The default is `private`: a response is shared between
  consumers only when the service says its representation is the same for everyone
  (`public=True`), which RFC 9111 3.5 also requires before a shared cache may store a response
  to a request that carried `Authorization`.
- A 304 carries the headers of RFC 9110 15.4.5 that the 200 would have had (`NOT_MODIFIED_KEEPS`).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Final, Literal

__all__ = [
    "ANY",
    "MAX_AGE_LIMIT",
    "NOT_MODIFIED_KEEPS",
    "CachePolicy",
    "EntityTag",
    "check_max_age",
    "http_date",
    "is_not_modified",
    "not_modified_headers",
    "parse_entity_tags",
    "parse_http_date",
    "representation_etag",
    "validator_headers",
    "version_etag",
]

ANY: Final = "*"
# One year: RFC 9111 5.2.2.1 lets caches cap larger values, and a bounded setting stays sane.
MAX_AGE_LIMIT: Final = 365 * 24 * 3600
# Header values longer than these are not parsed at all (bounded work for any input).
_MAX_TAGS_FIELD = 8192
_MAX_DATE_FIELD = 64
# RFC 9110 15.4.5: what a 304 repeats from the 200 it stands for; no other representation
# metadata (Werkzeug strips Last-Modified from a 304 anyway: both frameworks agree this way).
NOT_MODIFIED_KEEPS: Final = ("Cache-Control", "Content-Location", "Date", "ETag", "Expires", "Vary")


def _etagc(char: str) -> bool:
    """etagc = %x21 / %x23-7E / obs-text: visible ASCII but DQUOTE, or any non-ASCII."""
    return char == "!" or "#" <= char <= "~" or char >= "\x80"


@dataclass(frozen=True, slots=True)
class EntityTag:
    """One entity tag: the opaque value (no quotes) and whether it is weak (`W/`)."""

    opaque: str
    weak: bool = False

    def __post_init__(self) -> None:
        if not all(_etagc(c) for c in self.opaque):
            raise ValueError(f"not an entity-tag value: {self.opaque!r}")

    def __str__(self) -> str:
        return f'{"W/" if self.weak else ""}"{self.opaque}"'

    def weak_match(self, other: EntityTag) -> bool:
        """RFC 9110 13.1.2 weak comparison (If-None-Match): opaque values equal."""
        return self.opaque == other.opaque

    def strong_match(self, other: EntityTag) -> bool:
        """Strong comparison (If-Match, ranges): neither weak, opaque values equal."""
        return not self.weak and not other.weak and self.opaque == other.opaque


def parse_entity_tags(value: str | None) -> tuple[EntityTag, ...] | Literal["*"] | None:
    """`If-None-Match` / `If-Match`: `*`, a tuple of tags, or None when the field is malformed.

    Several header lines are joined with ", " by the caller. Empty list elements are allowed
    (RFC 9110 5.6.1); anything else that is not an entity-tag makes the whole field malformed.
    """
    if value is None or len(value) > _MAX_TAGS_FIELD:
        return None
    if value.strip(" \t") == ANY:
        return ANY
    tags: list[EntityTag] = []
    i, n = 0, len(value)
    while i < n:
        char = value[i]
        if char in " \t,":
            i += 1
            continue
        weak = value.startswith("W/", i)
        if weak:
            i += 2
        if i >= n or value[i] != '"':
            return None
        end = value.find('"', i + 1)
        if end < 0:
            return None
        opaque = value[i + 1 : end]
        if not all(_etagc(c) for c in opaque):
            return None
        tags.append(EntityTag(opaque, weak))
        i = end + 1
        while i < n and value[i] in " \t":
            i += 1
        if i < n and value[i] != ",":
            return None  # two tags without a comma, or junk after a tag
    return tuple(tags)


def version_etag(version: int) -> EntityTag:
    """`"vN"` for a resource that keeps a version bumped on every change (catalog products)."""
    return EntityTag(f"v{version}")


def representation_etag(body: bytes) -> EntityTag:
    """A strong tag from the representation's bytes: equal bytes, equal tag, and nothing else
    (BLAKE2b-128, so a collision is not a practical worry)."""
    digest = hashlib.blake2b(body, digest_size=16).digest()
    return EntityTag(base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii"))


def http_date(moment: datetime) -> str:
    """IMF-fixdate, as `Last-Modified` and `Date` are written (`Sun, 06 Nov 1994 08:49:37 GMT`)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_datetime(moment.astimezone(UTC).replace(microsecond=0), usegmt=True)


def parse_http_date(value: str | None) -> datetime | None:
    """An HTTP-date (IMF-fixdate, or the obsolete forms email.utils reads) or None if invalid."""
    if not value or len(value) > _MAX_DATE_FIELD or "," in value.split(" ", 1)[-1]:
        return None  # a list of dates ("more than one member") is invalid (RFC 9110 13.1.3)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """What `Cache-Control` says about a read.

    `public=False` (the default) gives `private`: only the consumer's own cache may keep it
    (the gateway cache honours that even on `shared: true` routes). `max_age=0` gives
    `no-cache`: caches may keep the response but revalidate it (a cheap 304) before each use.
    """

    max_age: int = 0
    public: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.max_age <= MAX_AGE_LIMIT:
            raise ValueError(f"max_age must be 0..{MAX_AGE_LIMIT} seconds")

    @property
    def header(self) -> str:
        scope = "public" if self.public else "private"
        return f"{scope}, max-age={self.max_age}" if self.max_age else f"{scope}, no-cache"


def check_max_age(value: int) -> str | None:
    """Settings check (`field(metadata={"check": check_max_age})`)."""
    return None if 0 <= value <= MAX_AGE_LIMIT else f"must be 0..{MAX_AGE_LIMIT} seconds"


def validator_headers(
    policy: CachePolicy, etag: EntityTag | None = None, last_modified: datetime | None = None
) -> dict[str, str]:
    """The caching headers of a 200 read: Cache-Control, and ETag / Last-Modified if known."""
    headers = {"Cache-Control": policy.header}
    if etag is not None:
        headers["ETag"] = str(etag)
    if last_modified is not None:
        headers["Last-Modified"] = http_date(last_modified)
    return headers


def is_not_modified(
    method: str,
    *,
    if_none_match: Iterable[str] = (),
    if_modified_since: Iterable[str] = (),
    etag: EntityTag | None = None,
    last_modified: datetime | None = None,
    now: datetime | None = None,
) -> bool:
    """True when a GET/HEAD whose 200 would carry these validators must be answered 304.

    `if_none_match` / `if_modified_since` are the request's header lines (possibly several).
    RFC 9110 13.2.2 steps 3 and 4; other methods are never 304 (a write with If-None-Match is
    the service's own business, e.g. 412).
    """
    if method not in ("GET", "HEAD"):
        return False
    inm = list(if_none_match)
    if inm:
        tags = parse_entity_tags(", ".join(inm))
        if tags == ANY:
            return True  # this response exists, so "*" matches
        if tags is None or etag is None:
            return False
        return any(etag.weak_match(tag) for tag in tags)
    ims = list(if_modified_since)
    if last_modified is None or len(ims) != 1:
        return False
    since = parse_http_date(ims[0])
    if since is None or since > (now or datetime.now(UTC)):
        return False  # invalid, or in the future (a clock that cannot be trusted)
    if last_modified.tzinfo is None:
        last_modified = last_modified.replace(tzinfo=UTC)
    return last_modified.replace(microsecond=0) <= since


def not_modified_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The subset of a 200's headers that its 304 repeats."""
    keep = {name.lower() for name in NOT_MODIFIED_KEEPS}
    return {k: v for k, v in headers.items() if k.lower() in keep}
