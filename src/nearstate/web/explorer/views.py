"""The explorer's pages: each a blocking function ``fn(page) -> Response`` run in a worker
thread by :func:`page`, which turns :class:`~.data.PageError` (and the store's errors about
bad input) into a plain 400 or 404 page saying what was wrong.
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from ...encoding import describe_layout
from ...errors import BlobNotFound, DatasetError, InputError, NearstateError, SchemaError
from ...index import ORDERED_KINDS
from ...ordered import between, prefix
from ...read_state import TypeState
from ...writer import LOG_POSITION
from .data import Explorer, PageError, field_type, parse_key, parse_value, type_of
from .values import Links, Renderer, key_parts, scalar, show_key

log = logging.getLogger(__name__)

WEB = Path(__file__).resolve().parent.parent
PAGE_SIZE = 50
DIFF_SHOWN = 200  # keys shown per kind of change and type in a diff
MUTATIONS_SHOWN = 20  # writes shown per transaction on the Log page


def templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(WEB / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.globals["show_key"] = show_key
    env.globals["scalar"] = scalar
    return Jinja2Templates(env=env)


def _when(t: float | None) -> str:
    if not t:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


@dataclass
class Page:
    """One request as a page sees it."""

    ex: Explorer
    request: Request
    tpl: Jinja2Templates
    home: str | None

    @property
    def base(self) -> str:
        return str(self.request.scope.get("root_path", "")).rstrip("/")

    def q(self, name: str) -> str:
        return self.request.query_params.get(name, "")

    @property
    def version(self) -> str:
        return self.q("v").strip()

    def links(self, version: str | None = None) -> Links:
        return Links(self.base, self.version if version is None else version)

    def _current_url(self) -> str:
        """This page at the current state (without ``v``)."""
        path = str(self.request.url.path)
        q = [(k, v) for k, v in self.request.query_params.multi_items() if k != "v"]
        return path + ("?" + urlencode(q) if q else "")

    def render(self, name: str, status: int = 200, **ctx: Any) -> Response:
        base = {
            "base": self.base,
            "home": self.home,
            "dataset": getattr(self.ex.dataset, "url", repr(self.ex.dataset)),
            "version": self.version,
            "links": self.links(),
            "current_url": self._current_url(),
        }
        return self.tpl.TemplateResponse(
            self.request, f"explorer/{name}", {**base, **ctx}, status_code=status
        )


Handler = Callable[[Page], Response]


def page(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
    @functools.wraps(fn)
    async def run(request: Request) -> Response:
        app_state = request.app.state
        p = Page(app_state.explorer, request, app_state.templates, app_state.home)
        return await run_in_threadpool(_guarded, fn, p)

    return run


def _guarded(fn: Handler, p: Page) -> Response:
    try:
        return fn(p)
    except PageError as e:
        return error(p, e.status, str(e))
    except (SchemaError, InputError) as e:
        return error(p, 400, _sentence(e))
    except (DatasetError, BlobNotFound) as e:
        return error(p, 404, _sentence(e))
    except NearstateError as e:
        return error(p, 500, f"The dataset cannot be read: {e}")
    except Exception as e:
        ref = secrets.token_hex(4)
        log.error("explorer: %s failed (ref %s)", p.request.url.path, ref, exc_info=e)
        return error(p, 500, f"Something went wrong on our side (reference {ref}).")


def error(p: Page, status: int, message: str) -> Response:
    """A plain page saying what was wrong (its menu leads to the current state: the
    version asked for may be what was wrong)."""
    return p.render("error.html", status, status_code=status, message=message,
                    links=Links(p.base), version="")  # fmt: skip


def _sentence(e: BaseException) -> str:
    t = str(e).strip() or type(e).__name__
    return t[0].upper() + t[1:]


def _page_number(p: Page) -> int:
    text = p.q("page") or "1"
    try:
        n = int(text)
    except ValueError:
        raise PageError(400, f"The page number must be a whole number, not {text!r}.") from None
    if n < 1:
        raise PageError(400, f"Pages are numbered from 1, not {n}.")
    return n


# -- pages --------------------------------------------------------------------------------------


@page
def overview(p: Page) -> Response:
    state = p.ex.state(p.version)
    types = []
    for name in state:
        ts = state[name]
        types.append({"name": name, "key": ts.typedef.key, "records": len(ts),
                      "bytes": ts.nbytes, "fields": len(ts.typedef.fields)})  # fmt: skip
    ann = p.ex.dataset.announced() or {}
    position = p.ex.consumer.position if not p.version else None
    try:
        included = int((ann.get("tags") or {}).get(LOG_POSITION, 0))
    except (TypeError, ValueError):
        included = 0
    return p.render(
        "overview.html",
        state=state,
        types=types,
        announced=ann.get("version"),
        position=position,
        pending=None if position is None else max(0, position - included),
        nbytes=state.nbytes,
    )


@page
def type_page(p: Page) -> Response:
    state = p.ex.state(p.version)
    ts = type_of(state, p.request.path_params["type_name"])
    td = ts.typedef
    nbytes = ts.field_nbytes()
    n = len(ts)
    base = state.base  # the snapshot under the version: how its columns are laid out
    cols = (base.blob.header.get("types", {}).get(td.name) or {}).get("columns", {})
    fields = [{
        "name": f.name, "spec": f.type.spec(), "bytes": nbytes.get(f.name, 0),
        "per": nbytes.get(f.name, 0) / n if n else 0.0, "key": bool(td.key and f.name in td.key),
        "eq": _searchable(f.type), "ordered": _orderable(f.type),
        "layout": describe_layout(cols.get(f.name, {}), base.blob.section_sizes,
                                  f"{td.name}/{f.name}"),
    } for f in td.fields]  # fmt: skip
    number = _page_number(p)
    query = {k: p.q(k) for k in ("field", "op", "value", "lo", "hi", "order")}
    ordinals, described = _query(state, ts, query)
    start = (number - 1) * PAGE_SIZE
    if ordinals is None:
        total = n
        records = [ts[o] for o in range(start, min(n, start + PAGE_SIZE))] if _plain(ts) else list(
            islice(iter(ts), start, start + PAGE_SIZE)
        )  # fmt: skip
    else:
        total = len(ordinals)
        records = [ts[int(o)] for o in ordinals[start : start + PAGE_SIZE]]
    if number > 1 and start >= total:
        raise PageError(404, f"Page {number} is past the end: {total:,} records make "
                             f"{max(1, -(-total // PAGE_SIZE))} pages.")  # fmt: skip
    r = Renderer(state.schema, p.links())
    rows = [{
        "key": rec.key if td.key else None,
        "href": p.links().record(td, rec.key) if td.key else None,
        "summary": r.summary(rec, td),
    } for rec in records]  # fmt: skip
    pages = max(1, -(-total // PAGE_SIZE))
    nav = {k: v for k, v in query.items() if v}
    by_key = None
    if td.key is not None and len(td.key) == 1 and _orderable(td.field(td.key[0]).type):
        by_key = p.links().url(f"/types/{td.name}", field=td.key[0], op="range")
    return p.render(
        "type.html",
        ts=ts,
        td=td,
        by_key=by_key,
        count=n,
        fields=fields,
        rows=rows,
        query=query,
        described=described,
        total=total,
        number=number,
        pages=pages,
        prev_url=p.links().url(f"/types/{td.name}", page=number - 1, **nav) if number > 1 else None,
        next_url=p.links().url(f"/types/{td.name}", page=number + 1, **nav)
        if number < pages else None,
    )  # fmt: skip


def _plain(ts: Any) -> bool:
    """Whether ordinals 0..n-1 are the type's records (a version without overlays)."""
    return isinstance(ts, TypeState)


