"""The login + consent form; Flask-WTF adds and checks the `csrf_token` field."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField

__all__ = ["LoginConsentForm"]


class LoginConsentForm(FlaskForm):
    # No validators: an empty field is only an error when the user approves, and the view
    # says so on the page. `validate_on_submit` therefore fails on the CSRF token alone.
    username = StringField("Username")
    password = PasswordField("Password")
