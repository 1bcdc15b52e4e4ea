"""The editor app's account pages: one's own account, the users admin and the audit log.

- ``/account``: who you are, your sessions (end one, or log out everywhere) and a form to
  change your password (the current one required; your other sessions end).
- ``/admin/users`` and ``/admin/users/{id}`` (admins): add users; per user, change the role,
  reset the password (their sessions end), log them out everywhere, lift a login lock,
  remove them. The last admin can be neither demoted nor removed.
- ``/admin/audit`` (admins): the audit log, newest first, 50 a page, by user and action.

Every change here is written to the audit log in the transaction that makes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ...content import accounts, audit, sessions, throttle
from ...content.cms import NotFound
from ...errors import InputError
from .. import auth
from .forms import PAGE, form_field, parse_int, path_id
from .requests import Ctx, endpoint

MAX_PASSWORD_FIELD = 1000


def _me(ctx: Ctx) -> auth.User:
    assert ctx.user is not None
    return ctx.user


def _user_or_404(ctx: Ctx, user_id: str) -> dict[str, Any]:
    uid = path_id(user_id, "user")
    row = accounts.get_user(ctx.ed.store, uid)
    if row is None:
        raise NotFound(f"there is no user {uid}")
    return row


def _agent(ua: str) -> str:
    """A user agent cut to what fits a table cell."""
    return ua if len(ua) <= 80 else ua[:77] + "…"


# -- your account -----------------------------------------------------------------------------


def _render_account(ctx: Ctx, status: int = 200, *, error: str | None = None) -> Response:
    me = _me(ctx)
    current = ctx.web.session.id if ctx.web.session is not None else None
    rows = sessions.of_user(ctx.ed.store, me.id, idle=ctx.ed.cookie.idle)
    return ctx.render(
        "account.html",
        status,
        me=me,
        sessions=rows,
        current=current,
        agent=_agent,
        error=error,
        min_password=accounts.MIN_PASSWORD,
    )


@endpoint()
def account_page(ctx: Ctx) -> Response:
    return _render_account(ctx)


@endpoint()
def account_password(ctx: Ctx) -> Response:
    me = _me(ctx)
    current = form_field(ctx.form, "current")[:MAX_PASSWORD_FIELD]
    new = form_field(ctx.form, "new")[:MAX_PASSWORD_FIELD]
    if new != form_field(ctx.form, "confirm")[:MAX_PASSWORD_FIELD]:
        return _render_account(ctx, 422, error="Not changed: the two new passwords differ.")
    try:
        accounts.check_password(new)
    except InputError as e:
        return _render_account(ctx, 422, error=f"Not changed: {e}.")
    # a wrong current password counts as a failed login: a stolen session cannot be used
    # to guess the password
    attempt = throttle.begin(
        ctx.ed.store, me.username, ctx.address, limits=ctx.ed.config.login_limits
    )
    if attempt.refused:
        assert attempt.retry_after is not None
        resp = _render_account(
            ctx, 429, error="Too many wrong passwords: try again in a few minutes."
        )
        resp.headers["Retry-After"] = str(attempt.retry_after)
        return resp
    keep = ctx.web.session.id if ctx.web.session is not None else None
    try:
        ok = accounts.change_password(
            ctx.ed.store, me.id, current, new, keep_session=keep, actor=ctx.actor
        )
    except InputError as e:
        throttle.cancel(ctx.ed.store, attempt)  # the current password was not checked
        return _render_account(ctx, 422, error=f"Not changed: {e}.")
    if not ok:
        return _render_account(ctx, 422, error="Not changed: the current password is wrong.")
    throttle.succeeded(ctx.ed.store, attempt)
    ctx.flash("Your password is changed; your other sessions are logged out.")
    return ctx.redirect("/account")


@endpoint()
def account_logout_everywhere(ctx: Ctx) -> Response:
    me = _me(ctx)
    with ctx.ed.store.transaction() as tx:
        n = sessions.end_all(tx, me.id)
        audit.record(tx, ctx.actor, "logout.everywhere", f"user {me.username}", f"{n} session(s)")
    ctx.web.ended("everywhere")
    return ctx.redirect("/login")


@endpoint()
def account_session_end(ctx: Ctx, session_id: str) -> Response:
    me = _me(ctx)
    sid = path_id(session_id, "session")
    with ctx.ed.store.transaction() as tx:
        ended = sessions.end_one(tx, me.id, sid)
        if ended:
            audit.record(tx, ctx.actor, "session.end", f"user {me.username}", f"session {sid}")
    if ended and ctx.web.session is not None and ctx.web.session.id == sid:
        ctx.web.ended("out")
        return ctx.redirect("/login")
    ctx.flash("That session is logged out." if ended else "That session had already ended.")
    return ctx.redirect("/account")


# -- users (admins) ---------------------------------------------------------------------------


def _render_users(
    ctx: Ctx, status: int, *, error: str | None = None, values: Mapping[str, str] | None = None
) -> Response:
    live = sessions.summary(ctx.ed.store, idle=ctx.ed.cookie.idle)
    return ctx.render(
        "users.html",
        status,
        users=accounts.users(ctx.ed.store),
        live=live,
        error=error,
        values=values or {"username": "", "display_name": "", "role": "editor"},
        roles=auth.ROLES,
    )


@endpoint(admin=True)
def users_page(ctx: Ctx) -> Response:
    return _render_users(ctx, 200)


@endpoint(admin=True)
def users_create(ctx: Ctx) -> Response:
    values = {k: form_field(ctx.form, k) for k in ("username", "display_name", "role")}
    password = form_field(ctx.form, "password")
    try:
        accounts.create_user(
            ctx.ed.store,
            values["username"][:100],
            password[:MAX_PASSWORD_FIELD],
            role=values["role"],
            display_name=values["display_name"][:200] or None,
            actor=ctx.actor,
        )
    except InputError as e:
        return _render_users(ctx, 422, error=f"Not created: {e}", values=values)
    ctx.flash(f"User {values['username'].strip().lower()} created.")
    return ctx.redirect("/admin/users")


def _render_user(
    ctx: Ctx, row: Mapping[str, Any], status: int = 200, *, error: str | None = None
) -> Response:
    return ctx.render(
        "user.html",
        status,
        u=row,
        sessions=sessions.of_user(ctx.ed.store, int(row["id"]), idle=ctx.ed.cookie.idle),
        failures=throttle.failures(
            ctx.ed.store, str(row["username"]), limits=ctx.ed.config.login_limits
        ),
        limit=ctx.ed.config.login_limits.account,
        is_me=int(row["id"]) == _me(ctx).id,
        roles=auth.ROLES,
        agent=_agent,
        error=error,
        min_password=accounts.MIN_PASSWORD,
    )


@endpoint(admin=True)
def user_page(ctx: Ctx, user_id: str) -> Response:
    return _render_user(ctx, _user_or_404(ctx, user_id))


@endpoint(admin=True)
def user_role(ctx: Ctx, user_id: str) -> Response:
    row = _user_or_404(ctx, user_id)
    role = form_field(ctx.form, "role")
    try:
        changed = accounts.set_role(ctx.ed.store, int(row["id"]), role, actor=ctx.actor)
    except InputError as e:
        return _render_user(ctx, row, 422, error=f"Not changed: {e}.")
    if changed:
        ctx.flash(f"{row['username']} is now {'an' if role == 'admin' else 'a'} {role}.")
    if int(row["id"]) == _me(ctx).id and role != "admin":
        return ctx.redirect("/account")  # no longer allowed on the admin pages
    return ctx.redirect(f"/admin/users/{row['id']}")


@endpoint(admin=True)
def user_password(ctx: Ctx, user_id: str) -> Response:
    row = _user_or_404(ctx, user_id)
    if int(row["id"]) == _me(ctx).id:
        return _render_user(ctx, row, 422, error="Change your own password on your account page.")
    new = form_field(ctx.form, "new")[:MAX_PASSWORD_FIELD]
    if new != form_field(ctx.form, "confirm")[:MAX_PASSWORD_FIELD]:
        return _render_user(ctx, row, 422, error="Not reset: the two passwords differ.")
    try:
        n = accounts.reset_password(ctx.ed.store, int(row["id"]), new, actor=ctx.actor)
    except InputError as e:
        return _render_user(ctx, row, 422, error=f"Not reset: {e}.")
    throttle.clear(ctx.ed.store, str(row["username"]))
    ctx.flash(
        f"{row['username']}'s password is reset; {n} session{'' if n == 1 else 's'} logged out."
        " Tell them the new password in person or over a channel you trust."
    )
    return ctx.redirect(f"/admin/users/{row['id']}")


@endpoint(admin=True)
def user_logout_everywhere(ctx: Ctx, user_id: str) -> Response:
    row = _user_or_404(ctx, user_id)
    with ctx.ed.store.transaction() as tx:
        n = sessions.end_all(tx, int(row["id"]))
        audit.record(tx, ctx.actor, "user.sessions", f"user {row['username']}", f"{n} session(s)")
    if int(row["id"]) == _me(ctx).id:
        ctx.web.ended("everywhere")
        return ctx.redirect("/login")
    ctx.flash(f"{row['username']} is logged out everywhere ({n} session{'' if n == 1 else 's'}).")
    return ctx.redirect(f"/admin/users/{row['id']}")


@endpoint(admin=True)
def user_unlock(ctx: Ctx, user_id: str) -> Response:
    row = _user_or_404(ctx, user_id)
    n = throttle.clear(ctx.ed.store, str(row["username"]))
    ctx.audit("user.unlock", f"user {row['username']}", f"{n} failure(s) forgotten")
    ctx.flash(f"{row['username']}'s {n} recent failed login{'' if n == 1 else 's'} forgotten.")
    return ctx.redirect(f"/admin/users/{row['id']}")


@endpoint(admin=True)
def user_remove(ctx: Ctx, user_id: str) -> Response:
    row = _user_or_404(ctx, user_id)
    if int(row["id"]) == _me(ctx).id:
        return _render_user(ctx, row, 422, error="You cannot remove yourself.")
    if form_field(ctx.form, "confirm") != str(row["username"]):
        return _render_user(ctx, row, 422, error=f"Not removed: type {row['username']} to confirm.")
    try:
        name = accounts.remove_user(ctx.ed.store, int(row["id"]), actor=ctx.actor)
    except InputError as e:
        return _render_user(ctx, row, 422, error=f"Not removed: {e}.")
    ctx.flash(f"User {name} removed; what they wrote stays, under their name.")
    return ctx.redirect("/admin/users")


# -- the audit log (admins) -------------------------------------------------------------------


@endpoint(admin=True)
def audit_page(ctx: Ctx) -> Response:
    who = ctx.query("user").strip()[:100]
    action = ctx.query("action").strip()
    if action and action not in audit.ACTIONS:
        action = ""
    page = parse_int(ctx.query("page"), "page", lo=1, hi=100_000, default=1)
    rows = audit.entries(
        ctx.ed.store,
        limit=PAGE + 1,
        offset=(page - 1) * PAGE,
        actor=who or None,
        action=action or None,
    )

    def link(p: int) -> str:
        args = {k: v for k, v in (("user", who), ("action", action), ("page", str(p))) if v}
        return "/admin/audit?" + urlencode(args)

    return ctx.render(
        "audit.html",
        entries=rows[:PAGE],
        actions=audit.ACTIONS,
        who=who,
        action=action,
        page=page,
        prev_link=link(page - 1) if page > 1 else None,
        next_link=link(page + 1) if len(rows) > PAGE else None,
    )


def account_routes() -> list[BaseRoute]:
    get, post = ["GET"], ["POST"]
    return [
        Route("/account", account_page, methods=get),
        Route("/account/password", account_password, methods=post),
        Route("/account/logout-everywhere", account_logout_everywhere, methods=post),
        Route("/account/sessions/{session_id}/end", account_session_end, methods=post),
        Route("/admin/users", users_page, methods=get),
        Route("/admin/users", users_create, methods=post),
        Route("/admin/users/{user_id}", user_page, methods=get),
        Route("/admin/users/{user_id}/role", user_role, methods=post),
        Route("/admin/users/{user_id}/password", user_password, methods=post),
        Route("/admin/users/{user_id}/logout-everywhere", user_logout_everywhere, methods=post),
        Route("/admin/users/{user_id}/unlock", user_unlock, methods=post),
        Route("/admin/users/{user_id}/remove", user_remove, methods=post),
        Route("/admin/audit", audit_page, methods=get),
    ]
