"""The public site: pages built in memory from each process's own copy of the dataset.

``create_site_app(SiteConfig(dataset=...))`` returns a Starlette app. Its lifespan starts a
consumer of the dataset (the whole render-ready state in this process's memory, following
new versions and the Log) and a search index that follows it. Run as many site processes
as you like: each holds the full state and shows every write within milliseconds
(eventual consistency).

Contracts:

- A page is built from one immutable state with no database or network call: the handlers
  are ``async`` and never block (there is nothing to wait for).
- Pages: ``/`` (home), ``/stories/{slug}``, ``/titles/{slug}``, ``/people/{slug}``,
  ``/genres/{slug}[?page=N]``, ``/tags/{slug}``, ``/search?q=...``, ``/profile``. The
  same under ``/api`` answers the page model as JSON (``/api/home`` for the home page).
  What does not exist is a 404 page (or JSON ``{"error": ...}``); before the first state
  is held every page is a 503 saying the site is starting.
- Cache headers: JSON and the pages that do not learn are ``public, max-age=10,
  stale-while-revalidate=60``; HTML pages that read or teach the visitor's profile (home,
  story, title, genre) are ``private, no-cache`` with ``Vary: Cookie``. Every 200 carries
  an ETag (a hash of the body) and answers ``If-None-Match`` with 304.
- Personalisation: a visit to a story, title or genre page learns the page's genres into
  the visitor's profile, a signed cookie (``ns_profile``); nothing is stored on the
  server. ``DNT: 1`` or ``Sec-GPC: 1`` turns learning off; ``/profile`` shows what was
  learned and forgets it on request.
- ``/healthz``: 200 and JSON once a state is held and the Log was confirmed within
  ``max_staleness`` seconds, else 503 with the reason. ``/metrics``: Prometheus text.
- No page runs a script; the Content-Security-Policy says so.

The package: :mod:`.state` (``SiteConfig``, the page cache, ``Site``), :mod:`.app` (the
routes and ``create_site_app``) and :mod:`.html` (a card's markup, shared with the editor).
"""

from __future__ import annotations

from .app import create_site_app
from .html import card_html
from .state import NotReady, Site, SiteConfig

__all__ = ["NotReady", "Site", "SiteConfig", "card_html", "create_site_app"]
