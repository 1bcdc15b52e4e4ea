"""OpenAPI documents of the site's and the editor's JSON APIs, each served at
``/api/openapi.json`` by its app.

The site's states what each route answers: the page models of
:mod:`nearstate.content.pages` (the same dicts the HTML pages are built from), the search
results, and the errors (``{"error": ...}`` with 400, 404 or 503). The editor's covers
logging in and out, listing, reading, creating, saving and publishing stories and a
save's ingestion status, with its errors (``{"error", "problems"}``); a story's content
is an object whose rules the CMS checks (422 naming each problem), not the schema. It is kept beside
the routes rather than generated: Starlette routes carry no types, and a hand-written
schema is what the schemathesis run in tests/test_openapi.py holds the responses to.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response


def _n(kind: str, **extra: Any) -> dict[str, Any]:
    """A scalar that may be null (fields a record may leave empty)."""
    return {"type": kind, "nullable": True, **extra}


def _ref(name: str, *, nullable: bool = False) -> dict[str, Any]:
    if nullable:
        return {"allOf": [{"$ref": f"#/components/schemas/{name}"}], "nullable": True}
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "required": sorted(required),
        "properties": {**required, **(optional or {})},
    }


def _list(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


STR = {"type": "string"}
INT = {"type": "integer"}

# fmt: off
_SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": STR}),
    "Link": _obj({"name": STR, "url": STR}),
    "PersonLink": _obj({"id": INT, "name": _n("string"), "url": STR}),
    "Image": _obj({
        "alt": _n("string"), "width": _n("integer"), "height": _n("integer"),
        "focal": _list({"type": "number"}), "position": STR,
        "small": _n("string"), "medium": _n("string"), "large": _n("string"),
    }),
    "StoryCard": _obj({
        "type": {"type": "string", "enum": ["story"]}, "id": INT, "title": _n("string"),
        "url": STR, "excerpt": _n("string"), "image": _ref("Image", nullable=True),
        "tags": _list(_ref("Link")), "genres": _list(STR),
        "published_at": _n("string"), "reading_minutes": _n("integer"),
    }),
    "TitleCard": _obj({
        "type": {"type": "string", "enum": ["title"]}, "id": INT, "name": _n("string"),
        "year": _n("integer"), "url": STR, "genres": _list(STR),
        "image": _ref("Image", nullable=True),
    }),
    "Card": {"oneOf": [_ref("StoryCard"), _ref("TitleCard")]},
    "Row": _obj({"heading": _n("string"), "items": STR, "rule": _n("string"),
                 "cards": _list(_ref("Card"))}),
    "Block": _obj({"kind": STR}, {
        "text": _n("string"),
        "format": {"type": "string", "enum": ["markdown"], "description":
                   "a paragraph in rich text (a safe Markdown subset); absent for plain text"},
        "html": {"type": "string", "description": "a rich-text paragraph's HTML, sanitised "
                 "through the allowlist (links, emphasis, lists); absent for plain text"},
    }),
    "Home": _obj({
        "kind": {"type": "string", "enum": ["home"]},
        "hero": _ref("StoryCard", nullable=True),
        "rows": _list(_ref("Row")),
        "for_you": _ref("Row", nullable=True),
    }),
    "Story": _obj({
        "kind": {"type": "string", "enum": ["story"]}, "id": INT, "slug": STR, "url": STR,
        "title": _n("string"), "dek": _n("string"), "excerpt": _n("string"),
        "reading_minutes": _n("integer"), "revision": _n("integer"),
        "published_at": _n("string"), "updated_at": _n("string"),
        "hero": _ref("Image", nullable=True), "body": _list(_ref("Block")),
        "tags": _list(_ref("Link")), "genres": _list(_ref("Link")),
        "related": _list(_ref("TitleCard")), "authors": _list(_ref("PersonLink")),
        "more": _list(_ref("StoryCard")),
    }),
    "Title": _obj({
        "kind": {"type": "string", "enum": ["title"]}, "id": INT, "slug": STR, "url": STR,
        "name": _n("string"), "year": _n("integer"), "runtime": _n("integer"),
        "genres": _list(_ref("Link")), "directors": _list(_ref("PersonLink")),
        "writers": _list(_ref("PersonLink")), "cast": _list(_ref("PersonLink")),
        "language": _n("string"), "country": _n("string"), "awards": _n("string"),
        "poster": _ref("Image", nullable=True), "stories": _list(_ref("StoryCard")),
        "more_like_this": _list(_ref("TitleCard")),
    }),
    "Person": _obj({
        "kind": {"type": "string", "enum": ["person"]}, "id": INT, "slug": STR, "url": STR,
        "name": _n("string"), "titles": _list(_ref("TitleCard")),
        "stories": _list(_ref("StoryCard")),
    }),
    "Genre": _obj({
        "kind": {"type": "string", "enum": ["genre"]}, "name": STR, "url": STR,
        "count": INT, "page": INT, "pages": INT, "titles": _list(_ref("TitleCard")),
        "stories": _list(_ref("StoryCard")),
    }),
    "Tag": _obj({
        "kind": {"type": "string", "enum": ["tag"]}, "name": STR, "url": STR, "count": INT,
        "stories": _list(_ref("StoryCard")),
    }),
    "Search": _obj({
        "kind": {"type": "string", "enum": ["search"]}, "q": STR, "ready": {"type": "boolean"},
        "hits": _list(_obj({"type": {"type": "string", "enum": ["story", "title", "person"]},
                            "id": INT, "label": _n("string"), "url": STR},
                           {"excerpt": _n("string")})),
    }),
}
# fmt: on


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR = _ref("Error")
_STARTING = _json(_ERROR, "the site is starting: its copy of the content is still loading")


def _page(model: str, summary: str, params: list[dict[str, Any]], *, bad: bool = False,
          missing: str | None = None) -> dict[str, Any]:  # fmt: skip
    responses: dict[str, Any] = {"200": _json(_ref(model), summary), "503": _STARTING}
    if bad:
        responses["400"] = _json(_ERROR, "a query parameter is malformed (the error says which)")
    if missing:
        responses["404"] = _json(_ERROR, f"there is no such {missing}")
    return {"get": {"summary": summary, "operationId": f"get{model}", "parameters": params,
                    "responses": responses}}  # fmt: skip


_SLUG = {"name": "slug", "in": "path", "required": True, "schema": {"type": "string"}}


def site_document() -> dict[str, Any]:
    """The OpenAPI 3.0 document of the site's JSON API (a fresh copy)."""
    paths = {
        "/api/home": _page("Home", "the home page: hero, rows, 'For you'", []),
        "/api/search": _page("Search", "search stories, titles and people", [
            {"name": "q", "in": "query", "schema": {"type": "string"},
             "description": "the words to find (first 200 characters)"},
            {"name": "type", "in": "query", "schema": _list(
                {"type": "string", "enum": ["Story", "Title", "Person"]}),
             "style": "form", "explode": True},
        ], bad=True),
        "/api/stories/{slug}": _page("Story", "one published story", [_SLUG],
                                     missing="story"),
        "/api/titles/{slug}": _page("Title", "one title", [_SLUG], missing="title"),
        "/api/people/{slug}": _page("Person", "one person", [_SLUG], missing="person"),
        "/api/genres/{slug}": _page("Genre", "a genre's titles, a page at a time", [
            _SLUG, {"name": "page", "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 999_999},
                    "description": "the page number, from 1 (past the last: 404)"},
        ], bad=True, missing="genre or page"),
        "/api/tags/{slug}": _page("Tag", "a tag's stories", [_SLUG], missing="tag"),
    }  # fmt: skip
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "nearstate site",
            "version": "1",
            "description": "The public site's page models as JSON.",
        },
        "paths": paths,
        "components": {"schemas": copy.deepcopy(_SCHEMAS)},
    }


