"""Reading what an editor typed: the story and layout forms as plain functions of the
submitted fields (no request, no Starlette: testable with a dict), the small parsers and
formatters the pages share, and the limits they enforce.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ...content.cms import NotFound
from ...content.rules import BLOCK_KINDS, MAX_BLOCKS, Problem

MAX_ID = 2**63 - 1
MAX_REVISION = 2**31 - 1
PAGE = 50
ACTIONS = ("save", "publish", "schedule", "unpublish", "preview")
ROW_KINDS = ("stories", "titles", "tag", "genre")
BLOCK_FIELDS = ("kind", "text", "level", "cite", "asset", "title", "url", "format")
ROW_FIELDS = ("heading", "kind", "value", "limit")
EMBEDS = ("https://www.youtube-nocookie.com/embed/", "https://player.vimeo.com/video/")
MAX_FORM_FIELDS = 6000  # 300 blocks of 9 fields, and room to spare


class BadRequest(Exception):
    """A request the app refuses, with the status, the message to show and the problems
    (``rules.Problem``) to list."""

    def __init__(self, message: str, status: int = 400, problems: Iterable[Problem] = ()):
        super().__init__(message)
        self.status = status
        self.problems = list(problems)


_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")


def clean(s: str) -> str:
    """Text as the store can keep it: no NUL characters nor lone surrogates; newlines
    as ``\\n``."""
    return _BAD_CHARS.sub(lambda m: "" if m.group() == "\x00" else "\ufffd", s).replace(
        "\r\n", "\n"
    )


def clean_json(v: Any) -> Any:
    if isinstance(v, str):
        return clean(v)
    if isinstance(v, list):
        return [clean_json(x) for x in v]
    if isinstance(v, dict):
        return {clean(str(k)): clean_json(x) for k, x in v.items()}
    return v


def show(v: Any, limit: int = 60) -> str:
    """A user's value, quoted and cut short, for a message."""
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def parse_int(
    value: Any, what: str, *, lo: int = 0, hi: int = MAX_ID, default: int | None = None
) -> int:
    """``value`` (a query or form string) as a whole number in ``[lo, hi]``; BadRequest
    naming ``what`` otherwise (``default`` when it is missing or empty)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if default is not None:
            return default
        raise BadRequest(f"{what} is missing.")
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadRequest(f"{what} must be a whole number, not {show(value)}.")
    text = str(value).strip()
    if not re.fullmatch(r"[+-]?\d{1,20}", text):
        raise BadRequest(f"{what} must be a whole number, not {show(value)}.")
    n = int(text)
    if not lo <= n <= hi:
        raise BadRequest(f"{what} must be between {lo} and {hi}, not {n}.")
    return n


def path_id(value: str, what: str) -> int:
    """A numeric id from the URL: NotFound (404) when it is not one."""
    if not re.fullmatch(r"\d{1,19}", value) or int(value) > MAX_ID:
        raise NotFound(f"there is no {what} {show(value)}")
    return int(value)


def when(ts: Any) -> str:
    if ts is None or ts == "":
        return "—"
    try:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float(ts)))
    except (TypeError, ValueError, OverflowError, OSError):
        return "—"


def when_exact(ts: Any) -> str:
    """``when`` to the second (the audit log)."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(ts)))
    except (TypeError, ValueError, OverflowError, OSError):
        return "—"


def dtlocal(ts: Any) -> str:
    """An epoch time as a ``datetime-local`` input value, in UTC."""
    if ts is None:
        return ""
    try:
        return time.strftime("%Y-%m-%dT%H:%M", time.gmtime(float(ts)))
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def utc(raw: str, where: str) -> tuple[float | None, list[Problem]]:
    """A ``datetime-local`` value (read as UTC) as epoch seconds; empty: None."""
    raw = raw.strip()
    if not raw:
        return None, []
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        return None, [Problem(where, f"{show(raw)} is not a date and time (YYYY-MM-DD HH:MM)")]
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    try:
        return when.timestamp(), []
    except (OverflowError, OSError, ValueError):
        return None, [Problem(where, f"{show(raw)} is out of range")]


def form_field(form: Mapping[str, Any] | None, name: str) -> str:
    """A text field of a form ('' when missing, or when it is a file)."""
    if form is None:
        return ""
    v = form.get(name)
    return clean(v) if isinstance(v, str) else ""


def _split_ids(text: str) -> list[str]:
    return [x for x in re.split(r"[\s,;]+", text) if x]


def _position(raw: str, default: float, where: str, problems: list[Problem]) -> float:
    if not raw.strip():
        return default
    try:
        pos = float(raw)
    except ValueError:
        pos = math.nan
    if not math.isfinite(pos):
        problems.append(Problem(where, f"the position {show(raw)} is not a number"))
        return default
    return pos


def finite(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"the number {text} is too large")
    return v


def reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def problem_dicts(problems: Iterable[Any]) -> list[dict[str, str]]:
    out = []
    for p in problems:
        if isinstance(p, Problem):
            out.append(p.to_dict())
        elif isinstance(p, Mapping):
            out.append({"where": str(p.get("where", "")), "message": str(p.get("message", ""))})
    return out


def story_form(data: Mapping[str, Any]) -> dict[str, Any]:
    """A stored story as the edit form's values (all text)."""
    blocks = []
    for b in data.get("body") or []:
        blocks.append(
            {
                "kind": str(b.get("kind") or ""),
                "text": str(b.get("text") or ""),
                "level": str(b.get("level") or 2),
                "cite": str(b.get("cite") or ""),
                "asset": str(b.get("asset") or ""),
                "title": "" if b.get("title") is None else str(b.get("title")),
                "url": str(b.get("url") or ""),
                "format": str(b.get("format") or "plain"),  # a paragraph's text format
            }
        )
    return {
        "title": str(data.get("title") or ""),
        "slug": str(data.get("slug") or ""),
        "dek": str(data.get("dek") or ""),
        "hero": str(data.get("hero") or ""),
        "tags": ", ".join(map(str, data.get("tags") or [])),
        "related": ", ".join(map(str, data.get("related") or [])),
        "authors": ", ".join(map(str, data.get("authors") or [])),
        "blocks": blocks,
    }


_BLOCK_KEY = re.compile(r"^block-(\d{1,5})-kind$")
_ROW_KEY = re.compile(r"^row-(\d{1,4})-kind$")


def _block_data(b: Mapping[str, str]) -> dict[str, Any]:
    kind = b["kind"]
    if kind not in BLOCK_KINDS:
        return dict(b)  # the CMS names the unknown kind
    out: dict[str, Any] = {"kind": kind}
    if kind in ("paragraph", "heading", "quote", "image"):
        out["text"] = b["text"]
    if kind == "paragraph" and b.get("format"):
        out["format"] = b["format"]  # rich or plain; the CMS refuses any other
    if kind == "heading":
        out["level"] = b["level"] or 2
    elif kind == "quote":
        out["cite"] = b["cite"]
    elif kind == "image":
        out["asset"] = b["asset"]
    elif kind == "title":
        out["title"] = b["title"]
    elif kind == "video":
        out["url"] = b["url"]
    return out


def form_list(form: Mapping[str, Any] | None, name: str) -> str:
    """A field a form may send several times (a chooser's ticked items, each one id, or
    one comma-separated text), as one comma-separated text."""
    if form is None:
        return ""
    getlist = getattr(form, "getlist", None)
    items = getlist(name) if getlist is not None else [form.get(name)]
    return ", ".join(t for v in items if isinstance(v, str) and (t := clean(v).strip()))


def parse_move(op: str) -> tuple[int, int] | None:
    """A block's move button (``up:3``, ``down:3``: the block's number in the form) as
    (number, -1 or +1); None when ``op`` is not one."""
    m = re.fullmatch(r"(up|down):(\d{1,5})", op)
    return (int(m.group(2)), -1 if m.group(1) == "up" else 1) if m else None


def parse_story_form(
    form: Mapping[str, Any],
    move: tuple[int, int] | None = None,
    keep: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any], list[Problem]]:
    """The edit form as (the values to show again, the story for the CMS, problems of the
    form itself). Blocks marked "remove" are dropped, empty new blocks ignored, and the
    rest ordered by their position number (ties keep the form's order); ``move`` (see
    :func:`parse_move`) then swaps that block with its neighbour; block ``keep`` is kept
    even when it is new and empty (a chooser is being filled in it). ``related`` and
    ``authors`` may be sent once per id. ``values["block_from"]`` gives each block's
    number in the form."""
    values: dict[str, Any] = {
        k: form_field(form, k) for k in ("title", "slug", "dek", "hero", "tags")
    }
    values["related"] = form_list(form, "related")
    values["authors"] = form_list(form, "authors")
    problems: list[Problem] = []
    indices = sorted({int(m.group(1)) for k in form if (m := _BLOCK_KEY.match(k))})
    if len(indices) > MAX_BLOCKS + 2:
        problems.append(
            Problem("body", f"has {len(indices)} blocks; at most {MAX_BLOCKS} are allowed")
        )
        indices = indices[: MAX_BLOCKS + 2]
    entries: list[tuple[float, int, int, dict[str, str]]] = []
    for n, i in enumerate(indices):
        b = {f: form_field(form, f"block-{i}-{f}") for f in BLOCK_FIELDS}
        if form_field(form, f"block-{i}-remove"):
            continue
        content = any(b[f].strip() for f in ("text", "cite", "asset", "title", "url"))
        if form_field(form, f"block-{i}-new") and not content and i != keep:
            continue
        pos = _position(
            form_field(form, f"block-{i}-pos"), n + 1, f"block {n + 1} position", problems
        )
        entries.append((pos, n, i, b))
    entries.sort(key=lambda e: (e[0], e[1]))
    at = next((k for k, e in enumerate(entries) if move and e[2] == move[0]), None)
    if move and at is not None and 0 <= at + move[1] < len(entries):
        entries[at], entries[at + move[1]] = entries[at + move[1]], entries[at]
    blocks = [e[3] for e in entries]
    values["blocks"] = blocks
    values["block_from"] = [e[2] for e in entries]
    hero = values["hero"].strip()
    data: dict[str, Any] = {
        "title": values["title"],
        "slug": values["slug"],
        "dek": values["dek"],
        "hero": hero or None,
        "tags": values["tags"].split(","),
        "related": _split_ids(values["related"]),
        "authors": _split_ids(values["authors"]),
        "body": [_block_data(b) for b in blocks],
    }
    return values, data, problems


