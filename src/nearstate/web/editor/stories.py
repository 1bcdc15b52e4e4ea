"""Writing stories: the list, the edit page and its save / publish / schedule /
unpublish actions, revisions and restoring one, and the ingestion status of a save.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

from starlette.responses import Response

from ...content.cms import STATUSES, EditConflict, InvalidContent, NotFound
from ...content.rules import BLOCK_KINDS, Problem, check_story
from .choosers import block_field, describe_story, pick_list
from .forms import (
    ACTIONS,
    MAX_REVISION,
    PAGE,
    BadRequest,
    dtlocal,
    form_field,
    parse_int,
    parse_move,
    parse_story_form,
    path_id,
    show,
    story_form,
    utc,
    when,
    where_problems,
)
from .requests import Ctx, endpoint


@endpoint()
def story_list(ctx: Ctx) -> Response:
    q = ctx.query("q")[:200]
    status = ctx.query("status")
    if status and status not in STATUSES:
        raise BadRequest(f"Unknown status {show(status)}: use one of {', '.join(STATUSES)}.")
    page = parse_int(ctx.query("page"), "page", lo=1, hi=100_000, default=1)
    rows = ctx.cms.list_stories(q, status=status or None, limit=PAGE + 1, offset=(page - 1) * PAGE)
    more = len(rows) > PAGE

    def link(p: int) -> str:
        args = {k: v for k, v in (("q", q), ("status", status), ("page", str(p))) if v}
        return "/?" + urlencode(args)

    return ctx.render(
        "stories.html",
        stories=rows[:PAGE],
        q=q,
        status=status,
        statuses=STATUSES,
        page=page,
        prev_link=link(page - 1) if page > 1 else None,
        next_link=link(page + 1) if more else None,
    )


def _render_story(
    ctx: Ctx,
    status: int,
    *,
    sid: int | None,
    values: Mapping[str, Any],
    base: int | None,
    problems: Iterable[Problem] = (),
    conflict: EditConflict | None = None,
    message: str | None = None,
    notice: str | None = None,
    saved: int | None = None,
    sched: Mapping[str, str] | None = None,
    picks: Mapping[str, Any] | None = None,
) -> Response:
    row = ctx.cms.story(sid) if sid is not None else None
    problems = list(problems)
    block_problems, other = where_problems(problems, "body")
    rev_status = None
    if row is not None:
        want = saved or row["revision"]
        try:
            rev_status = ctx.cms.ingest_status(row["id"], want)
        except NotFound:
            rev_status = ctx.cms.ingest_status(row["id"])
    if sched is None:
        sched = {
            "publish_at": dtlocal(row["publish_at"]) if row else "",
            "unpublish_at": dtlocal(row["unpublish_at"]) if row else "",
        }
    return ctx.render(
        "story_edit.html",
        status,
        sid=sid,
        row=row,
        form=values,
        base=base,
        problems=problems,
        other_problems=other,
        block_problems=block_problems,
        conflict=conflict,
        message=message,
        notice=notice,
        saved=saved,
        rev_status=rev_status,
        sched=sched,
        block_kinds=BLOCK_KINDS,
        poll=status == 200,
        chosen=describe_story(ctx.ed, values),
        picks=picks,
        preview_rev=(saved or row["revision"]) if row is not None else None,
    )


@endpoint()
def story_new(ctx: Ctx) -> Response:
    return _render_story(ctx, 200, sid=None, values=story_form({}), base=None)


@endpoint()
def story_page(ctx: Ctx, story_id: str) -> Response:
    sid = path_id(story_id, "story")
    row = ctx.cms.story(sid)
    saved = None
    if ctx.query("saved"):
        saved = parse_int(ctx.query("saved"), "saved", lo=1, hi=MAX_REVISION)
        ctx.cms.ingest_status(sid, saved)  # NotFound for a revision it does not have
    return _render_story(
        ctx, 200, sid=sid, values=story_form(row["data"]), base=row["revision"], saved=saved
    )


@endpoint()
def story_create(ctx: Ctx) -> Response:
    return _story_post(ctx, None)


@endpoint()
def story_save(ctx: Ctx, story_id: str) -> Response:
    return _story_post(ctx, path_id(story_id, "story"))


def _story_post(ctx: Ctx, sid: int | None) -> Response:
    form = ctx.form
    assert form is not None
    op = form_field(form, "op")
    if op:
        return _redraw(ctx, sid, form, op)
    action = form_field(form, "action") or "save"
    if action not in ACTIONS:
        raise BadRequest(f"Unknown action {show(action)}: use one of {', '.join(ACTIONS)}.")
    values, data, problems = parse_story_form(form)
    row = None
    base = None
    if sid is not None:
        row = ctx.cms.story(sid)
        base = parse_int(
            form_field(form, "base_revision"), "the form's base revision", lo=1, hi=MAX_REVISION
        )
    sched = {
        "publish_at": form_field(form, "publish_at"),
        "unpublish_at": form_field(form, "unpublish_at"),
    }
    publish_at = unpublish_at = None
    if action == "schedule":
        publish_at, p1 = utc(sched["publish_at"], "publish_at")
        unpublish_at, p2 = utc(sched["unpublish_at"], "unpublish_at")
        problems += p1 + p2
    again = functools.partial(_render_story, ctx, sid=sid, values=values, sched=sched)
    if problems:
        return again(422, base=base, problems=problems, message="Not saved: fix these first.")
    user = ctx.username
    saved_rev: int | None = None
    try:
        if sid is None:
            s = ctx.cms.create_story(data, user=user)
            sid, rev = int(s.id), s.revision
            saved_rev = rev
            ctx.audit("story.create", f"story {sid}", f"revision {rev}")
            again = functools.partial(_render_story, ctx, sid=sid, values=values, sched=sched)
        else:
            assert row is not None and base is not None
            unchanged = check_story(data)[0] == row["data"] and base == row["revision"]
            if action != "save" and unchanged:
                rev = base
            else:
                s = ctx.cms.save_story(sid, data, base_revision=base, user=user)
                rev = saved_rev = s.revision
                ctx.audit("story.save", f"story {sid}", f"revision {rev}")
    except InvalidContent as e:
        return again(422, base=base, problems=e.problems, message="Not saved: fix these first.")
    except EditConflict as e:
        return again(409, base=base, conflict=e)
    done = ""
    try:
        if action == "publish":
            ctx.cms.publish(sid, user=user, base_revision=rev)
            done = f"Published revision {rev}."
            ctx.audit("story.publish", f"story {sid}", f"revision {rev}")
        elif action == "schedule":
            ctx.cms.schedule(
                sid,
                user=user,
                publish_at=publish_at,
                unpublish_at=unpublish_at,
                base_revision=rev,
            )
            parts = []
            if publish_at is not None:
                parts.append(f"to be published at {when(publish_at)}")
            if unpublish_at is not None:
                parts.append(f"to be unpublished at {when(unpublish_at)}")
            done = "Scheduled " + " and ".join(parts) + "."
            ctx.audit("story.schedule", f"story {sid}", f"revision {rev}, " + ", ".join(parts))
        elif action == "unpublish":
            ctx.cms.unpublish(sid, user=user)
            done = "Unpublished: it is off the live site."
            ctx.audit("story.unpublish", f"story {sid}")
    except InvalidContent as e:
        what = {"publish": "published", "schedule": "scheduled"}.get(action, "changed")
        msg = f"Not {what}: fix these first."
        if saved_rev:
            msg = f"Saved as revision {saved_rev}, but not {what}: fix these first."
        return again(422, base=rev, problems=e.problems, message=msg, saved=saved_rev)
    except EditConflict as e:
        return again(409, base=rev, conflict=e, saved=saved_rev)
    if action == "preview":
        return ctx.redirect(f"/stories/{sid}/preview?revision={rev}")
    if done:
        ctx.flash(done)
    return ctx.redirect(f"/stories/{sid}" + (f"?saved={saved_rev}" if saved_rev else ""))


def _redraw(ctx: Ctx, sid: int | None, form: Any, op: str) -> Response:
    """The form's buttons that change the form without saving it (they work without
    JavaScript): a block's "move up" / "move down" (``op`` ``up:N`` / ``down:N``) and a
    chooser's "Find" (``find:FIELD``), which shows a pick list of what matched."""
    move = parse_move(op)
    find = op[5:] if op.startswith("find:") else None
    if move is None and find is None:
        raise BadRequest(f"Unknown button {show(op)}.")
    in_block = block_field(find) if find is not None else None
    keep = in_block[0] if in_block else None  # a new block's chooser: keep the block
    values, _, problems = parse_story_form(form, move, keep)
    base = None
    if sid is not None:
        ctx.cms.story(sid)  # 404 first
        base = parse_int(
            form_field(form, "base_revision"), "the form's base revision", lo=1, hi=MAX_REVISION
        )
    picks = None
    if find is not None:
        if in_block:
            # the block's number in the form it was typed in, to its number now
            src = values["block_from"]
            if in_block[0] not in src:
                raise BadRequest(
                    f'Block {in_block[0] + 1} is marked "remove" or is not in the form.'
                )
            picks = pick_list(ctx.ed, form, find)
            picks["field"] = f"block-{src.index(in_block[0])}-{in_block[1]}"
        else:
            picks = pick_list(ctx.ed, form, find)
        n = len(picks["items"])
        message = (
            f"{n} found for {show(picks['q'])}: pick one below, then save."
            if n
            else f"Nothing found for {show(picks['q'])}."
        )
    else:
        message = "Moved. Not saved yet: save to keep the new order."
    sched = {k: form_field(form, k) for k in ("publish_at", "unpublish_at")}
    return _render_story(
        ctx, 200, sid=sid, values=values, base=base, problems=problems, sched=sched,
        notice=message, picks=picks,
    )  # fmt: skip


