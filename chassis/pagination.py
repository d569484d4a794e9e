"""Opaque keyset cursors: base64url of the last item's (created_at, id), so that clients
cannot depend on the format and every service pages the same way."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime

import orjson

__all__ = [
    "CURSOR_DOC",
    "CURSOR_MESSAGE",
    "CURSOR_PATTERN",
    "InvalidCursor",
    "cursor_param",
    "decode_cursor",
    "encode_cursor",
]


CURSOR_MESSAGE = "is not a cursor returned by this API"
# Unpadded base64url, as encode_cursor writes it; anything else is refused before decoding
# (the lenient decoder would skip foreign characters), so the documents can state the rule.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,512}$"
_CURSOR = re.compile(CURSOR_PATTERN.removeprefix("^").removesuffix("$"))
CURSOR_DOC = {
    "pattern": CURSOR_PATTERN,
    "description": "next_cursor of the previous page (opaque; only a value this API returned)",
}


class InvalidCursor(ValueError):
    """The text is not a cursor this API returned."""


def encode_cursor(created_at: datetime, item_id: str) -> str:
    raw = orjson.dumps([created_at.isoformat(), item_id])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    if not _CURSOR.fullmatch(cursor):
        raise InvalidCursor("malformed cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, item_id = orjson.loads(raw)
        if not isinstance(created, str) or not isinstance(item_id, str) or not item_id:
            raise InvalidCursor("malformed cursor")
        when = datetime.fromisoformat(created)
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise InvalidCursor("malformed cursor") from exc
    if when.tzinfo is None:
        raise InvalidCursor("malformed cursor")
    return when, item_id


def cursor_param(text: str) -> tuple[datetime, str]:
    """A `cursor` query parameter, or the 422 problem naming it (for route handlers)."""
    from .problems import validation_problem  # problems does not import pagination

    try:
        return decode_cursor(text)
    except InvalidCursor as exc:
        raise validation_problem({"cursor": [CURSOR_MESSAGE]}) from exc
