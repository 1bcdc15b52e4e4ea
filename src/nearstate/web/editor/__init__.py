"""The editor app: server-rendered pages (and a small JSON API) over the CMS.

``create_editor_app(EditorConfig(...))`` returns a Starlette app. Everything works without
JavaScript: forms post, the server answers with a redirect (303) or the form again with
the problems shown. With a dataset and ``run_worker``, the app's lifespan runs an
ingestion worker thread (outbox events → render-ready records) and a consumer for the
preview, which waits for exactly the saved revision (read-your-writes).

Contracts:

- Pages need a login (else a redirect to ``/login?next=...``, only to paths of this site);
  the JSON API answers 401. ``/admin/...`` needs the ``admin`` role (403 otherwise).
- The login is a session in the write store, read with the user's row on every request
  (``auth``, ``content.sessions``): a removed user, a new role, a changed password or a
  "log out everywhere" holds on the next request, in every editor process.
- Logins (the form, ``POST /api/login``) are throttled per account and per client address
  (``content.throttle``): over the limit, 429 with ``Retry-After`` and a plain message,
  without checking the password. Unknown and known accounts cost the same scrypt work.
- What editors do (saves, publishes, restores, uploads, layout saves, user changes,
  logins, logouts and failed logins) is written to the audit log (``content.audit``).
- Every POST form carries the session's CSRF token (hidden field ``csrf``), every API
  change the header ``X-CSRF-Token``; without it: 403, nothing done.
- A body over ``max_body_bytes`` (``max_upload_bytes`` for image uploads) is refused with
  413 before it is parsed.
- Bad input is a 4xx with a message in plain words: 400 (malformed), 404, 409 (somebody
  else saved first: nothing is overwritten), 413, 422 (the content has problems, each
  shown where it is). An unexpected failure is logged and answered with a plain 500 page.
- Pages: ``/`` (stories), ``/stories/new``, ``/stories/{id}`` (edit; POST saves, publishes,
  schedules, unpublishes or previews), ``/stories/{id}/revisions[/{rev}[/restore]]``,
  ``/stories/{id}/preview?revision=N``, ``/stories/{id}/status.json``, ``/lookup/titles``,
  ``/lookup/people``, ``/assets[/{id}]``, ``/layouts[/new|/{id}]``,
  ``/admin/dead-letters[/{event}/retry]``, ``/login``, ``/logout``; ``/account[/...]``,
  ``/admin/users[/{id}[/...]]`` and ``/admin/audit`` (:mod:`.accounts`);
  ``/media/...`` and ``/static/...``. API: ``POST /api/login``, ``POST /api/logout``,
  ``GET|POST /api/stories``, ``GET|PUT /api/stories/{id}``,
  ``POST /api/stories/{id}/publish``, ``GET /api/stories/{id}/status``.
- Every response carries ``X-Content-Type-Options``, ``Referrer-Policy``,
  ``X-Frame-Options`` and a Content-Security-Policy (scripts only from this site or with
  the page's nonce; video frames only from youtube-nocookie.com and vimeo on the preview).

The package, one module per thing an editor does: :mod:`.stories` (write, save, publish,
revisions), :mod:`.preview`, :mod:`.assets` (images, and lookups of titles and people),
:mod:`.layouts` (the home page), :mod:`.login`, :mod:`.accounts` (one's account, users,
the audit log), :mod:`.admin` (dead letters), :mod:`.api` (JSON); beneath them
:mod:`.forms` (the forms as plain functions, no Starlette), :mod:`.requests` (the small
request framework: ``Ctx`` and ``endpoint``), :mod:`.state` (``EditorConfig``, ``Editor``)
and :mod:`.middleware`; :mod:`.app` assembles the routes.
"""

from __future__ import annotations

from .app import create_editor_app
from .state import EditorConfig

__all__ = ["EditorConfig", "create_editor_app"]
