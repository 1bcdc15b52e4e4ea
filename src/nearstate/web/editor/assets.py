"""Images and lookups: uploading and describing assets, and finding titles and people
to reference from a story.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.datastructures import UploadFile
from starlette.responses import Response

from ...content.media import (
    AssetNotFound,
    get_asset,
    store_upload,
    update_asset,
)
from ...errors import InputError
from .choosers import image_item
from .forms import MAX_ID, PAGE, clean, form_field, parse_int
from .requests import Ctx, endpoint


def _wants_json(ctx: Ctx) -> bool:
    accept = ctx.request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def _lookup(ctx: Ctx, kind: str) -> Response:
    q = ctx.query("q")[:200]
    words = q.split()
    if len(words) == 1 and words[0].isdigit() and (len(words[0]) > 19 or int(words[0]) > MAX_ID):
        rows: list[dict[str, Any]] = []
    elif kind == "titles":
        rows = ctx.cms.find_titles(q)
    else:
        rows = ctx.cms.find_people(q)
    if ctx.query("format") == "json" or _wants_json(ctx):
        return ctx.json({kind: rows})
    return ctx.render("lookup.html", kind=kind, q=q, rows=rows)


@endpoint()
def lookup_titles(ctx: Ctx) -> Response:
    return _lookup(ctx, "titles")


@endpoint()
def lookup_people(ctx: Ctx) -> Response:
    return _lookup(ctx, "people")


def _render_assets(
    ctx: Ctx,
    status: int,
    *,
    error: str | None = None,
    alt: str = "",
    fx: str = "0.5",
    fy: str = "0.5",
) -> Response:
    page = parse_int(ctx.query("page"), "page", lo=1, hi=100_000, default=1)
    rows = ctx.cms.assets(limit=PAGE + 1, offset=(page - 1) * PAGE)
    return ctx.render(
        "assets.html",
        status,
        assets=rows[:PAGE],
        page=page,
        prev_link=f"/assets?page={page - 1}" if page > 1 else None,
        next_link=f"/assets?page={page + 1}" if len(rows) > PAGE else None,
        error=error,
        alt=alt,
        fx=fx,
        fy=fy,
    )


@endpoint()
def assets_page(ctx: Ctx) -> Response:
    return _render_assets(ctx, 200)


@endpoint()
def asset_upload(ctx: Ctx) -> Response:
    form = ctx.form
    assert form is not None
    alt, fx, fy = form_field(form, "alt"), form_field(form, "focal_x"), form_field(form, "focal_y")
    # a chooser uploads with Accept: application/json and gets the new image as its item
    as_json = _wants_json(ctx)

    def again(error: str) -> Response:
        if as_json:
            return ctx.json({"error": error}, 422)
        return _render_assets(ctx, 422, error=error, alt=alt, fx=fx, fy=fy)

    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return again(error="Choose an image file to upload.")
    data = upload.file.read()
    try:
        row = store_upload(
            ctx.ed.store,
            ctx.ed.config.media,
            data,
            filename=clean(upload.filename or ""),
            alt=alt,
            focal=(fx or "0.5", fy or "0.5"),
            user=ctx.username,
        )
    except InputError as e:
        return again(error=f"Not uploaded: {e}")
    ctx.audit("asset.upload", f"asset {row['id']}", str(row["filename"]))
    if as_json:
        return ctx.json(image_item(ctx.ed, row), 201)
    ctx.flash(f"Uploaded {row['filename']} as {row['id']}.")
    return ctx.redirect(f"/assets/{row['id']}")


def _render_asset(
    ctx: Ctx,
    status: int,
    asset_id: str,
    *,
    error: str | None = None,
    values: Mapping[str, str] | None = None,
) -> Response:
    row = get_asset(ctx.ed.store, asset_id)
    used = ctx.cms.stories_showing(row["id"])
    if values is None:
        values = {"alt": row["alt"], "focal_x": str(row["focal_x"]), "focal_y": str(row["focal_y"])}
    return ctx.render("asset.html", status, asset=row, used=used, error=error, values=values)


@endpoint()
def asset_page(ctx: Ctx, asset_id: str) -> Response:
    return _render_asset(ctx, 200, asset_id)


@endpoint()
def asset_save(ctx: Ctx, asset_id: str) -> Response:
    values = {k: form_field(ctx.form, k) for k in ("alt", "focal_x", "focal_y")}
    row = get_asset(ctx.ed.store, asset_id)  # 404 first
    fx = values["focal_x"].strip() or str(row["focal_x"])  # empty: as it was
    fy = values["focal_y"].strip() or str(row["focal_y"])
    try:
        update_asset(ctx.ed.store, asset_id, alt=values["alt"], focal=(fx, fy))
    except AssetNotFound:
        raise
    except InputError as e:
        return _render_asset(ctx, 422, asset_id, error=f"Not saved: {e}", values=values)
    ctx.audit("asset.edit", f"asset {asset_id}")
    n = ctx.cms.asset_changed(asset_id)
    ctx.flash(
        "Saved." + (f" {n} stories or titles showing this image will be updated." if n else "")
    )
    return ctx.redirect(f"/assets/{asset_id}")