def story_status(ctx: Ctx, story_id: str) -> Response:
    sid = path_id(story_id, "story")
    rev = None
    if ctx.query("revision"):
        rev = parse_int(ctx.query("revision"), "revision", lo=1, hi=MAX_REVISION)
    return ctx.json(ctx.cms.ingest_status(sid, rev))


story_status_json = endpoint(api=True)(story_status)


@endpoint()
def story_revisions(ctx: Ctx, story_id: str) -> Response:
    sid = path_id(story_id, "story")
    row = ctx.cms.story(sid)
    revisions = ctx.cms.revisions(sid)
    return ctx.render("revisions.html", row=row, revisions=revisions)


def _render_revision(
    ctx: Ctx, status: int, sid: int, rev: int, *, conflict: EditConflict | None = None
) -> Response:
    row = ctx.cms.story(sid)
    r = ctx.cms.revision(sid, rev)
    return ctx.render("revision.html", status, row=row, rev=r, data=r["data"], conflict=conflict)


@endpoint()
def story_revision(ctx: Ctx, story_id: str, rev: str) -> Response:
    sid = path_id(story_id, "story")
    n = path_id(rev, "revision")
    return _render_revision(ctx, 200, sid, n)


@endpoint()
def story_restore(ctx: Ctx, story_id: str, rev: str) -> Response:
    sid = path_id(story_id, "story")
    n = path_id(rev, "revision")
    base = parse_int(
        form_field(ctx.form, "base_revision"), "the form's base revision", lo=1, hi=MAX_REVISION
    )
    ctx.cms.revision(sid, n)  # 404 before anything else
    try:
        saved = ctx.cms.restore(sid, n, base_revision=base, user=ctx.username)
    except EditConflict as e:
        return _render_revision(ctx, 409, sid, n, conflict=e)
    ctx.audit("story.restore", f"story {sid}", f"revision {n} as revision {saved.revision}")
    ctx.flash(f"Revision {n} restored as revision {saved.revision}.")
    return ctx.redirect(f"/stories/{sid}?saved={saved.revision}")
