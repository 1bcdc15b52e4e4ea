"""The record type and model helpers shared by the version tests."""

from __future__ import annotations

from typing import Any

from nearstate import Field, FieldType, Schema, TypeDef

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

Model = dict[int, dict[str, Any]]


def item(i: int, name: str | None = None, score: float | None = None, tags=()) -> dict:
    return {"id": i, "name": f"item {i}" if name is None else name, "score": score,
            "tags": list(tags)}  # fmt: skip
