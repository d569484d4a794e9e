"""RFC 9457 problem details: the one shape of every error a client sees.

`Problem` is raised anywhere below a handler; the framework glue (`chassis.flask`,
`chassis.aiohttp`) turns it, HTTP errors and unexpected exceptions into
`application/problem+json` with the correlation id and never a traceback.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from .logging import correlation_id

__all__ = ["PROBLEM_JSON", "TYPE_BASE", "Problem", "problem_document", "validation_problem"]

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://portico.dev/problems/"


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_document(
    status: int,
    title: str | None = None,
    detail: str | None = None,
    type_: str | None = None,
    instance: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": type_ or "about:blank",
        "title": title or _title(status),
        "status": status,
    }
    if detail:
        doc["detail"] = detail
    if instance:
        doc["instance"] = instance
    cid = correlation_id.get()
    if cid:
        doc["correlation_id"] = cid
    doc.update(extra)
    return doc


class Problem(Exception):
    """An error meant for the client: status, title, detail, extension members, headers."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        title: str | None = None,
        type_: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title or _title(status))
        self.status = status
        self.detail = detail
        self.title = title or _title(status)
        self.type = type_ or (TYPE_BASE + self.title.lower().replace(" ", "-"))
        self.headers = headers or {}
        self.extra = extra

    def document(self, instance: str | None = None) -> dict[str, Any]:
        return problem_document(
            self.status, self.title, self.detail, self.type, instance, **self.extra
        )


def _str_keys(messages: Any) -> Any:
    """Marshmallow keys errors in lists by index (int); JSON objects need string keys."""
    if isinstance(messages, dict):
        return {str(k): _str_keys(v) for k, v in messages.items()}
    return messages


def validation_problem(messages: Any) -> Problem:
    """422 naming every invalid field, from marshmallow's `ValidationError.messages`."""
    messages = _str_keys(messages)
    fields = sorted(messages) if isinstance(messages, dict) else []
    detail = "invalid fields: " + ", ".join(fields) if fields else "the request body is invalid"
    return Problem(
        422, detail, title="Unprocessable Content", type_=TYPE_BASE + "validation", errors=messages
    )