def layout_form(data: Mapping[str, Any]) -> list[dict[str, str]]:
    """A stored layout's rows as the form's values (all text): a stories or titles row's
    ids under ``stories`` or ``titles`` (its chooser), a tag or genre under ``value``."""
    rows = []
    for r in data.get("rows") or []:
        kind = str(r.get("kind") or "")
        row = {"heading": str(r.get("heading") or ""), "kind": kind, "value": "", "limit": "",
               "stories": "", "titles": ""}  # fmt: skip
        if kind in ("stories", "titles"):
            row[kind] = ", ".join(map(str, r.get("ids") or []))
        else:
            row["value"] = str(r.get(kind) or "")
            row["limit"] = str(r.get("limit") or "")
        rows.append(row)
    return rows


def parse_layout_form(
    form: Mapping[str, Any],
    move: tuple[int, int] | None = None,
    keep: int | None = None,
) -> tuple[list[dict[str, str]], list[dict[str, Any]], list[Problem]]:
    """The layout form's rows as (values to show again, rows for the CMS, problems).
    A stories or titles row's ids come from its chooser (``row-N-stories`` or
    ``row-N-titles``, sent once per id, in the order shown) or, when that is empty, from
    ids typed in ``row-N-value``. Rows marked "remove" are dropped, empty new rows
    ignored (but row ``keep``, whose chooser is being filled), the rest ordered by their
    position; ``move`` (see :func:`parse_move`) then swaps a row with its neighbour. Each
    value's ``from`` is the row's number in the form."""
    problems: list[Problem] = []
    indices = sorted({int(m.group(1)) for k in form if (m := _ROW_KEY.match(k))})[:200]
    entries: list[tuple[float, int, int, dict[str, str]]] = []
    for n, i in enumerate(indices):
        r = {f: form_field(form, f"row-{i}-{f}") for f in ROW_FIELDS}
        for k in ("stories", "titles"):
            r[k] = form_list(form, f"row-{i}-{k}")
        if r["kind"] in ("stories", "titles") and not r[r["kind"]] and r["value"].strip():
            r[r["kind"]], r["value"] = r["value"], ""  # ids typed by hand (the JSON of old)
        if form_field(form, f"row-{i}-remove"):
            continue
        content = any(r[f].strip() for f in ("heading", "value", "stories", "titles"))
        if form_field(form, f"row-{i}-new") and not content and i != keep:
            continue
        pos = _position(form_field(form, f"row-{i}-pos"), n + 1, f"row {n + 1} position", problems)
        entries.append((pos, n, i, r))
    entries.sort(key=lambda e: (e[0], e[1]))
    at = next((k for k, e in enumerate(entries) if move and e[2] == move[0]), None)
    if move and at is not None and 0 <= at + move[1] < len(entries):
        entries[at], entries[at + move[1]] = entries[at + move[1]], entries[at]
    values = [{**r, "from": str(i)} for _, _, i, r in entries]
    rows: list[dict[str, Any]] = []
    for r in values:
        row: dict[str, Any] = {"heading": r["heading"], "kind": r["kind"]}
        if r["kind"] in ("stories", "titles"):
            row["ids"] = _split_ids(r[r["kind"]])
        elif r["kind"] in ("tag", "genre"):
            row[r["kind"]] = r["value"]
            row["limit"] = r["limit"].strip() or None
        rows.append(row)
    return values, rows, problems


def where_problems(
    problems: Iterable[Problem], prefix: str
) -> tuple[dict[int, list[Problem]], list[Problem]]:
    """Problems of numbered items (``body[3]...``) by number, and the others."""
    by: dict[int, list[Problem]] = {}
    rest: list[Problem] = []
    pat = re.compile(rf"^{re.escape(prefix)}\[(\d+)\]")
    for p in problems:
        m = pat.match(p.where)
        if m:
            by.setdefault(int(m.group(1)), []).append(p)
        else:
            rest.append(p)
    return by, rest
