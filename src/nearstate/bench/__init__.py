"""Every benchmark, and the data sets they run on.

The store's: :mod:`.datasets` (``nearstate bench data``), :mod:`.store`, :mod:`.versions`,
:mod:`.raw`, :mod:`.reader_cpu`, :mod:`.plot`. The platform's: :mod:`.cms` (the write
path), :mod:`.site` (the read path), :mod:`.compare` and :mod:`.compare_report` (nearstate
against :mod:`.oldpath`, the old CQRS read path kept only as this baseline). Shared:
:mod:`.stats` (percentiles); child processes are started through
:mod:`nearstate.web.processes`. The top of the import order: nothing but the CLI imports
this package.
"""
