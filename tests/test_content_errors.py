"""The error tree drawn in nearstate.content's docstring is the classes' own."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import nearstate
import nearstate.content
from nearstate.errors import NearstateError


def _drawn() -> dict[str, str]:
    """Each class of the drawn tree -> its parent, by indentation."""
    doc = nearstate.content.__doc__ or ""
    tree = doc[doc.index("    NearstateError") :]
    parents: list[tuple[int, str]] = []
    out: dict[str, str] = {}
    for line in tree.splitlines():
        m = re.match(r"^(\s*(?:[│ ]\s*)*)(?:[├└]── )?([A-Za-z_.]+)", line)
        if not line.strip() or m is None:
            continue
        depth = len(line) - len(line.lstrip(" │├└─"))
        name = m.group(2)
        while parents and parents[-1][0] >= depth:
            parents.pop()
        if parents:
            out[name] = parents[-1][1]
        parents.append((depth, name))
    return out


def _resolve(name: str) -> type:
    if "." not in name:
        return getattr(nearstate, name)
    mod, cls = name.rsplit(".", 1)
    return getattr(importlib.import_module(f"nearstate.content.{mod}"), cls)


def test_the_drawn_error_tree_is_the_classes_tree() -> None:
    drawn = _drawn()
    assert drawn, "no tree found in nearstate.content's docstring"
    for child, parent in drawn.items():
        c, p = _resolve(child), _resolve(parent)
        assert c.__bases__[0] is p, f"{child} derives from {c.__bases__[0].__name__}, not {parent}"
    # every error class the platform defines is drawn
    defined = set()
    for info in pkgutil.iter_modules(nearstate.content.__path__):
        mod = importlib.import_module(f"nearstate.content.{info.name}")
        for name, obj in inspect.getmembers(mod, inspect.isclass):
            if issubclass(obj, NearstateError) and obj.__module__ == mod.__name__:
                defined.add(f"{info.name}.{name}")
    assert defined <= set(drawn), f"not drawn: {sorted(defined - set(drawn))}"
