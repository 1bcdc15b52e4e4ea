"""The difference between two revisions of a story, for the editor's side-by-side view:
field by field, block by block, and word by word inside text.

Pure functions over the revisions' stored data (``CMS.revision(...)["data"]``, the shape
:func:`nearstate.content.rules.check_story` makes). Blocks are matched the way a text diff
matches lines (difflib's longest matching runs), so a block moved or inserted in the middle
reads as one added and one removed block, and the others stay paired; a block that was
edited in place reads as changed, with its words marked.

A piece of text becomes a list of :class:`Piece`: ``("same", text)``, ``("removed", text)``
(only on the older side) or ``("added", text)`` (only on the newer side); both sides keep
every character of their text, spaces included, so joining a side's pieces gives the text
back.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Op = Literal["same", "removed", "added"]

#: The story's fields in the order the diff lists them, with the names an editor reads.
FIELDS = (
    ("title", "Title"),
    ("slug", "Slug"),
    ("dek", "Dek"),
    ("hero", "Hero image"),
    ("tags", "Tags"),
    ("related", "Related titles"),
    ("authors", "Authors"),
)
#: A block's fields other than its text, with their names.
BLOCK_DETAILS = (
    ("format", "Text format"),
    ("level", "Heading level"),
    ("cite", "Quote by"),
    ("asset", "Image"),
    ("title", "Title"),
    ("url", "Video"),
)
_TOKEN = re.compile(r"\s+|\w+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class Piece:
    op: Op
    text: str


@dataclass
class FieldDiff:
    name: str
    label: str
    old: list[Piece]
    new: list[Piece]
    changed: bool


@dataclass
class BlockDiff:
    """One row of the body: ``op`` is same, changed, added (only in the newer revision) or
    removed (only in the older one); ``old_at``/``new_at`` are 1-based positions."""

    op: Literal["same", "changed", "added", "removed"]
    old_at: int | None
    new_at: int | None
    kind_old: str
    kind_new: str
    text_old: list[Piece]
    text_new: list[Piece]
    details: list[FieldDiff] = field(default_factory=list)


@dataclass
class StoryDiff:
    fields: list[FieldDiff]
    blocks: list[BlockDiff]

    @property
    def changed(self) -> bool:
        return any(f.changed for f in self.fields) or any(b.op != "same" for b in self.blocks)

    @property
    def counts(self) -> dict[str, int]:
        """How many fields changed and how many blocks were changed, added and removed."""
        out = {"fields": sum(f.changed for f in self.fields)}
        for op in ("changed", "added", "removed"):
            out[op] = sum(b.op == op for b in self.blocks)
        return out


def words(old: str, new: str) -> tuple[list[Piece], list[Piece]]:
    """Word-level difference of two texts: the pieces of each side."""
    if old == new:
        return ([Piece("same", old)] if old else []), ([Piece("same", new)] if new else [])
    a, b = _TOKEN.findall(old), _TOKEN.findall(new)
    left: list[Piece] = []
    right: list[Piece] = []
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            _add(left, "same", "".join(a[i1:i2]))
            _add(right, "same", "".join(b[j1:j2]))
        else:
            _add(left, "removed", "".join(a[i1:i2]))
            _add(right, "added", "".join(b[j1:j2]))
    return left, right


def _add(pieces: list[Piece], op: Op, text: str) -> None:
    if not text:
        return
    if op != "same":  # spaces at the ends of a change (or a change of spaces) go unmarked
        core = text.strip()
        if not core:
            return _add(pieces, "same", text)
        lead, trail = text[: len(text) - len(text.lstrip())], text[len(text.rstrip()) :]
        _add(pieces, "same", lead)
        _join(pieces, op, core)
        _add(pieces, "same", trail)
        return
    _join(pieces, op, text)


def _join(pieces: list[Piece], op: Op, text: str) -> None:
    if not text:
        return
    if pieces and pieces[-1].op == op:
        pieces[-1] = Piece(op, pieces[-1].text + text)
    else:
        pieces.append(Piece(op, text))


def show(value: Any) -> str:
    """A field's value as the diff shows it: lists joined by commas, None as empty."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(show(v) for v in value)
    return str(value)


def _field(name: str, label: str, old: Any, new: Any) -> FieldDiff:
    o, n = show(old), show(new)
    left, right = words(o, n)
    return FieldDiff(name, label, left, right, o != n)


def _key(b: Mapping[str, Any]) -> str:
    return json.dumps(b, sort_keys=True, ensure_ascii=False, default=str)


def _detail(b: Mapping[str, Any] | None, name: str) -> Any:
    if b is None:
        return None
    if name == "format":
        return b.get("format") or ("plain" if b.get("kind") == "paragraph" else None)
    return b.get(name)


def _block(
    old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, old_at: int | None,
    new_at: int | None,
) -> BlockDiff:  # fmt: skip
    if old is not None and new is not None:
        op: Any = "same" if _key(old) == _key(new) else "changed"
    else:
        op = "added" if old is None else "removed"
    to, tn = show((old or {}).get("text")), show((new or {}).get("text"))
    if old is None:
        left, right = [], ([Piece("added", tn)] if tn else [])
    elif new is None:
        left, right = ([Piece("removed", to)] if to else []), []
    else:
        left, right = words(to, tn)
    details = []
    for name, label in BLOCK_DETAILS:
        vo, vn = _detail(old, name), _detail(new, name)
        if vo is None and vn is None:
            continue
        details.append(_field(name, label, vo, vn))
    return BlockDiff(
        op,
        old_at,
        new_at,
        str((old or {}).get("kind") or ""),
        str((new or {}).get("kind") or ""),
        left,
        right,
        details,
    )


def diff_blocks(
    old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]
) -> list[BlockDiff]:
    """The two bodies as rows of blocks: unchanged runs paired, and within a replaced run
    blocks of the same kind paired in order (changed), the rest added or removed."""
    rows: list[BlockDiff] = []
    sm = difflib.SequenceMatcher(None, [_key(b) for b in old], [_key(b) for b in new],
                                 autojunk=False)  # fmt: skip
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            rows += [_block(old[i1 + k], new[j1 + k], i1 + k + 1, j1 + k + 1)
                     for k in range(i2 - i1)]  # fmt: skip
            continue
        i, j = i1, j1
        while i < i2 or j < j2:
            if i < i2 and j < j2 and old[i].get("kind") == new[j].get("kind"):
                rows.append(_block(old[i], new[j], i + 1, j + 1))
                i, j = i + 1, j + 1
            elif i < i2 and (
                j >= j2 or not any(new[k].get("kind") == old[i].get("kind") for k in range(j, j2))
            ):
                rows.append(_block(old[i], None, i + 1, None))
                i += 1
            else:
                rows.append(_block(None, new[j], None, j + 1))
                j += 1
    return rows


def diff_stories(old: Mapping[str, Any], new: Mapping[str, Any]) -> StoryDiff:
    """Two revisions' data compared: every field of :data:`FIELDS` and the body."""
    fields = [_field(name, label, old.get(name), new.get(name)) for name, label in FIELDS]
    return StoryDiff(fields, diff_blocks(old.get("body") or [], new.get("body") or []))
