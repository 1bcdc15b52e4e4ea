"""A click group whose verbs may live in modules it imports only when a verb is run.

The root registers the platform's groups (``cms``, ``site``, ``demo``) by name, so
``nearstate --help`` and the store's verbs never import the platform; other installed
packages can add verbs through an entry point group.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import click


class PluginGroup(click.Group):
    """A group that also offers ``lazy`` verbs (name -> ``"module:attribute"``) and the
    commands other installed packages register under the entry point group ``plugins``.
    Both are loaded only when asked for; a lazy verb wins over an entry point of the same
    name. A verb whose module cannot be imported is an error that names the extras."""

    def __init__(
        self,
        *args: Any,
        lazy: Mapping[str, str] | None = None,
        plugins: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})
        self.plugins = plugins

    def _entry_points(self) -> dict[str, Any]:
        if self.plugins is None:
            return {}
        from importlib.metadata import entry_points

        return {ep.name: ep for ep in entry_points(group=self.plugins)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy) | set(self._entry_points()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        try:
            if name in self.lazy:
                module, _, attr = self.lazy[name].partition(":")
                return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
            ep = self._entry_points().get(name)
            return None if ep is None else ep.load()
        except ImportError as e:
            raise click.ClickException(
                f"'{name}' needs the platform's extras: pip install 'nearstate[web]' ({e})"
            ) from None
