"""`/api/v1/notifications`: the caller's notifications. Errors leave as problem+json."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from chassis import Problem
from chassis.aiohttp import CLAIMS, query_args, require_scopes
from chassis.pagination import cursor_param, encode_cursor

from ..domain import Notification
from ..schemas import ListQuerySchema, NotificationSchema
from ..service_layer import queries
from .deps import DEPS

__all__ = ["routes"]

READ = "notifications:read"
READ_ALL = "notifications:read:all"  # staff: everyone's notifications (lists only)

routes = web.RouteTableDef()
_schema = NotificationSchema()
_query = ListQuerySchema()


def _dump(n: Notification) -> dict[str, Any]:
    return _schema.dump(
        {
            "id": n.id,
            "kind": n.kind,
            "event_type": n.event_type,
            "order_id": n.order_id,
            "subject": n.subject,
            "body": n.body,
            "created_at": n.created_at,
            "read": n.read,
            "read_at": n.read_at,
        }
    )


@routes.get("/api/v1/notifications")
@require_scopes(READ)
async def list_notifications(request: web.Request) -> web.Response:
    """The caller's notifications (everyone's with notifications:read:all), newest first.
    ---
    get:
      operationId: listNotifications
      summary: List my notifications
      description: Only the caller's own notifications; a token with `notifications:read:all`
        (staff) lists everyone's.
      tags: [notifications]
      security: [{bearerAuth: ["notifications:read"]}]
      parameters:
        - in: query
          schema: ListQuerySchema
      responses:
        200:
          description: A page of notifications
          content:
            application/json:
              schema: NotificationPageSchema
        401: Unauthorized
        403: Forbidden
        422: UnprocessableContent
    """
    args = query_args(request, _query)
    page, after = await queries.list_notifications(
        request.app[DEPS].uow,
        request[CLAIMS].owner_filter(READ_ALL),
        unread=args.get("unread"),
        before=cursor_param(args["cursor"]) if "cursor" in args else None,
        limit=args["limit"],
    )
    return web.json_response(
        {
            "items": [_dump(n) for n in page],
            "next_cursor": encode_cursor(*after) if after else None,
        }
    )


@routes.post("/api/v1/notifications/{notification_id}/read")
@require_scopes(READ)
async def mark_read(request: web.Request) -> web.Response:
    """Mark one of the caller's notifications read (idempotent); only the owner may.
    ---
    post:
      operationId: markNotificationRead
      summary: Mark a notification read
      description: Another user's notification answers 404, as one that does not exist, even
        to a `notifications:read:all` token (reading everyone's is not changing their inbox).
      tags: [notifications]
      security: [{bearerAuth: ["notifications:read"]}]
      responses:
        200:
          description: The notification, now read
          content:
            application/json:
              schema: NotificationSchema
        401: Unauthorized
        403: Forbidden
        404: NotFound
    """
    nid = request.match_info["notification_id"]
    try:
        n = await queries.mark_read(request.app[DEPS].uow, request[CLAIMS].subject, nid)
    except queries.NotificationNotFound as exc:
        raise Problem(404, f"no notification with id {nid}") from exc
    return web.json_response(_dump(n))
