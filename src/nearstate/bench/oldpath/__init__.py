"""The old CQRS read path, kept only as the benchmark baseline (``nearstate bench compare``).

Tudum's read path before its in-memory store, built with real parts on this machine::

    CMS ─► ingestion ─► fragments ─► NATS JetStream stream      (standing in for Kafka)
                                          │ data service (durable consumer)
                                          ▼
                                   PostgreSQL table            (standing in for Cassandra)
                                          │
                      page data service: near-cache, per-key timed refresh  (HTTP)
                                          │
                      page construction: one multi-get per page, same templates (HTTP)

Each box below the CMS runs as its own process (``python -m nearstate.bench.oldpath ROLE``):

- ``ingest``: :func:`.log.run_ingestion` — the old ingestion's last step, publishing the
  render-ready fragments (:mod:`.fragments`) each change touches;
- ``data``: :func:`.log.run_data_service` — stream → table;
- ``pagedata``: :mod:`.pagedata` — table → near-cache → ``GET /fragments``;
- ``pages``: :mod:`.construct` — fragments → HTML.

It shares the CMS, the ingestion pipeline's records, the page builder and the templates
with nearstate's path, so the two show the same pages from the same content.
"""

from .fragments import Published, catalogue_scope, changed, story_scope
from .pagedata import NearCache

__all__ = ["NearCache", "Published", "catalogue_scope", "changed", "story_scope"]
