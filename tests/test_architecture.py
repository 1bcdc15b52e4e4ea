"""The shape of the package, read from its source (ast), as docs/architecture.md draws it.

- **Layers.** Imports run one way: store <- platform (``content``) <- apps (``web``, then
  ``demo``) <- ``bench`` <- ``cli``. A module may import its own layer and those below,
  never one above; lazy imports (inside functions) count too.
- **No circles.** No module imports, directly or through others, a module that imports it
  (lazy imports count: a circle broken only by a late import is still a circle).
- **Private names stay private.** No module imports another module's ``_name`` (or reads
  ``module._name``); a private *module* (``_native``, the compiled ``_core``) is a module
  of the package and may be imported by its siblings.

Today's exceptions are listed below, each with its reason; the list can only shrink: a
new one fails, and so does one that no longer occurs (remove it from the list).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import nearstate

PACKAGE_DIR = Path(nearstate.__file__).resolve().parent

# (prefix, layer): the first prefix that a module name equals or starts with (then ".")
# gives its layer; everything else under nearstate is the store (layer 0)
LAYERS: tuple[tuple[str, int], ...] = (
    ("nearstate.cli", 5),
    ("nearstate.__main__", 5),
    ("nearstate.bench", 4),
    ("nearstate.demo", 3),
    ("nearstate.web", 2),
    ("nearstate.content", 1),
    ("nearstate.frameworks", 1),
)
LAYER_NAMES = {0: "the store", 1: "the platform", 2: "web", 3: "demo", 4: "bench", 5: "cli"}
# every subpackage, with the layer it belongs to: a new one must be placed here on purpose
SUBPACKAGES = {
    "backends": 0,
    "content": 1,
    "frameworks": 1,
    "web": 2,
    "demo": 3,
    "bench": 4,
    "cli": 5,
}

# (importing module, imported module, private name) -> why it is allowed for now
KNOWN_PRIVATE_IMPORTS: dict[tuple[str, str, str], str] = {
    ("nearstate.bench.oldpath.log", "nearstate.backends.nats_conn", "_reachable"): (
        "the old-path baseline checks that a NATS server answers the way the NATS backends "
        "do (backends/nats_conn.py is another session's file)"
    ),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}
# compiled modules (the C core): importable modules with no Python source
COMPILED = {
    module_name(p.with_name(p.name.split(".")[0] + ".py")) for p in PACKAGE_DIR.rglob("*.so")
}


def layer(module: str) -> int:
    for prefix, n in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return n
    return 0


def is_module(name: str) -> bool:
    return name in MODULES or name in COMPILED


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the module imported (a package's __init__ when a name is taken from it)
    name: str | None  # the name taken (from X import name), if any
    line: int


def _base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, *([node.module] if node.module else [])])


def _owner(name: str) -> str:
    """The module that holds ``name`` (a module, or a name inside one)."""
    while name and not is_module(name):
        name = name.rpartition(".")[0]
    return name


def imports_of(source: str, module: str, is_package: bool) -> Iterator[Import]:
    """Every import of a nearstate module in ``source``, lazy ones included."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "nearstate":
                    yield Import(module, _owner(a.name), None, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, is_package, node)
            if base.split(".")[0] != "nearstate":
                continue
            for a in node.names:
                full = f"{base}.{a.name}"
                if is_module(full):
                    yield Import(module, full, None, node.lineno)
                else:
                    yield Import(module, _owner(base), a.name, node.lineno)


def private_uses(source: str, module: str, is_package: bool) -> Iterator[Import]:
    """Imports of another module's private names, and ``alias._name`` reads of a module
    imported under ``alias``."""
    aliases: dict[str, str] = {}
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = _base(module, is_package, node)
            for a in node.names:
                if is_module(f"{base}.{a.name}"):
                    aliases[a.asname or a.name] = f"{base}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.asname and a.name.split(".")[0] == "nearstate":
                    aliases[a.asname] = a.name
    for imp in imports_of(source, module, is_package):
        if imp.name and _private(imp.name) and imp.target != module:
            yield imp
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and _private(node.attr)
            and aliases[node.value.id] not in COMPILED
            and not is_module(f"{aliases[node.value.id]}.{node.attr}")
        ):
            yield Import(module, aliases[node.value.id], node.attr, node.lineno)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def all_imports() -> list[Import]:
    out = []
    for name, path in MODULES.items():
        out += imports_of(path.read_text(encoding="utf-8"), name, path.name == "__init__.py")
    return out


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


