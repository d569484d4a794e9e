"""Adapters: the SQLAlchemy tables and repositories, and in-memory fakes with the same interface."""
