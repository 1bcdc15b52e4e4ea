"""Field values as HTML, guided by the field's type: references (and the denormalised
cards of the content schema, ``TitleCard`` holding a Title's ``id``) as links to the record
they name, nested records as small tables, collections as lists, long text folded.

Every text is escaped here (by :meth:`markupsafe.Markup.format`); the templates insert
the result as it is. Values may be record views (from a state) or plain values (from a
diff or the Log: references as keys, nested records as dicts); both render alike.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup

from ...schema import FieldType, Schema, TypeDef

LONG_TEXT = 240  # characters shown before a text is folded
MAX_ITEMS = 50  # collection elements shown
CARD = "Card"  # a nested type named <Type>Card holding <Type>'s key links to that record


def key_text(v: Any) -> str:
    """A key value as typed in a URL (datetimes in ISO form, booleans as true/false)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, _dt.datetime):
        return v.isoformat()
    return str(v)


def key_parts(key: Any, td: TypeDef) -> list[str]:
    assert td.key is not None
    vals = list(key) if len(td.key) > 1 else [key]
    return [key_text(v) for v in vals]


def show_key(key: Any) -> str:
    if isinstance(key, tuple):
        return ", ".join(key_text(k) for k in key)
    return key_text(key)


class Links:
    """Builds the explorer's URLs under its mount point (``base``), at a version (``v``:
    empty for the current state)."""

    def __init__(self, base: str, version: str = ""):
        self.base = base.rstrip("/")
        self.version = version

    def url(self, path: str, **params: Any) -> str:
        q = [(k, x) for k, v in params.items() if v not in (None, "")
             for x in (v if isinstance(v, list) else [v])]  # fmt: skip
        if self.version and "v" not in params:
            q.append(("v", self.version))
        return self.base + path + ("?" + urlencode(q) if q else "")

    def record(self, td: TypeDef, key: Any, **params: Any) -> str:
        return self.url(f"/types/{td.name}/record", key=key_parts(key, td), **params)


