"""Previewing a story: the page exactly as the site would build it from the saved
revision, read from the dataset once that revision is ingested (read-your-writes).
"""

from __future__ import annotations

import contextlib
import functools

from starlette.responses import Response

from ...content.cms import NotFound
from ...content.pages import story_model
from ...content.wait import wait_visible
from ...errors import NearstateError
from .forms import MAX_REVISION, parse_int, path_id
from .requests import Ctx, endpoint


@endpoint()
def story_preview(ctx: Ctx, story_id: str) -> Response:
    sid = path_id(story_id, "story")
    row = ctx.cms.story(sid)
    rev = parse_int(
        ctx.query("revision"), "revision", lo=1, hi=MAX_REVISION, default=row["revision"]
    )
    if rev > row["revision"]:
        raise NotFound(f"story {sid} has no revision {rev}")
    # pane=1: the page alone, for the frame beside the story's form
    template = "preview_pane.html" if ctx.query("pane") == "1" else "preview.html"
    page = functools.partial(ctx.render, template, row=row, revision=rev)
    consumer = ctx.ed.consumer
    if consumer is None:
        return page(
            503,
            state="unavailable",
            message="Preview is not available: this editor has no dataset to read drafts from.",
        )
    timeout = max(0.1, float(ctx.ed.config.preview_timeout))
    st = wait_visible(ctx.cms, consumer, sid, rev, timeout, ingested=ctx.ed.ingested)
    if st.step == "pending":
        return page(
            503,
            state="pending",
            message=f"Revision {rev} is not ready yet: it is still being prepared. "
            "Reload this page in a moment.",
        )
    if st.step == "invalid":
        return page(
            200,
            state="invalid",
            problems=st.errors,
            message=f"Revision {rev} cannot be previewed until these problems are fixed.",
        )
    if st.step == "superseded":
        return page(
            200,
            state="newer",
            newest=row["revision"],
            message=f"Revision {rev} was replaced by a newer revision before it was prepared, "
            "so there is no preview of it.",
        )
    if st.step not in ("visible", "behind"):
        return page(
            503,
            state="failed",
            problems=st.errors,
            message=f"Revision {rev} could not be prepared ({st.step}).",
        )
    state = st.state
    if st.step == "behind":
        return page(
            503,
            state="pending",
            message=f"Revision {rev} is not ready yet: the preview copy has not caught up. "
            "Reload this page in a moment.",
        )
    rec = None
    with contextlib.suppress(KeyError, NearstateError):
        rec = state["DraftStory"].get(sid)
    if rec is None or int(rec.revision) < rev:
        have = "" if rec is None else f" (it holds revision {rec.revision})"
        return page(
            503,
            state="pending",
            message=f"Revision {rev} is not ready yet: the preview copy is older{have}. "
            "Reload this page in a moment.",
        )
    if int(rec.revision) > rev:
        return page(
            200,
            state="newer",
            newest=int(rec.revision),
            message=f"Revision {rev} has been replaced by revision {rec.revision}; "
            "only the newest revision can be previewed.",
        )
    return page(200, state="ok", draft=story_model(rec, kind="preview"), message=None)
