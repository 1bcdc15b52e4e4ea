"""The bookshop's views: reads from ``request.nearstate.state``, writes through
``request.nearstate`` (so the response carries the client's token)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from nearstate import DatasetError, Schema, record


@record(key="isbn")
@dataclass
class Book:
    isbn: str
    title: str
    author: str
    copies: int


SCHEMA = Schema.from_dataclasses(Book)


def _books(request: HttpRequest) -> Any:
    try:
        return request.nearstate.state.get("Book") or ()  # type: ignore[attr-defined]
    except DatasetError:  # nothing written yet
        return ()


def _json(request: HttpRequest, data: Any, status: int = 200) -> JsonResponse:
    response = JsonResponse(data, status=status)
    response["X-Worker-Pid"] = str(os.getpid())
    return response


def books(request: HttpRequest) -> HttpResponse:
    rows = sorted((b.to_dict() for b in _books(request)), key=lambda b: b["isbn"])
    return _json(request, {"consistency": request.nearstate.consistency,  # type: ignore[attr-defined]
                           "books": rows})  # fmt: skip


@csrf_exempt
def book(request: HttpRequest, isbn: str) -> HttpResponse:
    if request.method == "PUT":
        try:
            data = json.loads(request.body)
            rec = {"isbn": isbn, "title": str(data["title"]), "author": str(data["author"]),
                   "copies": int(data["copies"])}  # fmt: skip
        except (ValueError, KeyError, TypeError):
            return _json(request, {"error": "send JSON with title, author and copies"}, 422)
        token = request.nearstate.upsert("Book", rec)  # type: ignore[attr-defined]
        return _json(request, {"isbn": isbn, "token": int(token)})
    table = _books(request)
    b = table.get(isbn) if table else None
    if b is None:
        return _json(request, {"error": f"no book {isbn!r}"}, 404)
    return _json(request, {"consistency": request.nearstate.consistency,  # type: ignore[attr-defined]
                           "book": b.to_dict()})  # fmt: skip
