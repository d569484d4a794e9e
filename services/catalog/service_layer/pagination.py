"""Opaque cursors: base64url of the last item's sort key, so clients cannot depend on the format."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

import orjson

from ..domain import SortKey

__all__ = ["InvalidCursor", "decode_cursor", "encode_cursor"]


class InvalidCursor(ValueError):
    pass


def encode_cursor(key: SortKey) -> str:
    raw = orjson.dumps([key.created_at.isoformat(), key.id])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> SortKey:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, id_ = orjson.loads(raw)
        if not isinstance(created, str) or not isinstance(id_, str) or not id_:
            raise InvalidCursor("malformed cursor")
        when = datetime.fromisoformat(created)
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise InvalidCursor("malformed cursor") from exc
    if when.tzinfo is None:
        raise InvalidCursor("malformed cursor")
    return SortKey(when, id_)
