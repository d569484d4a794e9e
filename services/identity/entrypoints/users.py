"""`/api/v1/users`: registration and the caller's own profile.

Registration refuses weak passwords (422 naming `password`: one of the most common passwords,
or containing the username or the e-mail's local part) and is throttled per client address
(429 + `Retry-After`), the address derived as for sign-ins (`IDENTITY_PROXY_COUNT`).

`GET /me` needs a token issued to a user with scope `profile`. A client_credentials token
(whose `sub` is the client itself) is refused with 403 `user-token-required`: the token is
valid, it just does not speak for a user. `GET /<id>` answers one's own record, or anyone's to
a token that also holds `users:read:all` (staff); another user's is 404, as a missing one.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from sqlalchemy import select

from chassis import Problem, TokenError, token_problem, validation_problem
from chassis.flask import current_claims, json_body, require_scopes

from ..adapters.orm import ApiKey, Token, User
from ..adapters.repository import SqlUserRepository
from ..schemas import RegisterSchema
from ..service_layer.users import (
    RegistrationThrottled,
    UsernameTaken,
    admit_registration,
    register,
)
from .deps import db, deps

__all__ = ["bp"]

bp = Blueprint("users", __name__, url_prefix="/api/v1/users")
READ_ALL = "users:read:all"  # staff: every user's record, not only one's own


def _public(user: User) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "email": user.email}


@bp.post("")
def create_user() -> tuple[Response, int, dict[str, str]]:
    """Register a customer.
    ---
    post:
      operationId: registerUser
      summary: Register (self-registration makes a customer)
      tags: [users]
      security: []
      requestBody:
        required: true
        content: {application/json: {schema: RegisterSchema}}
      responses:
        201:
          description: Registered; `Location` names the new user
          headers:
            Location: {description: the user's URL, schema: {type: string}}
          content: {application/json: {schema: UserSchema}}
        400: BadRequest
        409: Conflict
        413: ContentTooLarge
        415: UnsupportedMediaType
        422: UnprocessableContent
        429: TooManyRequests
    """
    data = json_body(RegisterSchema())
    ctx, session = deps(), db()
    weak = ctx.password_policy.problems(
        data["password"], username=data["username"], email=data["email"]
    )
    if weak:
        raise validation_problem({"password": [f"the password {reason}" for reason in weak]})
    try:
        admit_registration(
            SqlUserRepository(session), ctx.registrations, ip=request.remote_addr or "unknown"
        )
    except RegistrationThrottled as exc:
        session.commit()  # the pruning of old attempts
        raise Problem(
            429,
            "too many registrations from this address; try again later",
            headers={"Retry-After": str(exc.retry_after)},
        ) from exc
    session.commit()  # the attempt counts whatever the outcome
    try:
        user = register(SqlUserRepository(session), ctx.passwords, **data)
        session.commit()
    except UsernameTaken as exc:
        session.rollback()
        raise Problem(409, f"the username {exc} is taken") from exc
    location = url_for("users.get_user", user_id=user.id)
    return jsonify(_public(user)), 201, {"Location": location}


def _live_token() -> str | None:
    """The user id the token speaks for (None: a client's); a revoked or unknown token is
    refused (401). A token the gateway got for an API key (ADR 0036) lives as long as its key:
    it has no record of its own, its `api_key` claim names the key."""
    claims = current_claims()
    key_id = claims.raw.get("api_key")
    if key_id is not None:
        key = db().get(ApiKey, str(key_id))
        if key is None or key.revoked or key.subject != claims.subject:
            raise token_problem(TokenError("the token has been revoked or is unknown"))
        return key.subject if key.owner_kind == "user" else None
    record = db().scalars(select(Token).where(Token.jti == claims.raw.get("jti"))).first()
    if record is None or record.access_revoked:
        raise token_problem(TokenError("the token has been revoked or is unknown"))
    return record.user_id


def _token_user() -> User:
    claims = current_claims()
    user_id = _live_token()
    if user_id is None:
        raise Problem(
            403,
            "this resource needs a token issued to a user; a client_credentials token has none",
            type_="https://portico.dev/problems/user-token-required",
        )
    user = db().get(User, user_id)
    if user is None or user.id != claims.subject:
        raise Problem(404, "the token's user does not exist")
    return user


@bp.get("/me")
@require_scopes("profile")
def me() -> Response:
    """The caller's own record.
    ---
    get:
      operationId: getMe
      summary: The user the token speaks for
      tags: [users]
      security: [{bearerAuth: [profile]}]
      responses:
        200:
          description: The caller's record
          content: {application/json: {schema: UserSchema}}
        401: Unauthorized
        403: Forbidden
        404: NotFound
    """
    return jsonify(_public(_token_user()))


@bp.get("/<user_id>")
@require_scopes("profile")
def get_user(user_id: str) -> Response:
    """One user: the caller's own, or anyone's with users:read:all (not routed by the gateway).
    ---
    get:
      operationId: getUser
      summary: A user by id (the caller's own; anyone's with users:read:all)
      tags: [users]
      security: [{bearerAuth: [profile]}]
      responses:
        200:
          description: The user's record
          content: {application/json: {schema: UserSchema}}
        401: Unauthorized
        403: Forbidden
        404: NotFound
    """
    claims = current_claims()
    if claims.subject == user_id or not claims.sees(user_id, READ_ALL):
        user = _token_user()
        if user.id != user_id:  # only one's own record, and no hint whether another exists
            raise Problem(404, "no such user")
        return jsonify(_public(user))
    _live_token()  # staff: anyone's (a client's token holding the scope too)
    found = db().get(User, user_id)
    if found is None:
        raise Problem(404, "no such user")
    return jsonify(_public(found))