class Renderer:
    """Renders values of one schema with links built by ``links``."""

    def __init__(self, schema: Schema, links: Links):
        self.schema = schema
        self.links = links

    def value(self, v: Any, ft: FieldType, depth: int = 0) -> Markup:
        if v is None:
            return Markup('<span class="null">null</span>')
        kind = ft.kind
        if kind == "ref":
            return self._ref(v, ft.target)
        if kind == "record":
            return self._nested(v, ft.target, depth)
        if kind in ("list", "set"):
            assert ft.item is not None
            items = list(v) if kind == "list" else sorted(v, key=repr)
            return self._items(items, ft.item, depth, ordered=kind == "list")
        if kind == "dict":
            assert ft.item is not None and ft.key is not None
            rows = [
                Markup("<tr><th>{}</th><td>{}</td></tr>").format(
                    self.value(k, ft.key, depth + 1), self.value(x, ft.item, depth + 1)
                )
                for k, x in list(v.items())[:MAX_ITEMS]
            ]
            more = _more(len(v))
            return Markup('<table class="nested">{}</table>{}').format(Markup("").join(rows), more)
        return scalar(v)

    def _ref(self, v: Any, target: str | None) -> Markup:
        key = getattr(v, "key", v)  # a record view, or the key itself (diffs, the Log)
        td = self.schema.types.get(target or "")
        if td is None or td.key is None:
            return scalar(key)
        label = self._label(v, td)
        return Markup('<a class="ref" href="{}">{} {}</a>{}').format(
            self.links.record(td, key), td.name, show_key(key), label
        )

    def _label(self, v: Any, td: TypeDef) -> Markup:
        """A few words naming the record a reference reaches (its first text field)."""
        if not hasattr(v, "key"):
            return Markup("")
        for f in td.fields:
            if f.type.kind == "str" and td.key is not None and f.name not in td.key:
                try:
                    text = v[f.name]
                except (KeyError, IndexError):
                    return Markup("")
                if isinstance(text, str) and text:
                    return Markup(' <span class="label">{}</span>').format(_cut(text, 60))
                break
        return Markup("")

    def _nested(self, v: Any, target: str | None, depth: int) -> Markup:
        td = self.schema.types.get(target or "")
        if td is None:
            return scalar(v)
        get = v.get if isinstance(v, Mapping) else (lambda n: v[n])
        rows = []
        for f in td.fields:
            try:
                x = get(f.name)
            except (KeyError, IndexError):
                x = None
            rows.append(
                Markup("<tr><th>{}</th><td>{}</td></tr>").format(
                    f.name, self.value(x, f.type, depth + 1)
                )
            )
        link = self._card_link(td, get)
        return Markup('{}<table class="nested">{}</table>').format(link, Markup("").join(rows))

    def _card_link(self, td: TypeDef, get: Any) -> Markup:
        """``TitleCard`` with an ``id``: a link to the Title with that id, if the schema
        has such a keyed type (the content schema copies cards into records instead of
        referring to them)."""
        if not td.name.endswith(CARD):
            return Markup("")
        target = self.schema.types.get(td.name[: -len(CARD)])
        if target is None or target.key is None or len(target.key) != 1:
            return Markup("")
        try:
            key = get(target.key[0])
        except (KeyError, IndexError):
            return Markup("")
        if key is None:
            return Markup("")
        return Markup('<a class="ref card" href="{}">{} {}</a>').format(
            self.links.record(target, key), target.name, show_key(key)
        )

    def _items(self, items: list[Any], ft: FieldType, depth: int, *, ordered: bool) -> Markup:
        if not items:
            return Markup('<span class="null">empty</span>')
        simple = ft.kind not in ("record", "list", "set", "dict")
        cells = [self.value(x, ft, depth + 1) for x in items[:MAX_ITEMS]]
        if simple:
            body = Markup("").join(Markup('<li class="chip">{}</li>').format(c) for c in cells)
            return Markup('<ul class="chips">{}</ul>{}').format(body, _more(len(items)))
        tag = "ol" if ordered else "ul"
        body = Markup("").join(Markup("<li>{}</li>").format(c) for c in cells)
        return Markup('<{} class="items">{}</{}>{}').format(
            Markup(tag), body, Markup(tag), _more(len(items))
        )

    def summary(self, rec: Any, td: TypeDef, limit: int = 4) -> list[tuple[str, Markup]]:
        """A few short fields of a record for a list of records (not the key's)."""
        out = []
        for f in td.fields:
            if td.key is not None and f.name in td.key:
                continue
            if f.type.kind in ("record", "list", "set", "dict", "bytes"):
                continue
            v = rec[f.name]
            if f.type.kind == "ref":
                out.append((f.name, self.value(v, f.type)))
            else:
                out.append((f.name, scalar(v, width=60)))
            if len(out) >= limit:
                break
        return out


def scalar(v: Any, width: int = LONG_TEXT) -> Markup:
    if v is None:
        return Markup('<span class="null">null</span>')
    if isinstance(v, bool):
        return Markup('<span class="bool">{}</span>').format("true" if v else "false")
    if isinstance(v, (int, float)):
        return Markup('<span class="num">{}</span>').format(repr(v))
    if isinstance(v, _dt.datetime):
        return Markup('<time datetime="{0}">{0}</time>').format(v.isoformat())
    if isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        return Markup('<code class="bytes">{} bytes: {}{}</code>').format(
            len(b), b[:32].hex(" "), "…" if len(b) > 32 else ""
        )
    text = str(v)
    if not text:
        return Markup('<span class="null">empty text</span>')
    if len(text) <= width:
        return Markup('<span class="str">{}</span>').format(text)
    return Markup(
        '<details class="long"><summary>{}… <span class="muted">({:,} characters)</span>'
        '</summary><div class="str">{}</div></details>'
    ).format(text[:width], len(text), text)


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _more(n: int) -> Markup:
    if n <= MAX_ITEMS:
        return Markup("")
    return Markup('<p class="muted">… and {:,} more</p>').format(n - MAX_ITEMS)
