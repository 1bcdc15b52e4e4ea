"""The editor app's state: its configuration (:class:`EditorConfig`) and what one app
holds while it runs (:class:`Editor`: the CMS, templates, the preview's consumer and the
in-process ingestion worker).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from starlette.requests import Request
from starlette.templating import Jinja2Templates

from ...content import throttle
from ...content.cms import CMS
from ...content.db import WriteStore
from ...content.media import (
    MAX_UPLOAD_BYTES,
    MediaConfig,
    asset_url,
)
from ...content.wait import Ingested
from ...errors import InputError
from .. import auth
from ..site.html import card_html, rich_html
from .forms import EMBEDS, dtlocal, when, when_exact

HERE = Path(__file__).parent.parent
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EditorConfig:
    """What the editor app works on.

    ``dataset``: a nearstate dataset for the preview (and the in-process worker with
    ``run_worker``); without one the preview says it is not available. ``secret_key``
    derives the CSRF tokens from the session cookies' tokens. ``session_max_age``: how
    long a login lasts, in seconds (12 hours), however active. ``session_idle_timeout``:
    how long it lasts without a request, in seconds (2 hours; 0: no limit); after it the
    next request is sent to the login page, which says why. ``login_limits``: failed
    logins allowed per account and per client address before logins are refused with 429
    (5 and 20 in 15 minutes; see ``content.throttle``). ``max_body_bytes``: the largest
    request body accepted; ``max_upload_bytes``: the same for image uploads
    (``POST /assets``). ``search_cache``: the host's cache directory of the site's
    search index (``content.search_map``; the sites' ``--search-cache``): the choosers
    then map the snapshot's part the sites share instead of indexing the state in this
    process (about 2 kB per title or person)."""

    store: WriteStore
    media: MediaConfig
    secret_key: str
    dataset: Any | None = None
    run_worker: bool = True
    https_only: bool = False
    session_max_age: int = 12 * 3600
    session_idle_timeout: int = 2 * 3600
    preview_timeout: float = 5.0
    max_body_bytes: int = 2 * 1024 * 1024
    site_url: str | None = None
    max_upload_bytes: int = MAX_UPLOAD_BYTES + 1024 * 1024
    login_limits: throttle.Limits = field(default_factory=throttle.Limits)
    search_cache: Path | None = None


class Editor:
    """What the routes share: the config, the CMS, the templates, the preview's consumer
    and (with ``run_worker``) the ingestion worker."""

    def __init__(self, config: EditorConfig):
        self.config = config
        self.store = config.store
        self.cms = CMS(config.store)
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters["when"] = when
        env.filters["when_exact"] = when_exact
        env.filters["dtlocal"] = dtlocal
        env.filters["rich"] = rich_html  # a rich paragraph's source as sanitised HTML
        env.globals["thumb"] = self.thumb
        env.globals["card_html"] = card_html  # the preview renders the site's story
        env.globals["embed_ok"] = lambda url: isinstance(url, str) and url.startswith(EMBEDS)
        site = config.site_url or ""
        env.globals["site_url"] = site if urlsplit(site).scheme in ("http", "https") else ""
        self.templates = Jinja2Templates(env=env)
        self.consumer: Any | None = None
        self.worker: Any | None = None
        self._search: Any | None = None  # the choosers' index (False: cannot be made)
        self._lock = threading.Lock()
        # events processed by the in-process worker: a preview waiting for a save wakes
        # at once instead of polling the write store (content.wait.wait_visible)
        self.ingested = Ingested()
        self._users = 0
        self.cookie = auth.CookieOptions(
            secure=config.https_only,
            max_age=int(config.session_max_age),
            idle=max(0, int(config.session_idle_timeout)),
        )
        base = urlsplit(config.media.base_url)
        self.img_src = "'self' data:"
        if base.scheme in ("http", "https") and base.netloc:
            self.img_src += f" {base.scheme}://{base.netloc}"

    def web_session(self, request: Request) -> auth.WebSession:
        """The request's login (blocks on the write store), kept on ``request.state``."""
        web = auth.load_session(self.store, self.config.secret_key, self.cookie, request.cookies)
        request.state.web = web
        return web

    def thumb(self, asset: Mapping[str, Any], size: str = "small") -> str:
        try:
            return asset_url(self.config.media, asset, size)
        except (InputError, KeyError):
            return ""

    def start(self) -> None:
        """Start the worker and the consumer (once, however many lifespans run: a second
        test client on the same app shares them)."""
        with self._lock:
            self._users += 1
            if self._users == 1:
                self._start()

    def stop(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._stop()

    def _start(self) -> None:
        ds = self.config.dataset
        if ds is None:
            return
        if self.config.run_worker:
            from ...content.ingest import IngestWorker, ingestor_for

            ingestor = ingestor_for(self.store, ds, self.config.media)
            self.worker = IngestWorker(ingestor, on_event=self.ingested).start()
        self.consumer = ds.consumer()
        self.consumer.start(wait=False)
        # the choosers' index, made now so that the first search does not wait for it
        threading.Thread(target=self._index_at_start, name="editor-search", daemon=True).start()

    def _index_at_start(self) -> None:
        """Once the consumer holds a version: the choosers' index, then every object so
        far out of the collector's reach (``gc.freeze``), as the site does. The state and
        the index are long-lived, and full collections scanning them paused every thread
        of the editor, its previews included, for 150-300 ms (bench site's save → preview
        outliers)."""
        c = self.consumer
        deadline = time.monotonic() + 60.0
        while c is not None and not c.wait_for_version(None, 1.0):
            if self.consumer is not c or time.monotonic() > deadline:
                return
        if self.search_index() is not None:
            gc.collect()
            gc.freeze()

    def search_index(self) -> Any | None:
        """The site's search index over the consumer's state, following it (made on the
        first call, for the choosers); None without a dataset. With ``search_cache`` the
        snapshot's part is the file the sites of this host map too."""
        with self._lock:
            if self._search is None and self.consumer is not None:
                from ...content.search import SearchIndex
                from ...content.search_map import HostSearchIndex

                root = self.config.search_cache
                index = SearchIndex() if root is None else HostSearchIndex(Path(root))
                try:
                    self._search = index.follow(self.consumer)
                except Exception:  # not the content schema: the choosers use the write store
                    index.unfollow()
                    self._search = False
                    log.warning("editor: the choosers cannot index this dataset", exc_info=True)
            return None if self._search is False else self._search  # (an index has a len)

    def _stop(self) -> None:
        if self._search not in (None, False):
            self._search.unfollow()
        self._search = None
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        if self.consumer is not None:
            self.consumer.stop()
            self.consumer = None
