"""The ``nearstate`` command line: this root registers the verbs; each group lives in a
module of its own, and imports run one way (root -> group modules -> :mod:`.common`).

=============================  =========================================================
module                         verbs
=============================  =========================================================
:mod:`nearstate.cli.store`     ``import``, ``doctor``, ``inspect``, ``export``,
                               ``lookup``, ``diff``, ``history``, ``versions``,
                               ``cleanup``
:mod:`nearstate.cli.writes`    ``put``, ``delete``, ``get``, ``watch``, ``compact``
:mod:`nearstate.cli.backup`    ``backup``, ``restore``, ``clone``
:mod:`nearstate.cli.bench`     ``bench data|store|versions|raw|plot|cms|site|compare``
:mod:`nearstate.cli.cms`       ``cms init|add-user|set-password|import-films|ingest|
                               status|retry|serve``
:mod:`nearstate.cli.site`      ``site serve``
:mod:`nearstate.cli.demo`      ``demo``
:mod:`nearstate.cli.explore`   ``explore`` (the read-only explorer, a web UI)
=============================  =========================================================

The store's verbs are registered here directly; the platform's groups (``cms``, ``site``,
``demo``) by name, and imported only when one of them runs, so the store's CLI loads
nothing of the platform. Other installed packages may add verbs under the entry point
group ``nearstate.commands`` (and ``nearstate.bench_commands`` for ``bench``).

Each verb says what happened in plain words; errors print one line naming what was wrong
and exit 1. ``nearstate``, ``python -m nearstate`` and ``python -m nearstate.cli`` are the
same command.
"""

from __future__ import annotations

import click

from .. import _native
from . import backup, store, writes
from .bench import bench
from .plugins import PluginGroup

PLATFORM = {
    "cms": "nearstate.cli.cms:cms",
    "demo": "nearstate.cli.demo:demo",
    "explore": "nearstate.cli.explore:explore",
    "site": "nearstate.cli.site:site",
}


@click.group(cls=PluginGroup, lazy=PLATFORM, plugins="nearstate.commands")
@click.version_option(
    package_name="nearstate", message=f"%(prog)s %(version)s, core: {_native.describe()}"
)
def main() -> None:
    """nearstate: a whole dataset, compact, in the memory of every process that reads it."""


for _verb in (*store.VERBS, *writes.VERBS, *backup.VERBS, bench):
    main.add_command(_verb)

__all__ = ["main"]
