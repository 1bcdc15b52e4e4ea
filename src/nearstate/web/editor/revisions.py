"""Comparing two revisions of a story side by side (``GET
/stories/{id}/revisions/compare?a=N&b=M``): fields, blocks and words, from
:func:`nearstate.content.revdiff.diff_stories`, with the older one's restore button on the
page (restoring stays one click)."""

from __future__ import annotations

from starlette.responses import Response

from ...content.cms import NotFound
from ...content.revdiff import diff_stories
from .forms import MAX_REVISION, parse_int, path_id
from .requests import Ctx, endpoint


@endpoint()
def story_compare(ctx: Ctx, story_id: str) -> Response:
    """Revision ``a`` on the left, ``b`` on the right; by default the revision before the
    current one against the current one."""
    sid = path_id(story_id, "story")
    row = ctx.cms.story(sid)
    current = int(row["revision"])
    b = parse_int(ctx.query("b"), "revision b", lo=1, hi=MAX_REVISION, default=current)
    a = parse_int(ctx.query("a"), "revision a", lo=1, hi=MAX_REVISION, default=max(1, b - 1))
    for n in (a, b):
        if n > current:
            raise NotFound(f"story {sid} has no revision {n} (its newest is {current})")
    old, new = ctx.cms.revision(sid, a), ctx.cms.revision(sid, b)
    diff = diff_stories(old["data"], new["data"])
    return ctx.render(
        "revision_diff.html",
        row=row,
        a=old,
        b=new,
        diff=diff,
        counts=diff.counts,
        revisions=[r["revision"] for r in ctx.cms.revisions(sid)],
    )
