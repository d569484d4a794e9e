"""What happened to a product, as facts other parts of the system may react to.

Plain values (no framework, no broker): the use cases record them on the unit of work, which
writes them into the outbox in the transaction of the change (`adapters/events.py`). The
data is what a reader needs to find what changed - `id`, `sku` and the `version` the change
produced (a deletion names the last version) - not the product itself: whoever wants the new
state reads it (the gateway's cache purges the product's entries on these events).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = ["ProductCreated", "ProductDeleted", "ProductEvent", "ProductUpdated"]


@dataclass(frozen=True)
class ProductEvent:
    type: ClassVar[str]
    id: str
    sku: str
    version: int

    def data(self) -> dict[str, str | int]:
        return {"id": self.id, "sku": self.sku, "version": self.version}


@dataclass(frozen=True)
class ProductCreated(ProductEvent):
    type: ClassVar[str] = "product.created"


@dataclass(frozen=True)
class ProductUpdated(ProductEvent):
    type: ClassVar[str] = "product.updated"


@dataclass(frozen=True)
class ProductDeleted(ProductEvent):
    type: ClassVar[str] = "product.deleted"
