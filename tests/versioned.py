"""Record types and model helpers shared by the version, writer and read-after-write
tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nearstate import Field, FieldType, Ref, Schema, TypeDef, record

ITEM = Schema(
    [
        TypeDef(
            "Item",
            (
                Field("id", FieldType("int")),
                Field("name", FieldType("str")),
                Field("score", FieldType("float", nullable=True)),
                Field("tags", FieldType("list", item=FieldType("str"))),
            ),
            key=("id",),
        )
    ]
)


@record(key="id")
@dataclass
class Person:
    id: int
    name: str


@record(key="id")
@dataclass
class Article:
    id: str
    title: str
    author: Ref[Person]
    editors: list[Ref[Person]]


Model = dict[int, dict[str, Any]]


def item(i: int, name: str | None = None, score: float | None = None, tags=()) -> dict:
    return {"id": i, "name": f"item {i}" if name is None else name, "score": score,
            "tags": list(tags)}  # fmt: skip
