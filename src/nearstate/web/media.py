"""The media route: ``GET /media/{asset_id}/{size}.{ext}`` serves an asset's variant.

Images are content-addressed, so their responses are cached for a year as immutable.
Placeholders are drawn from their title's current name and year, which editors can
change, so they are cached for an hour and revalidated by ETag. Anything that is not an
asset id (``a-`` and 16 hex digits, or ``ph-`` and a number), a size of
:data:`~nearstate.content.media.SIZES` and that asset's extension is a plain 404: no other
path is ever looked at on disk.
"""

from __future__ import annotations

import hashlib
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..content.db import WriteStore
from ..content.media import (
    ASSET_ID,
    IMAGE_TYPES,
    SIZES,
    SVG_TYPE,
    AssetNotFound,
    MediaConfig,
    open_asset,
)

IMMUTABLE = "public, max-age=31536000, immutable"
PLACEHOLDER_CACHE = "public, max-age=3600"
EXTENSIONS = {SVG_TYPE: "svg", **dict(IMAGE_TYPES.values())}
NOSNIFF = {"X-Content-Type-Options": "nosniff"}
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"  # a drawing: nothing to load or run


def _not_found(what: str) -> Response:
    return PlainTextResponse(f"Not found: {what}\n", status_code=404, headers=NOSNIFF)


def _etag_matches(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag in tags


def media_routes(store: WriteStore, config: MediaConfig) -> list[Route]:
    """The route serving ``GET``/``HEAD /media/{asset_id}/{size}.{ext}`` from ``store``
    and ``config.root``: the variant with its content type, an ETag (304 when
    ``If-None-Match`` matches) and ``Cache-Control``; 404 with a plain message otherwise."""

    def media(request: Request) -> Response:
        asset_id: str = request.path_params["asset_id"]
        name: str = request.path_params["name"]
        size, dot, ext = name.partition(".")
        if not ASSET_ID.match(asset_id) or not dot or size not in SIZES:
            return _not_found(request.url.path)
        try:
            body, content_type = open_asset(store, config, asset_id, size)
        except AssetNotFound:
            return _not_found(request.url.path)
        if ext != EXTENSIONS.get(content_type):
            return _not_found(request.url.path)
        headers: dict[str, Any]
        if isinstance(body, bytes):
            etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
            headers = {
                "Cache-Control": PLACEHOLDER_CACHE,
                "ETag": etag,
                "Content-Security-Policy": SVG_CSP,
                **NOSNIFF,
            }
            if _etag_matches(request, etag):
                return Response(status_code=304, headers=headers)
            return Response(body, media_type=content_type, headers=headers)
        etag = f'"{asset_id}-{size}"'  # content-addressed: the id and size fix the bytes
        headers = {"Cache-Control": IMMUTABLE, "ETag": etag, **NOSNIFF}
        if _etag_matches(request, etag):
            return Response(status_code=304, headers=headers)
        try:
            stat = body.stat()
        except OSError:
            return _not_found(request.url.path)
        return FileResponse(body, media_type=content_type, headers=headers, stat_result=stat)

    return [Route("/media/{asset_id}/{name}", media, methods=["GET", "HEAD"], name="media")]
