"""Cursors: only what encode_cursor writes decodes, and the documents state that rule."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from chassis.pagination import CURSOR_PATTERN, InvalidCursor, decode_cursor, encode_cursor

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_a_cursor_round_trips_and_matches_the_documented_pattern() -> None:
    cursor = encode_cursor(WHEN, "f" * 32)
    assert re.fullmatch(CURSOR_PATTERN.strip("^$"), cursor)
    assert decode_cursor(cursor) == (WHEN, "f" * 32)


@pytest.mark.parametrize("junk", ["!!!!", "====", "    ", "\n\n\n\n"])
def test_foreign_characters_are_refused_not_skipped(junk: str) -> None:
    """The lenient base64 decoder would skip them and accept the cursor."""
    cursor = encode_cursor(WHEN, "f" * 32)
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor + junk)


def test_a_cursor_longer_than_documented_is_refused() -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(encode_cursor(WHEN, "f" * 600))
