"""The notifications domain: what a user is told about each event (no I/O)."""

from .model import BINDINGS, Message, Notification, compose

__all__ = ["BINDINGS", "Message", "Notification", "compose"]
