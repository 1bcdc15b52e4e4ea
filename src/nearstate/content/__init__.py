"""The platform: the editorial domain on top of the store.

The write side: the CMS (the ``cms`` package: stories and revisions, publishing, layouts,
lookups, and the ingestion status of what was saved; the rules in ``rules``, rich text in
``richtext``, revision diffs in ``revdiff``), its write store on SQLite or PostgreSQL
(``db``, ``migrations``; ``backup``), media (``media``), the outbox (``outbox``) and the
ingestion pipeline (``ingest``, building records with ``resolve``) that turns editorial
content into the render-ready records of ``records`` in a nearstate dataset, and the one
wait for a save to become visible (``wait``); editors' accounts, sessions, the login
throttle and the audit log (``accounts``, ``sessions``, ``throttle``, ``audit``); the film
catalogue (``films``, ``filmdb``). Only the CMS's modules, ``outbox``, ``db`` and
``migrations`` (and ``backup``, which copies the whole store) read or write the CMS's
tables (``tests/test_table_owners.py``).

The read side: page models built from a :class:`~nearstate.State` with no I/O
(``pages``), search (``search``, ``search_map``) and personalisation (``personalize``).

The store (``nearstate``) never imports this package; ``web``, ``demo``, ``bench`` and
the CLI build on it (``docs/architecture.md``).

Errors, all from :class:`~nearstate.NearstateError` (``tests/test_content_errors.py``
checks this tree against the classes)::

    NearstateError
    ├── InputError
    │   ├── cms.InvalidContent      the rules refused the content; .problems say where, why
    │   ├── cms.NotFound            no story, revision or layout with that id
    │   └── media.AssetNotFound     no asset with that id (or no such size)
    ├── cms.EditConflict            someone saved since the revision the change was based on
    ├── db.StoreError               the write store failed; .transient when a retry may work
    │   └── db.IntegrityError       a constraint refused it (a duplicate slug or username)
    └── ingest.PermanentFailure     an outbox event that can never succeed
"""
