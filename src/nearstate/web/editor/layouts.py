"""Home page layouts: their list, and making or editing one (rows of stories, titles,
a tag or a genre).

The stories and titles a row shows are picked with the story form's choosers (kinds
``stories`` and ``titles``), and rows move by dragging (static/editor.js, the code the
story form's blocks use). Without JavaScript the same form works with buttons that redraw
it without saving: a row's ↑ / ↓ (``op`` ``up:N`` / ``down:N``) and a chooser's "Find"
(``find:row-N-stories``), which lists what matched to tick.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from starlette.responses import Response

from ...content.cms import EditConflict, InvalidContent
from ...content.rules import Problem
from .choosers import describe, search
from .forms import (
    MAX_REVISION,
    ROW_KINDS,
    BadRequest,
    form_field,
    layout_form,
    parse_int,
    parse_layout_form,
    parse_move,
    show,
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
    notice: str | None = None,
    picks: dict[str, Any] | None = None,
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
        chosen=_chosen(ctx, rows),
        notice=notice,
        picks=picks,
    )


def _chosen(ctx: Ctx, rows: list[dict[str, str]]) -> dict[str, list[dict[str, Any]]]:
    """Each row's chosen stories and titles, named, by chooser field (``row-N-stories``)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for n, r in enumerate(rows):
        for kind in ("stories", "titles"):
            ids = str(r.get(kind) or "").replace(";", ",").replace(" ", ",").split(",")
            out[f"row-{n}-{kind}"] = describe(ctx.ed, kind, ids)
    return out


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
    op = form_field(form, "op")
    if op:
        return _redraw(ctx, layout_id, form, op)
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


def _redraw(ctx: Ctx, layout_id: str | None, form: Any, op: str) -> Response:
    """The form again after a button that changes it without saving (no JavaScript):
    a row's ↑ / ↓, or a chooser's "Find" with a pick list of what matched."""
    move = parse_move(op)
    m = re.fullmatch(r"find:row-([0-9]{1,4})-(stories|titles)", op)
    if move is None and m is None:
        raise BadRequest(f"Unknown button {show(op)}.")
    keep = int(m.group(1)) if m else None  # a new row's chooser: keep the row
    values, _, problems = parse_layout_form(form, move, keep)
    base = None
    if layout_id is not None:
        base = parse_int(
            form_field(form, "base_revision"), "the form's base revision", lo=1, hi=MAX_REVISION
        )
    picks = None
    if m is not None:
        src = [int(v["from"]) for v in values]
        if keep not in src:
            raise BadRequest(f'Row {keep + 1} is marked "remove" or is not in the form.')
        kind = m.group(2)
        q = form_field(form, f"find-row-{keep}-{kind}")
        picks = {"field": f"row-{src.index(keep)}-{kind}", "kind": kind, "q": q,
                 "items": search(ctx.ed, kind, q)}  # fmt: skip
        n = len(picks["items"])
        said = show(q)
        notice = (
            f"{n} found for {said}: tick the ones to add, then save."
            if n
            else f"Nothing found for {said}."
        )
    else:
        notice = "Moved. Not saved yet: save to keep the new order."
    return _render_layout(
        ctx, 200, layout_id=layout_id, name=form_field(form, "name"), rows=values, base=base,
        problems=problems, new_id=form_field(form, "id").strip(), notice=notice, picks=picks,
    )  # fmt: skip
