"""The editor app assembled: its routes and :func:`create_editor_app`."""

from __future__ import annotations

import contextlib
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ...errors import InputError
from ..media import media_routes
from ..openapi import editor_openapi
from .accounts import account_routes
from .admin import dead_letter_retry, dead_letters_page
from .api import (
    api_create,
    api_login,
    api_logout,
    api_publish,
    api_put,
    api_status,
    api_stories,
    api_story,
)
from .assets import asset_page, asset_save, asset_upload, assets_page, lookup_people, lookup_titles
from .choosers import choose_json
from .explore import PATH as EXPLORE
from .explore import explorer_app
from .layouts import layout_create, layout_new, layout_page, layout_save, layouts_page
from .login import login_page, login_post, logout_post
from .middleware import LimitBody, SecurityHeaders, http_error, too_large
from .preview import story_preview
from .requests import BodyTooLarge
from .revisions import story_compare
from .state import HERE, Editor, EditorConfig
from .stories import (
    story_create,
    story_list,
    story_new,
    story_page,
    story_restore,
    story_revision,
    story_revisions,
    story_save,
    story_status_json,
)


def _routes(config: EditorConfig) -> list[BaseRoute]:
    get, post, put = ["GET"], ["POST"], ["PUT"]
    return [
        Route("/login", login_page, methods=get),
        Route("/login", login_post, methods=post),
        Route("/logout", logout_post, methods=post),
        Route("/", story_list, methods=get),
        Route("/stories/new", story_new, methods=get),
        Route("/stories/new", story_create, methods=post),
        Route("/stories/{story_id}", story_page, methods=get),
        Route("/stories/{story_id}", story_save, methods=post),
        Route("/stories/{story_id}/status.json", story_status_json, methods=get),
        Route("/stories/{story_id}/revisions", story_revisions, methods=get),
        Route("/stories/{story_id}/revisions/compare", story_compare, methods=get),
        Route("/stories/{story_id}/revisions/{rev}", story_revision, methods=get),
        Route("/stories/{story_id}/revisions/{rev}/restore", story_restore, methods=post),
        Route("/stories/{story_id}/preview", story_preview, methods=get),
        Route("/choose/{kind}.json", choose_json, methods=get),
        Route("/lookup/titles", lookup_titles, methods=get),
        Route("/lookup/people", lookup_people, methods=get),
        Route("/assets", assets_page, methods=get),
        Route("/assets", asset_upload, methods=post),
        Route("/assets/{asset_id}", asset_page, methods=get),
        Route("/assets/{asset_id}", asset_save, methods=post),
        Route("/layouts", layouts_page, methods=get),
        Route("/layouts/new", layout_new, methods=get),
        Route("/layouts/new", layout_create, methods=post),
        Route("/layouts/{layout_id}", layout_page, methods=get),
        Route("/layouts/{layout_id}", layout_save, methods=post),
        Route("/admin/dead-letters", dead_letters_page, methods=get),
        Route("/admin/dead-letters/{event_id}/retry", dead_letter_retry, methods=post),
        *account_routes(),
        Route("/api/login", api_login, methods=post),
        Route("/api/logout", api_logout, methods=post),
        Route("/api/stories", api_stories, methods=get),
        Route("/api/stories", api_create, methods=post),
        Route("/api/stories/{story_id}", api_story, methods=get),
        Route("/api/stories/{story_id}", api_put, methods=put),
        Route("/api/stories/{story_id}/publish", api_publish, methods=post),
        Route("/api/stories/{story_id}/status", api_status, methods=get),
        Route("/api/openapi.json", editor_openapi, methods=get),
        *media_routes(config.store, config.media),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
        *([Mount(EXPLORE, app=explorer_app(config.dataset))] if config.dataset else []),
    ]


def create_editor_app(config: EditorConfig) -> Starlette:
    """The editor app over ``config.store`` (see the module's contracts)."""
    if not isinstance(config.secret_key, str) or len(config.secret_key) < 8:
        raise InputError("the editor's secret_key must have at least 8 characters")
    editor = Editor(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        await run_in_threadpool(editor.start)
        try:
            yield
        finally:
            await run_in_threadpool(editor.stop)

    middleware = [
        Middleware(SecurityHeaders, img_src=editor.img_src),
        Middleware(LimitBody, limit=config.max_body_bytes, upload_limit=config.max_upload_bytes),
    ]
    app = Starlette(
        routes=_routes(config),
        middleware=middleware,
        exception_handlers={HTTPException: http_error, BodyTooLarge: too_large},
        lifespan=lifespan,
    )
    app.state.editor = editor
    return app
