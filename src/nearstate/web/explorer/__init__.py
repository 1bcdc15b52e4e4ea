"""The explorer: a read-only web UI over any dataset, in the spirit of Hollow's Explorer,
History and Diff UIs (``nearstate explore DATASET``, and the same pages at ``/explore/`` in
the editor app, for admins).

=====================================  =======================================================
page                                   what it shows
=====================================  =======================================================
``/``                                  the types: key, records, bytes; the version and Log
``/types/T``                           bytes per field; records paged, or found by value (any
                                       field with an index), by range or by prefix (fields
                                       with an ordered index)
``/types/T/record?key=K``              every field; references link to their records
``/types/T/history?key=K``             the versions in which the record changed, field by field
``/versions``                          the versions kept; pick two to compare
``/diff?from=V1&to=V2``                records added, removed and changed, field by field
``/log``                               the Log's tail not yet compacted; what is known of
                                       the dataset's readers (lag, staleness)
=====================================  =======================================================

Every page takes ``?v=N`` to read version N instead of the current state (the announced
version with the Log's tail over it, as a reader sees it).

Contracts: it never changes data. Every route is a GET; any other method is refused with
405 before routing; it reads the ports through their reading methods only (see
:mod:`.data`). Bad input — an unknown type, version or page, a malformed key or bound —
answers a plain 400 or 404 page saying what was wrong.
"""

from .app import ExplorerConfig, create_explorer_app

__all__ = ["ExplorerConfig", "create_explorer_app"]