def _searchable(ft: Any) -> bool:
    et = ft.item if ft.kind in ("list", "set") and ft.item is not None else ft
    return et.kind in (*ORDERED_KINDS, "ref", "text")


def _orderable(ft: Any) -> bool:
    et = ft.item if ft.kind in ("list", "set") and ft.item is not None else ft
    return et.kind in ORDERED_KINDS


def _query(state: Any, ts: Any, q: dict[str, str]) -> tuple[Any, str]:
    """The ordinals a query on the type page selects (None: every record) and the query
    in words."""
    name, op = q["field"], q["op"] or "eq"
    if not name:
        return None, ""
    ft = field_type(ts.typedef, name)
    where = f"{ts.name}.{name}"
    if op == "eq":
        if not _searchable(ft):
            raise PageError(400, f"{where} ({ft.spec()}) has no index to search by value.")
        value = parse_value(state.schema, where, ft, q["value"])
        found = ts.find(**{name: value})
        return [r.ordinal for r in found], f"{name} = {show_key(value)}"
    if op not in ("range", "prefix"):
        raise PageError(400, f"Unknown search {op!r}: use eq, range or prefix.")
    if not _orderable(ft):
        raise PageError(400, f"{where} ({ft.spec()}) has no ordered index: ranges and "
                             "prefixes need int, float, bool, str or datetime values.")  # fmt: skip
    if q["order"] not in ("", "asc", "desc"):
        raise PageError(400, f"Order {q['order']!r}: use asc or desc.")
    desc = q["order"] == "desc"
    index = ts.ordered(name)
    if op == "prefix":
        text = q["value"]
        return index.ordinals(prefix(text), reverse=desc), f"{name} starts with {text!r}"
    lo = parse_value(state.schema, where, ft, q["lo"]) if q["lo"].strip() else None
    hi = parse_value(state.schema, where, ft, q["hi"]) if q["hi"].strip() else None
    words = f"{show_key(lo) if lo is not None else '…'} ≤ {name} ≤ " + (
        show_key(hi) if hi is not None else "…"
    )  # fmt: skip
    return index.ordinals(between(lo, hi), reverse=desc), words + (
        ", largest first" if desc else ""
    )


