"""Adapters: tables and repository (SQLAlchemy asyncio), upstream HTTP clients, inventory's
gRPC client and the transport choice for it, tokens."""
