"""Inventory: stock per sku and reservations (reserve, commit, release), idempotent per order."""
