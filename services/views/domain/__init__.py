"""The read side's domain: the event envelope it reads and how events change its models (no I/O)."""

from .model import (
    BINDINGS,
    ORDER_EVENTS,
    PUBLISHES,
    Envelope,
    OrderView,
    Sale,
    cents,
    evolve,
    money,
    parse_envelope,
)

__all__ = [
    "BINDINGS",
    "ORDER_EVENTS",
    "PUBLISHES",
    "Envelope",
    "OrderView",
    "Sale",
    "cents",
    "evolve",
    "money",
    "parse_envelope",
]
