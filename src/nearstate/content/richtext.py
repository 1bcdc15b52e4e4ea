"""Rich text for paragraph blocks: a small, safe Markdown subset, turned into HTML that can
only hold the tags and attributes listed here.

What an editor may write (and nothing else is Markdown here; the rest is shown as typed):

- ``**bold**`` and ``*italic*`` (or ``_italic_``), nested as they like;
- links ``[words](https://example.org)``: ``http``, ``https`` and ``mailto`` addresses and
  relative ones (``/stories/x``, ``#part``); a link to any other scheme (``javascript:``,
  ``data:``, ``vbscript:``, whatever the spelling, entities or control characters) is not
  made: its text is shown as typed. A link to another host gets ``rel="noopener"``;
- lists: lines starting ``- `` (or ``* ``) and ``1. ``;
- a blank line starts a new paragraph; a single line break is kept as a line break;
- a backslash shows the next mark as itself (``\\*``).

HTML typed into the text is shown as text, never as markup: the parser runs with HTML off
(markdown-it-py, the "zero" preset with only the rules above), and its output then goes
through an allowlist sanitiser (nh3, the Ammonia library) as a second, independent fence.
So the allowlist below holds even if the parser one day emits something new.

A block's format is a separate field (``"format": "markdown"`` on a paragraph in the CMS,
``level`` 1 in the render-ready record; see :data:`FORMATS` and :data:`LEVELS`): a
paragraph without it is plain text, shown as typed inside one ``<p>`` as before, so
content written before rich text existed renders exactly as it did.

Contracts: the functions are pure and thread-safe; :func:`to_html` and :func:`to_plain`
keep their results per distinct source (the read path calls them once per paragraph per
page), bounded by count and by bytes (:class:`Memo`: a long paragraph is worked out each
time, not kept).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token

PLAIN = "plain"
MARKDOWN = "markdown"
FORMATS = (PLAIN, MARKDOWN)
#: In the render-ready records (``records.Block``) a paragraph's ``level`` says its format:
#: 0 plain, 1 Markdown. A field of its own would change the dataset's schema, which every
#: existing dataset would refuse (see docs/decisions/0023-rich-text-and-revision-diff.md).
LEVELS = {PLAIN: 0, MARKDOWN: 1}

#: What the HTML of a rich paragraph may contain: tag → the attributes it may carry.
ALLOWED: dict[str, frozenset[str]] = {
    "p": frozenset(),
    "br": frozenset(),
    "strong": frozenset(),
    "em": frozenset(),
    "ul": frozenset(),
    "ol": frozenset({"start"}),
    "li": frozenset(),
    "a": frozenset({"href", "rel"}),
}
#: The URL schemes a link may use (a relative link has none).
SCHEMES = frozenset({"http", "https", "mailto"})
EXTERNAL_REL = "noopener"

# what browsers drop from a URL before reading its scheme (WHATWG URL: tab, newline, CR
# anywhere; C0 controls and space at either end)
_URL_JUNK = re.compile(r"[\t\n\r]")
_CONTROLS = "".join(map(chr, range(0x21)))

_md = MarkdownIt("zero", {"html": False, "linkify": False, "breaks": True, "typographer": False})
_md.enable(["list", "emphasis", "link", "newline", "escape"])

_sanitiser = nh3.Cleaner(
    tags=set(ALLOWED),
    attributes={t: set(a - {"rel"}) for t, a in ALLOWED.items() if a - {"rel"}},
    tag_attribute_values={"a": {"rel": {EXTERNAL_REL}}},
    url_schemes=set(SCHEMES),
    link_rel=None,
    strip_comments=True,
)


def safe_url(url: str) -> str | None:
    """``url`` when a link may point there (http, https, mailto or relative), else None.
    The scheme is read the way a browser reads it, after dropping tabs and newlines
    anywhere and control characters at the ends."""
    cleaned = _URL_JUNK.sub("", url).strip(_CONTROLS)
    if not cleaned or cleaned.startswith(("//", "\\\\", "/\\", "\\/")):
        return None  # another host without a scheme: write it with https://
    try:
        scheme = urlsplit(cleaned).scheme
    except ValueError:
        return None
    if scheme and scheme.lower() not in SCHEMES:
        return None
    if not scheme and ":" in cleaned.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]:
        return None  # "a:b" that urlsplit did not take for a scheme; a browser might
    return cleaned


def is_external(url: str) -> bool:
    """A link that leaves the site (it names a scheme, so a host or a mail address)."""
    return bool(urlsplit(url).scheme)


def _validate(url: str) -> bool:
    return safe_url(url) is not None


_md.validateLink = _validate  # type: ignore[method-assign]


def _link_open(
    self: Any, tokens: Sequence[Token], idx: int, options: Any, env: dict[str, Any]
) -> str:
    tok = tokens[idx]
    href = safe_url(str(tok.attrGet("href") or ""))
    stack = env.setdefault("links", [])
    stack.append(href is not None)
    if href is None:
        return ""  # the words stay, without a link
    rel = f' rel="{EXTERNAL_REL}"' if is_external(href) else ""
    return f'<a href="{_md.utils.escapeHtml(href)}"{rel}>'  # type: ignore[attr-defined]


def _link_close(
    self: Any, tokens: Sequence[Token], idx: int, options: Any, env: dict[str, Any]
) -> str:
    stack = env.get("links") or [False]
    return "</a>" if stack.pop() else ""


_md.add_render_rule("link_open", _link_open)
_md.add_render_rule("link_close", _link_close)


MEMO_SIZE = 8192  #: results kept per function, at most
MEMO_BYTES = 8 << 20  #: bytes of sources and results kept per function, at most
MEMO_ENTRY = 64 << 10  #: a source and its result larger than this together: not kept


class Memo:
    """Results of a pure function of a string, kept for reuse: at most ``size`` of them
    and ``max_bytes`` bytes (each source and its result, as ``sys.getsizeof`` counts
    them); when either bound would be passed it starts over with an empty dict (a
    reader of the full one finishes undisturbed). A pair over ``max_entry`` bytes is not
    kept: a long paragraph is worked out again each time (a page that shows it is in
    the page cache). No lock: a race costs a result worked out twice, and ``bytes`` is
    an estimate under concurrent puts (back to 0 whenever it starts over)."""

    __slots__ = ("_held", "bytes", "max_bytes", "max_entry", "size")

    def __init__(self, size: int = MEMO_SIZE, max_bytes: int = MEMO_BYTES,
                 max_entry: int = MEMO_ENTRY) -> None:  # fmt: skip
        self.size = size
        self.max_bytes = max_bytes
        self.max_entry = max_entry
        self._held: dict[str, str] = {}
        self.bytes = 0

    def get(self, source: str) -> str | None:
        return self._held.get(source)

    def put(self, source: str, result: str) -> str:
        """Keep ``result`` if it fits; give it back."""
        n = sys.getsizeof(source) + sys.getsizeof(result)
        if self.size <= 0 or n > self.max_entry or n > self.max_bytes:
            return result
        held = self._held
        if len(held) >= self.size or self.bytes + n > self.max_bytes:
            held = self._held = {}
            self.bytes = 0
        held[source] = result
        self.bytes += n
        return result

    def __len__(self) -> int:
        return len(self._held)


_html = Memo()
_plain = Memo()


def to_html(source: str) -> str:
    """The HTML of a rich paragraph's source: only the tags and attributes of
    :data:`ALLOWED`, links only to :data:`SCHEMES` or relative addresses."""
    html = _html.get(source)
    if html is None:
        html = _html.put(source, _sanitiser.clean(_md.render(source, {})))
    return html


def to_plain(source: str) -> str:
    """The words of a rich paragraph without its marks (for search, excerpts and word
    counts): link words kept, list items and paragraphs on lines of their own."""
    plain = _plain.get(source)
    if plain is None:
        plain = _plain.put(source, _plain_of(source))
    return plain


def _plain_of(source: str) -> str:
    lines: list[str] = []
    for tok in _md.parse(source, {}):
        if tok.type != "inline":
            continue
        parts: list[str] = []
        for child in tok.children or []:
            if child.type == "text":
                parts.append(child.content)
            elif child.type in ("softbreak", "hardbreak"):
                parts.append(" ")
        line = " ".join("".join(parts).split())
        if line:
            lines.append(line)
    return "\n".join(lines)


_MARKS = re.compile(r"([\\*_\[\]])")
_LINE_MARK = re.compile(r"^([ \t]*)([-+]|\d{1,9})([.)]?)(?=[ \t]|$)", re.M)


def escape(text: str) -> str:
    """``text`` as rich-text source that shows exactly these words: every mark of the
    subset (``\\ * _ [ ]``, and a list marker at the start of a line) escaped with a
    backslash. For putting names and other data into generated rich text."""
    return _LINE_MARK.sub(_line_mark, _MARKS.sub(r"\\\1", text))


def _line_mark(m: re.Match[str]) -> str:
    lead, mark, delim = m.groups()
    if mark.isdigit():  # "1." or "1)" starts a list; a number alone does not
        return lead + mark + ("\\" + delim if delim else "")
    return lead + "\\" + mark + delim  # "-" or "+" ("*" is escaped everywhere)


def block_format(block: Any) -> str:
    """A CMS block's text format: :data:`MARKDOWN` for a rich paragraph, else plain."""
    get = block.get if isinstance(block, dict) else (lambda k, d=None: getattr(block, k, d))
    if get("kind") == "paragraph" and get("format") == MARKDOWN:
        return MARKDOWN
    return PLAIN


def block_words(block: Any) -> str:
    """A CMS block's text as plain words (a rich paragraph's marks taken out)."""
    text = str(block.get("text") or "")
    return to_plain(text) if block_format(block) == MARKDOWN else text
