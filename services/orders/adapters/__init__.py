"""Adapters: tables and repository (SQLAlchemy asyncio), upstream HTTP clients, tokens."""
