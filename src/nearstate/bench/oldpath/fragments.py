"""The old path's render-ready page fragments, and which of them a change touches.

The old read path's ingestion applied the templates at write time: it published, per page,
*fragments* already shaped for rendering, and the read store held those. Here a fragment
is a key and a JSON value built by the site's own page builder (:class:`Pages`), so both
read paths show exactly the same pages:

==========================  ======================================================
key                         value
==========================  ======================================================
``home``                    the home page (its rows with their cards, the hero)
``nav``                     the genres, most titles first (every page's navigation)
``story:<slug>``            a published story (its body with title cards, authors)
``more:<slug>``             the "more stories" row under that story
``draft:<id>``              the newest saved revision of a story (the editor preview)
``tag:<slug>``              a tag page
``title:<slug>``            a title's page, less its stories
``title-stories:<id>``      the stories about a title
``person:<slug>``           a person's page, less their stories
``person-stories:<slug>``   the stories by or about a person
``genre:<slug>:<n>``        page ``n`` of a genre's titles
``genre-stories:<slug>``    the stories of a genre
==========================  ======================================================

Values are *hydrated*: a fragment carries every card it shows in full, as the old store
held them; one title's card is repeated in every fragment that shows it.

What a change touches: stories, drafts and the layout feed the *story scope* (every
fragment that shows a story), titles and people the *catalogue scope*. A change rebuilds
its scope and :class:`Published` keeps only what differs from what was sent before, so a
save sends the few fragments it changed and the keys that no longer exist as tombstones.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
import xxhash

from ...content.pages import TITLE_CARDS, Pages, story_model
from ...layered import State

STORY_TYPES = frozenset({"Story", "DraftStory", "Layout"})
CATALOGUE_TYPES = frozenset({"Title", "Person"})
_STORY_PREFIXES = ("home", "story:", "more:", "draft:", "tag:", "title-stories:",
                   "person-stories:", "genre-stories:")  # fmt: skip
_CATALOGUE_PREFIXES = ("nav", "title:", "person:", "genre:")

_encode = msgspec.json.Encoder().encode


def story_scope(state: State, pages: Pages) -> Iterator[tuple[str, Any]]:
    """Every fragment that shows a story (or the layout), from ``state``."""
    yield "home", pages.home(state)
    stories = state.get("Story")
    idx = pages.stories(state)
    for s in stories if stories is not None else ():
        page = pages.story(state, s.slug)
        if page is None:  # two stories with one slug: the first one is shown
            continue
        more = page.pop("more")
        yield f"story:{s.slug}", page
        yield f"more:{s.slug}", more
    drafts = state.get("DraftStory")
    for d in drafts if drafts is not None else ():
        yield f"draft:{d.id}", story_model(d, kind="preview")
    for tag in idx.by_tag:
        page = pages.tag(state, tag)
        if page is not None:
            yield f"tag:{tag}", page
    titles = state.get("Title")
    for tid, ids in idx.by_title.items():
        t = titles.get(tid) if titles is not None else None
        if t is not None:
            yield f"title-stories:{tid}", pages.story_cards(state, ids)
    people = state.get("Person")
    about: set[int] = set(idx.by_author)
    if people is not None:
        for tid in idx.by_title:  # the people credited on a title a story is about
            t = titles.get(tid) if titles is not None else None
            if t is not None:
                about.update(p.id for p in (*t.directors, *t.writers, *t.cast))
        for pid in sorted(about):
            p = people.get(pid)
            if p is None or min(people.find(slug=p.slug), key=lambda r: r.id).id != p.id:
                continue  # two people share a slug: the page shows the first one
            ids = list(idx.by_author.get(p.id, ()))  # as Pages.person orders them
            for t in p.titles:
                ids.extend(i for i in idx.by_title.get(t, ()) if i not in ids)
            if ids:
                yield f"person-stories:{p.slug}", pages.story_cards(state, ids)
    for gslug, name in pages.titles(state).genres.items():
        ids = [i for i in idx.newest if name in idx.genres.get(i, ())]
        if ids:
            yield f"genre-stories:{gslug}", pages.story_cards(state, ids)


def catalogue_scope(state: State, pages: Pages) -> Iterator[tuple[str, Any]]:
    """Every fragment that shows titles or people, less their stories, from ``state``."""
    yield "nav", pages.genres(state)
    titles = state.get("Title")
    for t in titles if titles is not None else ():
        page = pages.title(state, t.slug)
        if page is not None and page["id"] == t.id:
            page.pop("stories")
            yield f"title:{t.slug}", page
    people = state.get("Person")
    for p in people if people is not None else ():
        page = pages.person(state, p.slug)
        if page is not None and page["id"] == p.id:
            page.pop("stories")
            yield f"person:{p.slug}", page
    for gslug, name in pages.titles(state).genres.items():
        ids = pages.genre_titles(state, name)
        for n in range(max(1, -(-len(ids) // TITLE_CARDS))):
            start = n * TITLE_CARDS
            cards = pages.title_cards(state, ids[start : start + TITLE_CARDS])
            yield f"genre:{gslug}:{n + 1}", {"name": name, "count": len(ids), "titles": cards}


def scopes_of(changes: Mapping[str, Any] | None) -> tuple[bool, bool]:
    """(story scope touched, catalogue scope touched) by a refresh's ``changes`` (None: a
    snapshot was loaded, so both)."""
    if changes is None:
        return True, True
    types = {t for t, c in changes.items() if c}
    catalogue = bool(types & CATALOGUE_TYPES)  # title cards show on story fragments too
    return catalogue or bool(types & STORY_TYPES), catalogue


class Published:
    """What has been sent, as a digest per key: turns a rebuilt scope into the fragments
    that changed and the keys that went away (tombstones, sent as None)."""

    def __init__(self) -> None:
        self._digest: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._digest)

    def diff(self, fragments: Iterator[tuple[str, Any]], prefixes: tuple[str, ...]
             ) -> list[tuple[str, bytes | None]]:  # fmt: skip
        """The (key, JSON) pairs of ``fragments`` that differ from what was sent, then a
        (key, None) for each key of ``prefixes`` sent before and not rebuilt now."""
        out: list[tuple[str, bytes | None]] = []
        seen: set[str] = set()
        for key, value in fragments:
            body = _encode(value)
            seen.add(key)
            h = xxhash.xxh64_intdigest(body)
            if self._digest.get(key) != h:
                self._digest[key] = h
                out.append((key, body))
        for key in [k for k in self._digest if k.startswith(prefixes) and k not in seen]:
            del self._digest[key]
            out.append((key, None))
        return out


def changed(state: State, pages: Pages, published: Published, changes: Mapping[str, Any] | None
            ) -> list[tuple[str, bytes | None]]:  # fmt: skip
    """The fragments to send after a refresh with ``changes`` (see the module docstring)."""
    stories, catalogue = scopes_of(changes)
    out: list[tuple[str, bytes | None]] = []
    if catalogue:
        out += published.diff(catalogue_scope(state, pages), _CATALOGUE_PREFIXES)
    if stories:
        out += published.diff(story_scope(state, pages), _STORY_PREFIXES)
    return out


__all__ = ["Published", "catalogue_scope", "changed", "scopes_of", "story_scope"]
