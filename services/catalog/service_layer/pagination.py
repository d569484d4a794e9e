"""Catalog cursors: the chassis's opaque keyset cursors over the products' sort key."""

from __future__ import annotations

from chassis.pagination import InvalidCursor
from chassis.pagination import decode_cursor as _decode
from chassis.pagination import encode_cursor as _encode

from ..domain import SortKey

__all__ = ["InvalidCursor", "decode_cursor", "encode_cursor"]


def encode_cursor(key: SortKey) -> str:
    return _encode(key.created_at, key.id)


def decode_cursor(cursor: str) -> SortKey:
    return SortKey(*_decode(cursor))