_SITE_BODY = json.dumps(site_document(), separators=(",", ":")).encode()


async def site_openapi(request: Request) -> Response:
    """``GET /api/openapi.json`` on the site."""
    return Response(_SITE_BODY, media_type="application/json",
                    headers={"Cache-Control": "public, max-age=300"})  # fmt: skip


# -- the editor's JSON API ------------------------------------------------------------------

# fmt: off
_EDITOR_SCHEMAS: dict[str, Any] = {
    "Problem": _obj({"where": STR, "message": STR}),
    "Error": _obj({"error": STR, "problems": _list(_ref("Problem"))}),
    "User": _obj({"id": INT, "username": STR, "display_name": _n("string"),
                  "role": {"type": "string", "enum": ["editor", "admin"]}}),
    "Login": _obj({"username": STR, "password": STR}),
    "LoggedIn": _obj({"csrf": STR, "user": _ref("User")}),
    "Block": {"type": "object", "required": ["kind"], "description": "a body block; its "
              "fields depend on its kind (paragraph, heading, quote, image, title, video)",
              "properties": {
                  "kind": STR, "text": STR,
                  "format": {"type": "string", "enum": ["plain", "markdown"],
                             "description": "a paragraph's text format: plain (the default, "
                             "stored without the key) or markdown, a safe subset (links, "
                             "emphasis, lists) sanitised on every page"},
                  "html": {"type": "string", "readOnly": True, "description":
                           "a rich-text paragraph's sanitised HTML, as the site's page "
                           "models carry it (never taken from a request)"}}},
    "StoryContent": {"type": "object", "description": "a story as the CMS takes it (title, "
                     "dek, body blocks, tags, related titles, authors...); its rules are "
                     "checked by the CMS, which answers 422 naming each problem",
                     "properties": {"body": _list(_ref("Block"))}},
    "Saved": _obj({"id": INT, "revision": INT, "event": _n("integer")}),
    "Change": _obj({"base_revision": {"type": "integer", "minimum": 1},
                    "story": _ref("StoryContent")}),
    "Publish": {"type": "object", "properties": {
        "base_revision": {"type": "integer", "minimum": 1}}},
    "Ingest": _obj({"status": STR, "errors": {"type": "array", "nullable": True,
                                              "items": _ref("Problem")},
                    "token": _n("integer")}, {"revision": _n("integer")}),
    "StoryRow": _obj({"id": INT, "slug": _n("string"), "title": _n("string"), "status": STR,
                      "revision": INT}),
    "Story": _obj({"id": INT, "slug": _n("string"), "title": _n("string"), "status": STR,
                   "revision": INT, "published_revision": _n("integer"),
                   "story": _ref("StoryContent"), "ingest": _ref("Ingest")}),
    "Stories": _obj({"stories": _list(_ref("StoryRow"))}),
    "Ok": _obj({"ok": {"type": "boolean"}}),
}
# fmt: on

