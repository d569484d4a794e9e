"""`/api/v1/users`: registration and the caller's own profile.

`GET /me` needs a token issued to a user with scope `profile`. A client_credentials token
(whose `sub` is the client itself) is refused with 403 `user-token-required`: the token is
valid, it just does not speak for a user. `GET /<id>` answers one's own record, or anyone's to
a token that also holds `users:read:all` (staff); another user's is 404, as a missing one.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, url_for
from marshmallow import Schema, fields, validate
from sqlalchemy import select

from chassis import Problem, TokenError, token_problem
from chassis.flask import current_claims, json_body, require_scopes

from ..adapters.orm import Token, User
from ..service_layer.users import UsernameTaken, register
from .context import db, identity

__all__ = ["RegisterSchema", "bp"]

bp = Blueprint("users", __name__, url_prefix="/api/v1/users")
READ_ALL = "users:read:all"  # staff: every user's record, not only one's own


class RegisterSchema(Schema):
    username = fields.String(
        required=True,
        validate=[
            validate.Length(min=3, max=32),
            validate.Regexp(r"^[A-Za-z0-9_.-]+$", error="letters, digits, '_', '.', '-' only"),
        ],
    )
    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(required=True, validate=validate.Length(min=8, max=256))


def _public(user: User) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "email": user.email}


@bp.post("")
def create_user() -> tuple[Response, int, dict[str, str]]:
    data = json_body(RegisterSchema())
    session = db()
    try:
        user = register(session, identity().passwords, **data)
        session.commit()
    except UsernameTaken as exc:
        session.rollback()
        raise Problem(409, f"the username {exc} is taken") from exc
    location = url_for("users.get_user", user_id=user.id)
    return jsonify(_public(user)), 201, {"Location": location}


def _live_token() -> Token:
    """The token's record; a revoked or unknown token is refused (401)."""
    record = db().scalars(select(Token).where(Token.jti == current_claims().raw.get("jti"))).first()
    if record is None or record.access_revoked:
        raise token_problem(TokenError("the token has been revoked or is unknown"))
    return record


def _token_user() -> User:
    claims = current_claims()
    record = _live_token()
    if record.user_id is None:
        raise Problem(
            403,
            "this resource needs a token issued to a user; a client_credentials token has none",
            type_="https://portico.dev/problems/user-token-required",
        )
    user = db().get(User, record.user_id)
    if user is None or user.id != claims.subject:
        raise Problem(404, "the token's user does not exist")
    return user


@bp.get("/me")
@require_scopes("profile")
def me() -> Response:
    return jsonify(_public(_token_user()))


@bp.get("/<user_id>")
@require_scopes("profile")
def get_user(user_id: str) -> Response:
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
