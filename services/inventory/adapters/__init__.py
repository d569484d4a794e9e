"""Adapters: the SQLAlchemy tables, the stock/reservation repository and the event outbox."""
