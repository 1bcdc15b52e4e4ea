"""The admin's outbox page: events that failed for good, and putting them back in the
queue.
"""

from __future__ import annotations

from starlette.responses import Response

from ...content import outbox
from .forms import path_id
from .requests import Ctx, endpoint


@endpoint(admin=True)
def dead_letters_page(ctx: Ctx) -> Response:
    return ctx.render(
        "dead_letters.html",
        events=outbox.dead_letters(ctx.ed.store),
        pending=outbox.pending_count(ctx.ed.store),
    )


@endpoint(admin=True)
def dead_letter_retry(ctx: Ctx, event_id: str) -> Response:
    eid = path_id(event_id, "event")
    if outbox.retry(ctx.ed.store, eid):
        ctx.audit("event.retry", f"event {eid}")
        ctx.flash(f"Event {eid} is queued again.")
    else:
        ctx.flash(f"Event {eid} is not in the dead-letter list (already retried?).")
    return ctx.redirect("/admin/dead-letters")