_E = _ref("Error")


def _errors(*codes: int) -> dict[str, Any]:
    why = {
        400: "the request is malformed (not JSON, or a parameter out of range)",
        401: "not logged in: POST /api/login first",
        403: "the X-CSRF-Token header is missing or wrong",
        404: "there is no such story or revision",
        409: "the story was changed since base_revision",
        413: "the body is too large",
        415: "not sent as application/json",
        422: "the content has problems, each named in problems",
        429: "too many failed logins: wait Retry-After seconds",
        503: "the database is busy: try again",
    }
    return {str(c): _json(_E, why[c]) for c in codes}


def _body(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


_ID = {"name": "story_id", "in": "path", "required": True,
       "schema": {"type": "integer", "minimum": 1, "maximum": 2**53}}  # fmt: skip
_CSRF_NOTE = (" Send the header X-CSRF-Token: the csrf that POST /api/login returned "
              "(without it: 403, nothing done).")  # fmt: skip


def editor_document() -> dict[str, Any]:
    """The OpenAPI 3.0 document of the editor's JSON API (a fresh copy)."""
    auth = (400, 401, 503)
    change = (*auth, 403, 404, 409, 413, 415, 422)
    paths = {
        "/api/login": {"post": {
            "summary": "log in; the answer's csrf goes in X-CSRF-Token of every change",
            "operationId": "login", "requestBody": _body(_ref("Login")),
            "responses": {"200": _json(_ref("LoggedIn"), "logged in (a session cookie set)"),
                          **_errors(400, 401, 413, 415, 422, 429, 503)}}},
        "/api/logout": {"post": {
            "summary": "log out", "description": _CSRF_NOTE, "operationId": "logout",
            "responses": {"200": _json(_ref("Ok"), "logged out"), **_errors(*auth, 403)}}},
        "/api/stories": {
            "get": {"summary": "list stories, newest change first", "operationId": "stories",
                    "parameters": [
                        {"name": "q", "in": "query", "schema": STR},
                        {"name": "status", "in": "query", "allowEmptyValue": True, "schema": {
                            "type": "string",
                            "enum": ["draft", "scheduled", "published", "unpublished"]}},
                        {"name": "limit", "in": "query", "allowEmptyValue": True,
                         "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                        {"name": "offset", "in": "query", "allowEmptyValue": True,
                         "schema": {"type": "integer", "minimum": 0, "maximum": 10**9}}],
                    "responses": {"200": _json(_ref("Stories"), "the stories"),
                                  **_errors(*auth)}},
            "post": {"summary": "create a story (revision 1)", "operationId": "createStory",
                     "description": _CSRF_NOTE, "requestBody": _body(_ref("StoryContent")),
                     "responses": {"201": _json(_ref("Saved"), "created"),
                                   **_errors(*change)}}},
        "/api/stories/{story_id}": {
            "get": {"summary": "one story: its newest revision and its ingestion",
                    "operationId": "story", "parameters": [_ID],
                    "responses": {"200": _json(_ref("Story"), "the story"),
                                  **_errors(*auth, 404)}},
            "put": {"summary": "save a new revision", "operationId": "saveStory",
                    "description": _CSRF_NOTE, "parameters": [_ID],
                    "requestBody": _body(_ref("Change")),
                    "responses": {"200": _json(_ref("Saved"), "saved"), **_errors(*change)}}},
        "/api/stories/{story_id}/publish": {"post": {
            "summary": "publish the newest revision", "operationId": "publish",
            "description": _CSRF_NOTE, "parameters": [_ID],
            "requestBody": _body(_ref("Publish"), required=False),
            "responses": {"200": _json(_ref("Saved"), "published"), **_errors(*change)}}},
        "/api/stories/{story_id}/status": {"get": {
            "summary": "a revision's ingestion: pending, ok, invalid, failed, superseded",
            "operationId": "ingestStatus", "parameters": [_ID, {
                "name": "revision", "in": "query", "allowEmptyValue": True,
                "schema": {"type": "integer", "minimum": 1, "maximum": 2**31}}],
            "responses": {"200": _json(_ref("Ingest"), "the status"),
                          **_errors(*auth, 404)}}},
    }  # fmt: skip
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "nearstate editor",
            "version": "1",
            "description": "The editor's JSON API: stories, saves, publishing, ingestion.",
        },
        "paths": paths,
        "components": {"schemas": copy.deepcopy(_EDITOR_SCHEMAS)},
    }


_EDITOR_BODY = json.dumps(editor_document(), separators=(",", ":")).encode()


async def editor_openapi(request: Request) -> Response:
    """``GET /api/openapi.json`` on the editor."""
    return Response(_EDITOR_BODY, media_type="application/json",
                    headers={"Cache-Control": "public, max-age=300"})  # fmt: skip
