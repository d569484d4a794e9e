"""JSON log lines that carry the request's correlation id.

The id lives in a context variable so that every line logged while serving a request, in
Flask threads or aiohttp tasks alike, carries it without being passed around.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from contextvars import ContextVar
from typing import Any

import orjson

__all__ = [
    "REQUEST_ID_HEADER",
    "JsonFormatter",
    "accept_request_id",
    "configure_logging",
    "correlation_id",
    "new_request_id",
]

REQUEST_ID_HEADER = "X-Request-ID"
correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)

# A client-supplied id is echoed into logs and headers, so only a short, inert token is accepted.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_STD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def new_request_id() -> str:
    return uuid.uuid4().hex


def accept_request_id(value: str | None) -> str:
    """The caller's id when it is safe to echo, else a fresh one."""
    if value and _SAFE_ID.match(value):
        return value
    return new_request_id()


class JsonFormatter(logging.Formatter):
    """One JSON object a line; `extra=` fields become top-level keys."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        cid = correlation_id.get()
        if cid:
            doc["correlation_id"] = cid
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route the root logger to stderr as JSON lines; idempotent."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "gunicorn.access"):
        logging.getLogger(noisy).disabled = True
