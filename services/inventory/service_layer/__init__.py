"""Use cases: each runs in one database transaction and speaks in domain terms."""
