"""One database transaction around a use case or a saga transition; rolled back unless
committed explicitly."""

from __future__ import annotations

from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..adapters.repository import OrderRepository

__all__ = ["UnitOfWork"]


class UnitOfWork:
    orders: OrderRepository

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._conn: AsyncConnection | None = None

    async def __aenter__(self) -> UnitOfWork:
        self._conn = await self.engine.connect()
        await self._conn.begin()
        self.orders = OrderRepository(self._conn)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if conn.in_transaction():
                await conn.rollback()
        finally:
            await conn.close()

    async def commit(self) -> None:
        assert self._conn is not None, "commit outside an `async with` block"
        await self._conn.commit()
