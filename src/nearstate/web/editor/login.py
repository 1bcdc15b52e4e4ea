"""Logging in and out: the login page and form, throttled per account and per address."""

from __future__ import annotations

import logging
import math
from typing import Any

from starlette.responses import Response

from ...content import accounts, audit, throttle
from .. import auth
from .forms import form_field
from .requests import Ctx, endpoint

log = logging.getLogger(__name__)


LOGIN_FAILED = "Wrong username or password."


def too_many(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return (
        "Too many failed logins for this account or from your network. For safety, logging"
        f" in is paused: try again in {minutes} minute{'s' if minutes != 1 else ''}."
    )


def authenticate_user(ctx: Ctx, username: str, password: str) -> dict[str, Any] | int | None:
    """The user if the password is right, None if not, or the seconds to wait when the
    account or the client's address has too many recent failures (no password is checked
    then). Every outcome is in the audit log but the refusals (their failures are)."""
    attempt = throttle.begin(ctx.ed.store, username, ctx.address, limits=ctx.ed.config.login_limits)
    if attempt.refused:
        assert attempt.retry_after is not None
        log.warning(
            "editor: login of %r from %s refused for %d s (too many failures)",
            attempt.username,
            attempt.address,
            attempt.retry_after,
        )
        return attempt.retry_after
    user = accounts.authenticate(ctx.ed.store, username, password)
    if user is None:
        audit.record(
            ctx.ed.store,
            audit.Actor(attempt.username, None, ctx.address),
            "login.failed",
            f"user {attempt.username}",
        )
        return None
    throttle.succeeded(ctx.ed.store, attempt)
    ctx.web.log_in(
        int(user["id"]),
        address=ctx.address,
        user_agent=ctx.request.headers.get("user-agent", ""),
    )
    ctx.audit("login", f"user {user['username']}")
    return user


@endpoint(public=True)
def login_page(ctx: Ctx) -> Response:
    nxt = auth.safe_next(ctx.query("next"))
    if ctx.user is not None:
        return ctx.redirect(nxt)
    return ctx.render("login.html", next=nxt, username="", error=None)


@endpoint(public=True)
def login_post(ctx: Ctx) -> Response:
    username = form_field(ctx.form, "username").strip()[:100]
    password = form_field(ctx.form, "password")[:1000]
    nxt = auth.safe_next(form_field(ctx.form, "next"))
    if not username or not password:
        return ctx.render("login.html", 401, next=nxt, username=username, error=LOGIN_FAILED)
    got = authenticate_user(ctx, username, password)
    if isinstance(got, int):
        resp = ctx.render("login.html", 429, next=nxt, username=username, error=too_many(got))
        resp.headers["Retry-After"] = str(got)
        return resp
    if got is None:
        return ctx.render("login.html", 401, next=nxt, username=username, error=LOGIN_FAILED)
    return ctx.redirect(nxt)


@endpoint()
def logout_post(ctx: Ctx) -> Response:
    ctx.audit("logout", f"user {ctx.username}")
    ctx.web.log_out()
    return ctx.redirect("/login")
