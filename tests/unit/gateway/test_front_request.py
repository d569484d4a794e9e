"""The front server's per-request object sets every slot itself (it skips `Exchange.__init__`
for speed), with the same starting values an `Exchange` has."""

from __future__ import annotations

from gateway.front import _Request
from gateway.pipeline.exchange import Exchange


def _slots(cls: type) -> list[str]:
    return [name for klass in cls.__mro__ for name in getattr(klass, "__slots__", ())]


def test_every_slot_is_set() -> None:
    req = _Request()
    unset = [name for name in _slots(_Request) if not hasattr(req, name)]
    assert unset == []


def test_starting_values_match_an_exchange() -> None:
    req, ex = _Request(), Exchange("", "", "", [])
    assert {n: getattr(req, n) for n in Exchange.__slots__} == {
        n: getattr(ex, n) for n in Exchange.__slots__
    }
    assert req.forwarded_for is not _Request().forwarded_for  # never shared between requests
    assert req.response_extra is not _Request().response_extra
