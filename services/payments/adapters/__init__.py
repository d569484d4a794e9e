"""Adapters: tables, the payment repository, the simulated provider and the event outbox."""