def _key_from(p: Page, state: Any, ts: Any) -> Any:
    parts = p.request.query_params.getlist("key")
    if not parts:
        raise PageError(400, "Name the record: ?key=VALUE (one per key field).")
    return parse_key(state, ts, parts)


@page
def record_page(p: Page) -> Response:
    state = p.ex.state(p.version)
    ts = type_of(state, p.request.path_params["type_name"])
    key = _key_from(p, state, ts)
    rec = ts.get(key)
    where = f"version {p.version}" if p.version else "the current state"
    if rec is None:
        raise PageError(404, f"There is no {ts.name} {show_key(key)} in {where}.")
    r = Renderer(state.schema, p.links())
    fields = [
        {"name": f.name, "spec": f.type.spec(), "html": r.value(rec[f.name], f.type),
         "key": f.name in (ts.typedef.key or ())}
        for f in ts.typedef.fields
    ]  # fmt: skip
    return p.render(
        "record.html",
        td=ts.typedef,
        key=key,
        incoming=_referrers(state.schema, ts.typedef, key, p.links()),
        parts=key_parts(key, ts.typedef),
        fields=fields,
        ordinal=rec.ordinal,
        kept=p.ex.kept_versions(),
        history_url=p.links("").url(f"/types/{ts.name}/history", key=key_parts(key, ts.typedef)),
    )


def _referrers(schema: Any, td: Any, key: Any, links: Links) -> list[tuple[str, str]]:
    """``(Type.field, url)`` of every keyed type's reference field that can point at
    ``td``: the url finds the records whose field holds ``key``."""
    if td.key is None or len(td.key) != 1:
        return []
    out = []
    for other in schema:
        if other.key is None:
            continue
        for f in other.fields:
            ft = f.type.item if f.type.kind in ("list", "set") and f.type.item else f.type
            if ft.kind == "ref" and ft.target == td.name:
                url = links.url(f"/types/{other.name}", field=f.name, value=key_parts(key, td)[0])
                out.append((f"{other.name}.{f.name}", url))
    return out


