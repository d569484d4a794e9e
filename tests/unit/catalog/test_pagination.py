from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from services.catalog.domain import SortKey
from services.catalog.service_layer.pagination import InvalidCursor, decode_cursor, encode_cursor


def test_cursor_round_trip_is_opaque_and_url_safe() -> None:
    key = SortKey(datetime(2025, 5, 6, 7, 8, 9, 123456, tzinfo=UTC), "a-b-c")
    cursor = encode_cursor(key)
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor
    assert decode_cursor(cursor) == key


@pytest.mark.parametrize(
    "raw",
    [
        "not base64!!",
        base64.urlsafe_b64encode(b"{}").decode(),
        base64.urlsafe_b64encode(b'["2025-01-01T00:00:00", "id"]').decode(),  # naive
        base64.urlsafe_b64encode(b'["yesterday", "id"]').decode(),
        base64.urlsafe_b64encode(b'["2025-01-01T00:00:00+00:00", ""]').decode(),
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        "",
    ],
)
def test_bad_cursors_are_refused(raw: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(raw)
