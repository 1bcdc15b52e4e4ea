"""The editor's forms as plain functions of the submitted fields: no app, no request."""

from __future__ import annotations

from nearstate.content.rules import Problem
from nearstate.web.editor.forms import (
    form_field,
    layout_form,
    parse_layout_form,
    parse_story_form,
    story_form,
    where_problems,
)


def test_a_story_form_orders_blocks_by_position_and_drops_removed_and_empty_new_ones() -> None:
    form = {
        "title": "A title\r\nwith a NUL\x00",
        "slug": "a-title",
        "hero": "  ",
        "tags": "drama, comedy",
        "related": "3, 4;5",
        "authors": "",
        "block-0-kind": "paragraph",
        "block-0-text": "second",
        "block-0-pos": "2",
        "block-1-kind": "heading",
        "block-1-text": "first",
        "block-1-pos": "1",
        "block-2-kind": "paragraph",
        "block-2-text": "gone",
        "block-2-remove": "1",
        "block-3-kind": "quote",
        "block-3-new": "1",
    }
    values, data, problems = parse_story_form(form)
    assert problems == []
    assert values["title"] == "A title\nwith a NUL"
    assert [b["text"] for b in values["blocks"]] == ["first", "second"]
    assert data["hero"] is None
    assert data["related"] == ["3", "4", "5"] and data["authors"] == []
    assert data["body"] == [
        {"kind": "heading", "text": "first", "level": 2},
        {"kind": "paragraph", "text": "second"},
    ]


def test_a_bad_position_is_a_problem_of_the_form() -> None:
    _, _, problems = parse_story_form(
        {"title": "t", "block-0-kind": "paragraph", "block-0-text": "x", "block-0-pos": "nan"}
    )
    assert [p.where for p in problems] == ["block 1 position"]


def test_a_stored_story_round_trips_through_its_form() -> None:
    story = {
        "title": "T",
        "slug": "t",
        "tags": ["a", "b"],
        "related": [7],
        "body": [{"kind": "quote", "text": "q", "cite": "c"}],
    }
    values = story_form(story)
    assert values["tags"] == "a, b" and values["related"] == "7"
    form = {k: v for k, v in values.items() if k != "blocks"}
    for i, b in enumerate(values["blocks"]):
        form.update({f"block-{i}-{k}": v for k, v in b.items()})
    _, data, _ = parse_story_form(form)
    assert data["body"] == [{"kind": "quote", "text": "q", "cite": "c"}]


def test_a_layout_form_reads_rows_of_each_kind() -> None:
    rows_in = [
        {"heading": "New", "kind": "stories", "ids": [1, 2]},
        {"heading": "Drama", "kind": "genre", "genre": "Drama", "limit": 12},
    ]
    shown = layout_form({"rows": rows_in})
    form = {f"row-{i}-{k}": v for i, r in enumerate(shown) for k, v in r.items()}
    _, rows, problems = parse_layout_form(form)
    assert problems == []
    assert rows == [
        {"heading": "New", "kind": "stories", "ids": ["1", "2"]},
        {"heading": "Drama", "kind": "genre", "genre": "Drama", "limit": "12"},
    ]


def test_fields_and_problems_by_item() -> None:
    assert form_field(None, "x") == "" and form_field({"x": b"file"}, "x") == ""
    by, rest = where_problems(
        [Problem("body[2].text", "empty"), Problem("title", "missing")], "body"
    )
    assert list(by) == [2] and [p.where for p in rest] == ["title"]
