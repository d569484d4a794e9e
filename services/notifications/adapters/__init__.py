"""Adapters: the notifications tables, the event handler's writes, the API's reads."""
