"""The platform's write side: the editorial CMS, its write store, the outbox and the
ingestion pipeline that turns editorial content into render-ready records in a nearstate
dataset. The store (``nearstate``) never imports this package."""