@page
def history_page(p: Page) -> Response:
    state = p.ex.current()
    ts = type_of(state, p.request.path_params["type_name"])
    key = _key_from(p, state, ts)
    entries = p.ex.history(ts.name, key)
    types = {f.name: f.type for f in ts.typedef.fields}
    shown = []
    for e in entries:
        r = Renderer(state.schema, Links(p.base, str(e.version)))
        shown.append({
            "version": e.version, "created": e.created, "change": e.change,
            "url": Links(p.base, str(e.version)).record(ts.typedef, key)
            if e.change != "removed" else None,
            "fields": [(f, r.value(a, types[f]) if f in types else scalar(a),
                        r.value(b, types[f]) if f in types else scalar(b))
                       for f, (a, b) in e.fields.items()],
        })  # fmt: skip
    return p.render("history.html", td=ts.typedef, key=key, entries=shown,
                    now_url=p.links("").record(ts.typedef, key)
                    if ts.get(key) is not None else None)  # fmt: skip


@page
def versions_page(p: Page) -> Response:
    rows = p.ex.versions()
    return p.render("versions.html", rows=rows, announced=p.ex.dataset.latest_version())


@page
def diff_page(p: Page) -> Response:
    a, b = p.q("from").strip(), p.q("to").strip()
    if not a or not b:
        raise PageError(400, "Name two versions: ?from=V1&to=V2.")
    diff = p.ex.diff(a, b)
    old = p.ex.state(a)
    new = p.ex.state(b)
    schema = new.schema
    la, lb = Links(p.base, a), Links(p.base, b)
    ra, rb = Renderer(old.schema, la), Renderer(schema, lb)
    sections = []
    for name, t in diff.items():
        td = schema.types.get(name) or old.schema.types[name]
        types = {f.name: f.type for f in td.fields}
        changed = []
        for k, fc in islice(t.changed.items(), DIFF_SHOWN):
            changed.append({
                "key": k, "before_url": la.record(td, k), "after_url": lb.record(td, k),
                "fields": [(f, ra.value(x, types[f]) if f in types else scalar(x),
                            rb.value(y, types[f]) if f in types else scalar(y))
                           for f, (x, y) in fc.items()],
            })  # fmt: skip
        sections.append({
            "name": name,
            "added": [(k, lb.record(td, k)) for k in t.added[:DIFF_SHOWN]],
            "removed": [(k, la.record(td, k)) for k in t.removed[:DIFF_SHOWN]],
            "changed": changed,
            "counts": (len(t.added), len(t.changed), len(t.removed)),
        })  # fmt: skip
    return p.render("diff.html", a=a, b=b, sections=sections, shown=DIFF_SHOWN)


@page
def log_page(p: Page) -> Response:
    p.ex.current()  # refresh the consumer whose position the page reports
    back = p.ex.backlog()
    schema = p.ex.current().schema
    links = p.links("")
    entries = []
    for e in back.entries:
        muts = []
        for type_name, key, rec in e.mutations[:MUTATIONS_SHOWN]:
            td = schema.types.get(type_name)
            href = links.record(td, key) if td is not None and td.key is not None else None
            muts.append({"type": type_name, "key": key, "href": href,
                         "kind": "delete" if rec is None else "upsert",
                         "fields": None if rec is None else len(rec)})  # fmt: skip
        entries.append({"position": e.position, "time": e.time_ns / 1e9, "mutations": muts,
                        "more": max(0, len(e.mutations) - MUTATIONS_SHOWN)})  # fmt: skip
    return p.render("log.html", back=back, entries=entries, readers=p.ex.readers())
