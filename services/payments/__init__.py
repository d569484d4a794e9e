"""Payments: charges and refunds against a simulated provider, keyed by Idempotency-Key."""