# -- the tests ------------------------------------------------------------------------------


def test_the_sources_are_found() -> None:
    assert {"nearstate", "nearstate.cli", "nearstate.web.editor", "nearstate.bench.stats"} <= set(
        MODULES
    )
    assert "nearstate._core" in COMPILED or "nearstate._native" in MODULES


def test_every_subpackage_has_a_layer() -> None:
    found = {p.parent.name for p in PACKAGE_DIR.glob("*/__init__.py")}
    assert found == set(SUBPACKAGES), "place a new subpackage in LAYERS and SUBPACKAGES"
    for sub, n in SUBPACKAGES.items():
        assert layer(f"nearstate.{sub}") == n, sub


def test_imports_run_one_way() -> None:
    bad = [
        f"{i.source}:{i.line} imports {i.target} ({LAYER_NAMES[layer(i.source)]} may not "
        f"import {LAYER_NAMES[layer(i.target)]})"
        for i in all_imports()
        if layer(i.target) > layer(i.source)
    ]
    assert not bad, "\n".join(bad)


def test_no_import_circles() -> None:
    edges: dict[str, set[str]] = {}
    for i in all_imports():
        if i.target != i.source:
            edges.setdefault(i.source, set()).add(i.target)
    assert cycles(edges) == []


def test_no_module_uses_another_modules_private_names() -> None:
    found: dict[tuple[str, str, str], int] = {}
    for name, path in MODULES.items():
        src = path.read_text(encoding="utf-8")
        for i in private_uses(src, name, path.name == "__init__.py"):
            assert i.name is not None
            found.setdefault((i.source, i.target, i.name), i.line)
    new = {k: v for k, v in found.items() if k not in KNOWN_PRIVATE_IMPORTS}
    gone = set(KNOWN_PRIVATE_IMPORTS) - set(found)
    assert not new, "private names used from another module: " + ", ".join(
        f"{s}:{line} uses {t}.{n}" for (s, t, n), line in sorted(new.items())
    )
    assert not gone, f"no longer used: remove these from KNOWN_PRIVATE_IMPORTS: {sorted(gone)}"


# -- the checks check what they should ----------------------------------------------------


@pytest.mark.parametrize(
    ("source", "module", "is_package", "target", "name"),
    [
        ("from ..content.cms import CMS", "nearstate.web.site", False, "nearstate.content.cms",
         "CMS"),
        ("from . import forms", "nearstate.web.editor", True, "nearstate.web.editor.forms", None),
        ("from .forms import clean", "nearstate.web.editor.stories", False,
         "nearstate.web.editor.forms", "clean"),
        ("def f():\n    import nearstate.bench.stats\n", "nearstate.web.site", False,
         "nearstate.bench.stats", None),
        ("from .. import errors", "nearstate.cli.store", False, "nearstate.errors", None),
        ("from nearstate import open_dataset", "nearstate.web.site", False, "nearstate",
         "open_dataset"),
    ],
)  # fmt: skip
def test_imports_are_resolved(
    source: str, module: str, is_package: bool, target: str, name: str | None
) -> None:
    assert [(i.target, i.name) for i in imports_of(source, module, is_package)] == [(target, name)]


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ("from ..content.cms import _known", True),
        ("from ..content import cms\ncms._known", True),
        ("from ..content.cms import CMS", False),
        ("from .. import _native", False),  # a private module of the package
        ("from ..content import cms\ncms.__name__", False),
    ],
)
def test_private_uses_are_caught(source: str, caught: bool) -> None:
    assert bool(list(private_uses(source, "nearstate.web.site", False))) is caught


def test_a_circle_is_found_however_long() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
