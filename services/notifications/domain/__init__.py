"""The notifications domain: what a user is told about each event (no I/O)."""

from .model import BINDINGS, NOTIFICATION_SENT, PUBLISHES, Message, Notification, compose

__all__ = ["BINDINGS", "NOTIFICATION_SENT", "PUBLISHES", "Message", "Notification", "compose"]
