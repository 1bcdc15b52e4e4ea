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


def test_a_move_button_swaps_a_block_with_its_neighbour_and_ids_come_one_per_field() -> None:
    from starlette.datastructures import FormData

    from nearstate.web.editor.forms import parse_move

    assert parse_move("up:3") == (3, -1) and parse_move("down:0") == (0, 1)
    assert parse_move("left:1") is None and parse_move("up:x") is None
    form = FormData(
        [
            ("related", "593"),
            ("related", "12, 40"),
            ("related", " "),
            ("authors", "7"),
            *[(f"block-{i}-{k}", v) for i, t in enumerate("abc")
              for k, v in (("kind", "paragraph"), ("text", t), ("pos", str(i + 1)))],
            ("block-3-kind", "image"),
            ("block-3-new", "1"),
        ]
    )  # fmt: skip
    values, data, problems = parse_story_form(form, parse_move("down:0"))
    assert problems == []
    assert [b["text"] for b in values["blocks"]] == ["b", "a", "c"]
    assert values["block_from"] == [1, 0, 2]  # each block's number in the form
    assert data["related"] == ["593", "12", "40"] and data["authors"] == ["7"]
    # the last cannot go further down; an unknown number moves nothing
    for op in ("down:2", "up:9"):
        assert [b["text"] for b in parse_story_form(form, parse_move(op))[0]["blocks"]] == [
            "a", "b", "c"
        ]  # fmt: skip
    # an empty new block is dropped, unless a chooser is being filled in it
    assert len(parse_story_form(form)[0]["blocks"]) == 3
    kept = parse_story_form(form, keep=3)[0]
    assert [b["kind"] for b in kept["blocks"]] == ["paragraph"] * 3 + ["image"]
    assert kept["block_from"] == [0, 1, 2, 3]
