"""A notice board on Flask with nearstate as its read model (the WSGI middleware).

``POST /notices`` writes through the dataset's Writer; ``GET /notices`` and
``GET /notices/<id>`` read the state each worker holds. The response to a write carries a
signed token (cookie and ``X-Nearstate-Token``): the client's next request, to any worker,
reads its own write. ``X-Nearstate-Consistency: strong`` (or ``?consistency=strong``)
reads every write committed before the request.

    NEARSTATE_DATASET=/tmp/notices NEARSTATE_SECRET=change-me-please-16+ \
        gunicorn -w 2 app:app
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

from flask import Flask, abort, jsonify, request

from nearstate import DatasetError, Schema, record
from nearstate.frameworks import Reading, ReadModel
from nearstate.frameworks.wsgi import NearstateWSGIMiddleware


@record(key="id")
@dataclass
class Notice:
    id: str
    title: str
    body: str


model = ReadModel(
    os.environ["NEARSTATE_DATASET"],
    secret=os.environ.get("NEARSTATE_SECRET", "an example secret, change it"),
    schema=Schema.from_dataclasses(Notice),
    follow=os.environ.get("NEARSTATE_FOLLOW", "1") != "0",
)
app = Flask(__name__)
app.wsgi_app = NearstateWSGIMiddleware(app.wsgi_app, model=model)  # type: ignore[method-assign]


def reading() -> Reading:
    return request.environ["nearstate"]


def notices() -> Any:
    try:
        return reading().state.get("Notice") or ()
    except DatasetError:  # nothing written yet
        return ()


@app.after_request
def worker_header(response: Any) -> Any:
    response.headers["X-Worker-Pid"] = str(os.getpid())
    return response


@app.get("/notices")
def list_notices() -> Any:
    rows = sorted((n.to_dict() for n in notices()), key=lambda n: n["id"])
    return jsonify(consistency=reading().consistency, notices=rows)


@app.get("/notices/<notice_id>")
def show_notice(notice_id: str) -> Any:
    table = notices()
    n = table.get(notice_id) if table else None
    if n is None:
        abort(404)
    return jsonify(consistency=reading().consistency, notice=n.to_dict())


@app.post("/notices")
def post_notice() -> Any:
    data = request.get_json(silent=True)
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), str) and data[k].strip() for k in ("title", "body")
    ):
        return jsonify(error="send JSON with a non-empty 'title' and 'body'"), 422
    notice_id = str(data.get("id") or uuid.uuid4().hex[:12])
    token = reading().upsert("Notice", {"id": notice_id, "title": data["title"],
                                        "body": data["body"]})  # fmt: skip
    return jsonify(id=notice_id, token=int(token)), 201
