"""The JSON API: log in and out, list, read, create, update and publish stories, and a
save's ingestion status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from ...content.cms import STATUSES
from ...content.rules import Problem
from .forms import MAX_REVISION, PAGE, BadRequest, parse_int, path_id, show
from .login import LOGIN_FAILED, authenticate_user, too_many
from .requests import Ctx, endpoint
from .state import Editor
from .stories import story_status


def _saved_json(s: Any) -> dict[str, Any]:
    return {"id": s.id, "revision": s.revision, "event": s.event}


def _story_json(row: Mapping[str, Any]) -> dict[str, Any]:
    keys = (
        "id",
        "slug",
        "title",
        "status",
        "revision",
        "published_revision",
        "publish_at",
        "unpublish_at",
        "published_at",
        "created_at",
        "updated_at",
        "updated_by",
    )
    out = {k: row.get(k) for k in keys}
    out["story"] = row["data"]
    out["ingest"] = {
        "status": row["ingest_status"],
        "errors": row["ingest_errors"],
        "token": row["token"],
    }
    return out


def _story_json_of(ed: Editor, sid: int) -> dict[str, Any]:
    out = _story_json(ed.cms.story(sid))
    if out["ingest"]["status"] == "pending":
        st = ed.cms.ingest_status(sid, out["revision"])
        out["ingest"] = {"status": st["status"], "errors": st["errors"], "token": st["token"]}
    return out


def _object(data: Any, what: str) -> dict[str, Any]:
    if data is None:
        raise BadRequest(
            f"Send the {what} as a JSON object.",
            422,
            [Problem(what, "is required: send it as a JSON object")],
        )
    if not isinstance(data, dict):
        raise BadRequest(
            f"The {what} must be a JSON object.", 422, [Problem(what, "must be a JSON object")]
        )
    return data


def _base(data: Mapping[str, Any], *, required: bool) -> int | None:
    v = data.get("base_revision")
    if v is None and not required:
        return None
    if v is None:
        p = Problem("base_revision", "is required: the revision your change is based on")
        raise BadRequest("Say which revision your change is based on.", 422, [p])
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_REVISION:
        p = Problem("base_revision", f"{show(v)} is not a revision number")
        raise BadRequest("The base revision is not a revision number.", 422, [p])
    return v


@endpoint(api=True, public=True, csrf=False)
def api_login(ctx: Ctx) -> Response:
    data = _object(ctx.data, "login")
    username, password = data.get("username"), data.get("password")
    problems = [
        Problem(k, "is required (text)")
        for k, v in (("username", username), ("password", password))
        if not isinstance(v, str) or not v
    ]
    if problems:
        return ctx.error(422, "Give a username and a password.", problems)
    got = authenticate_user(ctx, str(username).strip()[:100], str(password)[:1000])
    if isinstance(got, int):
        resp = ctx.error(429, too_many(got))
        resp.headers["Retry-After"] = str(got)
        return resp
    if got is None:
        return ctx.error(401, LOGIN_FAILED)
    me = ctx.user
    assert me is not None
    return ctx.json({"csrf": ctx.web.csrf(), "user": me.to_dict()})


@endpoint(api=True)
def api_logout(ctx: Ctx) -> Response:
    ctx.audit("logout", f"user {ctx.username}")
    ctx.web.log_out()
    return ctx.json({"ok": True})


@endpoint(api=True)
def api_stories(ctx: Ctx) -> Response:
    status = ctx.query("status")
    if status and status not in STATUSES:
        raise BadRequest(f"Unknown status {show(status)}: use one of {', '.join(STATUSES)}.")
    limit = parse_int(ctx.query("limit"), "limit", lo=1, hi=500, default=PAGE)
    offset = parse_int(ctx.query("offset"), "offset", lo=0, hi=10**9, default=0)
    rows = ctx.cms.list_stories(
        ctx.query("q")[:200], status=status or None, limit=limit, offset=offset
    )
    return ctx.json({"stories": rows})


@endpoint(api=True)
def api_create(ctx: Ctx) -> Response:
    story = _object(ctx.data, "story")
    s = ctx.cms.create_story(story, user=ctx.username)
    ctx.audit("story.create", f"story {s.id}", f"revision {s.revision}")
    return ctx.json(_saved_json(s), 201)


@endpoint(api=True)
def api_story(ctx: Ctx, story_id: str) -> Response:
    return ctx.json(_story_json_of(ctx.ed, path_id(story_id, "story")))


@endpoint(api=True)
def api_put(ctx: Ctx, story_id: str) -> Response:
    sid = path_id(story_id, "story")
    data = _object(ctx.data, "the change")
    base = _base(data, required=True)
    assert base is not None
    story = data.get("story")
    if not isinstance(story, dict):
        p = Problem("story", "is required: the story as an object")
        raise BadRequest("Send the story as an object under 'story'.", 422, [p])
    s = ctx.cms.save_story(sid, story, base_revision=base, user=ctx.username)
    ctx.audit("story.save", f"story {sid}", f"revision {s.revision}")
    return ctx.json(_saved_json(s))


@endpoint(api=True)
def api_publish(ctx: Ctx, story_id: str) -> Response:
    sid = path_id(story_id, "story")
    data = ctx.data if ctx.data is not None else {}
    if not isinstance(data, dict):
        raise BadRequest(
            "The request must be a JSON object.", 422, [Problem("request", "must be an object")]
        )
    s = ctx.cms.publish(sid, user=ctx.username, base_revision=_base(data, required=False))
    ctx.audit("story.publish", f"story {sid}", f"revision {s.revision}")
    return ctx.json(_saved_json(s))


api_status = endpoint(api=True)(story_status)
