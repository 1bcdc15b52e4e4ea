"""The site's and the editor's JSON APIs against their OpenAPI documents
(nearstate.web.openapi), with schemathesis: each app serves its document at
/api/openapi.json; requests generated from it (real slugs and story ids among random
ones, queries and bodies of any shape, valid and not) never get a 5xx, and every response
matches the document: its status is one the operation declares, its content type JSON,
its body the declared schema. Requests that break the schema are sent too (they must
not get a 5xx), but are not required to be refused: the apps ignore query parameters
they do not know, and the site reads ``type`` only when there is a query to search for.

The site is the one tests/test_site.py builds: real films, stories published through the
CMS and ingested, the site's own consumer following the dataset, started (lifespan) for
the whole module. The editor is tests/test_editor_web.py's (a seeded SQLite write store,
its ingestion worker and preview consumer running), logged in through POST /api/login;
the CSRF header it returned is sent with every request.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
)

import nearstate
from nearstate.content.db import open_store
from nearstate.content.media import MediaConfig
from nearstate.web.editor import EditorConfig, create_editor_app
from nearstate.web.openapi import editor_document, site_document
from test_editor_web import PASSWORD, seed
from test_site import build_world, wait_ready, wait_search

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

SCHEMA = schemathesis.openapi.from_dict(site_document())
SLUGS = ["zanzibar-nights", "quixotic-confessions", "beware-markup", "interviews", "comedy",
         "western", "drama", "vanishing-vortex", "xylophone-draft"]  # fmt: skip


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    world = build_world(tmp_path_factory.mktemp("openapi"), films=300)
    with TestClient(world.site()) as c:
        wait_ready(c, world.ds)
        wait_search(c)
        yield c
    world.store.close()


def test_the_site_serves_its_document(client: TestClient) -> None:
    got = client.get("/api/openapi.json")
    assert got.status_code == 200 and got.headers["content-type"] == "application/json"
    assert got.json() == site_document()
    assert set(got.json()["paths"]) == {
        "/api/home", "/api/search", "/api/stories/{slug}", "/api/titles/{slug}",
        "/api/people/{slug}", "/api/genres/{slug}", "/api/tags/{slug}",
    }  # fmt: skip


def test_the_document_describes_real_pages(client: TestClient) -> None:
    """The schema is not vacuous: real pages validate, and a changed one does not."""
    import jsonschema_rs

    doc = site_document()
    defs = doc["components"]["schemas"]
    for path, model in (("/api/home", "Home"), ("/api/stories/zanzibar-nights", "Story"),
                        ("/api/tags/interviews", "Tag")):  # fmt: skip
        page = client.get(path).json()
        schema = {"$ref": f"#/components/schemas/{model}", "components": {"schemas": defs}}
        v = jsonschema_rs.validator_for(_nullable_to_types(schema))
        assert v.is_valid(page), path
        broken = {**page, "kind": 7}
        assert not v.is_valid(broken), path


def _nullable_to_types(schema: Any) -> Any:
    """OpenAPI 3.0's ``nullable`` as JSON Schema's ``"null"`` type (for a plain validator)."""
    if isinstance(schema, list):
        return [_nullable_to_types(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _nullable_to_types(v) for k, v in schema.items() if k != "nullable"}
    if schema.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


@SCHEMA.parametrize()
@SCHEMA.given(data=st.data())
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_site_api_answers_as_documented(case: Any, client: TestClient, data: Any) -> None:
    if "slug" in (case.path_parameters or {}) and data.draw(st.booleans()):
        case.path_parameters["slug"] = data.draw(st.sampled_from(SLUGS))
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    response = client.request(kwargs["method"], kwargs["url"], params=kwargs.get("params"),
                              headers=kwargs.get("headers"))  # fmt: skip
    assert response.status_code < 500, (kwargs, response.text)
    case.validate_response(response, excluded_checks=[negative_data_rejection])


# -- the editor ------------------------------------------------------------------------------

EDITOR = schemathesis.openapi.from_dict(editor_document())
WRITES = {("POST", "/api/stories"), ("PUT", "/api/stories/{story_id}"),
          ("POST", "/api/stories/{story_id}/publish")}  # fmt: skip


@pytest.fixture(scope="module")
def editor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str, int]]:
    """A logged-in client of the editor, its CSRF token, and a story's id."""
    d = tmp_path_factory.mktemp("editor-openapi")
    store = open_store(d / "cms.db")
    seed(store)
    app = create_editor_app(EditorConfig(store=store, media=MediaConfig(root=d / "media"),
                                         secret_key="test-secret-key-0123456789",
                                         dataset=nearstate.open(d / "ds")))  # fmt: skip
    with TestClient(app) as c:
        login = EDITOR["/api/login"]["POST"].Case(body={"username": "ann", "password": PASSWORD})
        got = c.post("/api/login", json=login.body)
        login.validate_response(got)
        csrf = got.json()["csrf"]
        made = c.post("/api/stories", json={"title": "Real"}, headers={"X-CSRF-Token": csrf})
        assert made.status_code == 201, made.text
        yield c, csrf, made.json()["id"]
        out = EDITOR["/api/logout"]["POST"].Case()
        got = c.post("/api/logout", headers={"X-CSRF-Token": csrf})
        assert got.status_code == 200
        out.validate_response(got)
    store.close()


def test_the_editor_serves_its_document(editor: tuple[TestClient, str, int]) -> None:
    c = editor[0]
    got = c.get("/api/openapi.json")
    assert got.status_code == 200 and got.json() == editor_document()
    refused = c.post("/api/login", json={"username": "ann", "password": "wrong, wrong"})
    assert refused.status_code == 401
    EDITOR["/api/login"]["POST"].Case(body={"username": "ann", "password": "wrong, wrong"}
                                      ).validate_response(refused)  # fmt: skip


@EDITOR.exclude(path_regex="^/api/log").parametrize()
@EDITOR.given(data=st.data())
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_editor_api_answers_as_documented(
    case: Any, editor: tuple[TestClient, str, int], data: Any
) -> None:
    client, csrf, sid = editor
    if "story_id" in (case.path_parameters or {}) and data.draw(st.booleans()):
        case.path_parameters["story_id"] = sid
    kwargs = case.as_transport_kwargs(base_url="http://testserver",
                                      headers={"X-CSRF-Token": csrf})  # fmt: skip
    body = {k: kwargs[k] for k in ("json", "data", "content") if kwargs.get(k) is not None}
    if "data" in body and not isinstance(body["data"], dict):
        body["content"] = body.pop("data")
    response = client.request(kwargs["method"], kwargs["url"], params=kwargs.get("params"),
                              headers=kwargs.get("headers"), **body)  # fmt: skip
    assert response.status_code < 500, (kwargs, response.text)
    # a story's content rules are the CMS's, not the schema's: a schema-valid story may
    # still be refused (422, naming each problem), so acceptance is not checked on writes
    skip = [negative_data_rejection]
    if (case.method, case.path) in WRITES:
        skip.append(positive_data_acceptance)
    case.validate_response(response, excluded_checks=skip)
