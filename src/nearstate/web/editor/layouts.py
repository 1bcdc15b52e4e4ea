"""Home page layouts: their list, and making or editing one (rows of stories, titles,
a tag or a genre).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from urllib.parse import quote

from starlette.responses import Response

from ...content.cms import EditConflict, InvalidContent
from ...content.rules import Problem
from .forms import (
    MAX_REVISION,
    ROW_KINDS,
    form_field,
    layout_form,
    parse_int,
    parse_layout_form,
    where_problems,
)
from .requests import Ctx, endpoint


@endpoint()
def layouts_page(ctx: Ctx) -> Response:
    return ctx.render("layouts.html", layouts=ctx.cms.layouts())


def _render_layout(
    ctx: Ctx,
    status: int,
    *,
    layout_id: str | None,
    name: str,
    rows: list[dict[str, str]],
    base: int | None,
    problems: Iterable[Problem] = (),
    conflict: EditConflict | None = None,
    new_id: str = "",
) -> Response:
    current = ctx.cms.layout(layout_id) if layout_id is not None else None
    problems = list(problems)
    row_problems, other = where_problems(problems, "rows")
    return ctx.render(
        "layout_edit.html",
        status,
        layout_id=layout_id,
        layout=current,
        name=name,
        rows=rows,
        base=base,
        problems=problems,
        other_problems=other,
        row_problems=row_problems,
        conflict=conflict,
        new_id=new_id,
        row_kinds=ROW_KINDS,
    )


@endpoint()
def layout_new(ctx: Ctx) -> Response:
    return _render_layout(ctx, 200, layout_id=None, name="", rows=[], base=None)


@endpoint()
def layout_page(ctx: Ctx, layout_id: str) -> Response:
    lay = ctx.cms.layout(layout_id)
    return _render_layout(
        ctx,
        200,
        layout_id=lay["id"],
        name=lay["name"],
        rows=layout_form(lay["data"]),
        base=int(lay["revision"]),
    )


@endpoint()
def layout_create(ctx: Ctx) -> Response:
    return _layout_post(ctx, None)


@endpoint()
def layout_save(ctx: Ctx, layout_id: str) -> Response:
    ctx.cms.layout(layout_id)  # 404 first
    return _layout_post(ctx, layout_id)


def _layout_post(ctx: Ctx, layout_id: str | None) -> Response:
    form = ctx.form
    assert form is not None
    name = form_field(form, "name")
    values, rows, problems = parse_layout_form(form)
    new_id = form_field(form, "id").strip()
    base = None
    if layout_id is not None:
        base = parse_int(
            form_field(form, "base_revision"), "the form's base revision", lo=1, hi=MAX_REVISION
        )
    elif new_id == "new":
        problems.append(Problem("id", "'new' is taken by the editor's own page; choose another"))
    again = functools.partial(
        _render_layout, ctx, layout_id=layout_id, name=name, rows=values, base=base, new_id=new_id
    )
    if problems:
        return again(422, problems=problems)
    try:
        saved = ctx.cms.save_layout(
            layout_id if layout_id is not None else new_id,
            name=name,
            rows=rows,
            user=ctx.username,
            base_revision=base,
        )
    except InvalidContent as e:
        return again(422, problems=e.problems)
    except EditConflict as e:
        return again(409, conflict=e)
    ctx.audit("layout.save", f"layout {saved.id}", f"revision {saved.revision}")
    ctx.flash(f"Layout saved as revision {saved.revision}.")
    return ctx.redirect(f"/layouts/{quote(str(saved.id))}")
