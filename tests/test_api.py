"""The public API: ``nearstate.__all__`` is exactly what is expected, every name in it
imports, every exception derives from NearstateError, and the store package never imports
the (future) ``nearstate.content`` and ``nearstate.web`` packages."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import nearstate

EXPECTED_ALL = [
    "AnnouncementWatcher",
    "Announcer",
    "BlobError",
    "BlobNotFound",
    "BlobStore",
    "Changes",
    "ChecksumError",
    "Compactor",
    "ConflictError",
    "Consumer",
    "CountChange",
    "CycleError",
    "CycleResult",
    "Dataset",
    "DatasetError",
    "DeltaError",
    "Field",
    "FieldType",
    "FormatError",
    "HashIndex",
    "ImportResult",
    "Incremental",
    "InputError",
    "LayeredState",
    "LocalDataset",
    "LockedError",
    "Log",
    "LogError",
    "LogTrimmed",
    "LogUnavailable",
    "LongText",
    "NatsDataset",
    "NearstateError",
    "OrderedIndex",
    "Producer",
    "Query",
    "ReadState",
    "ReadTimeout",
    "Record",
    "Ref",
    "RefreshEvent",
    "RequiredFields",
    "Schema",
    "SchemaError",
    "SchemaInferrer",
    "ServerUnreachable",
    "State",
    "Token",
    "Transaction",
    "TypeDef",
    "TypeState",
    "WriteState",
    "Writer",
    "__version__",
    "above",
    "below",
    "between",
    "compact",
    "export_jsonl",
    "export_records",
    "from_bytes",
    "import_jsonl",
    "infer_schema",
    "load",
    "one_of",
    "open",
    "prefix",
    "record",
]

FORBIDDEN = ("nearstate.content", "nearstate.web", "nearstate.demo")
PACKAGE_DIR = Path(nearstate.__file__).resolve().parent
# the packages that may import the store, not vice versa (their own order is guarded by
# tests/test_architecture.py)
EXCLUDED_DIRS = ("content", "web", "demo", "bench")
# the platform's verbs (loaded by the CLI's root only when one of them runs)
EXCLUDED_FILES = (
    "cli/cms.py", "cli/site.py", "cli/demo.py", "cli/platform.py",
    "cli/explore.py",  # serves the explorer (web/): an app verb, like site and cms
)  # fmt: skip


def test_all_is_sorted() -> None:
    assert sorted(nearstate.__all__) == nearstate.__all__


def test_all_is_the_expected_list() -> None:
    assert nearstate.__all__ == EXPECTED_ALL


def test_all_has_no_duplicates() -> None:
    assert len(set(nearstate.__all__)) == len(nearstate.__all__)


@pytest.mark.parametrize("name", EXPECTED_ALL)
def test_every_name_imports(name: str) -> None:
    assert hasattr(nearstate, name)
    ns: dict = {}
    exec(f"from nearstate import {name}", ns)
    assert ns[name] is getattr(nearstate, name)


def test_star_import_gives_exactly_all() -> None:
    ns: dict = {}
    exec("from nearstate import *", ns)
    assert {k for k in ns if k != "__builtins__"} == set(EXPECTED_ALL)


def test_version() -> None:
    assert isinstance(nearstate.__version__, str)
    assert nearstate.__version__.count(".") >= 2


def test_exceptions_derive_from_nearstate_error() -> None:
    exceptions = [
        getattr(nearstate, n)
        for n in nearstate.__all__
        if isinstance(getattr(nearstate, n), type)
        and issubclass(getattr(nearstate, n), BaseException)
    ]
    assert {e.__name__ for e in exceptions} == {
        "BlobError",
        "BlobNotFound",
        "ConflictError",
        "LogError",
        "LogTrimmed",
        "LogUnavailable",
        "ReadTimeout",
        "CycleError",
        "DeltaError",
        "LockedError",
        "ServerUnreachable",
        "ChecksumError",
        "DatasetError",
        "FormatError",
        "InputError",
        "NearstateError",
        "SchemaError",
    }
    for e in exceptions:
        assert issubclass(e, nearstate.NearstateError), e
        assert issubclass(e, Exception)
    assert issubclass(nearstate.FormatError, nearstate.BlobError)
    assert issubclass(nearstate.ChecksumError, nearstate.BlobError)
    assert issubclass(nearstate.ServerUnreachable, nearstate.DatasetError)


def test_errors_carry_their_context() -> None:
    e = nearstate.InputError("bad", line=3, field="a.b")
    assert (e.line, e.field) == (3, "a.b")
    assert str(e) == "line 3, field 'a.b': bad"
    assert str(nearstate.InputError("bad")) == "bad"
    c = nearstate.ChecksumError("x fails", section="T/id")
    assert c.section == "T/id" and str(c) == "x fails"


# --- the store never imports content or web -------------------------------------------------


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool) -> set[str]:
    """Absolute names of every module a source file imports (statically or by a literal
    name given to importlib.import_module / __import__)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # from pkg import sub
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
            if name in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.add(arg.value)
    return found


def forbidden_imports(source: str, module: str, is_package: bool) -> set[str]:
    return {
        m
        for m in imported_modules(source, module, is_package)
        if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)
    }


def store_sources() -> list[Path]:
    out = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(PACKAGE_DIR)
        if rel.parts[0] in EXCLUDED_DIRS or rel.as_posix() in EXCLUDED_FILES:
            continue
        out.append(path)
    return out


def test_the_store_sources_are_found() -> None:
    names = {module_name(p) for p in store_sources()}
    expected = {
        "nearstate",
        "nearstate.errors",
        "nearstate.schema",
        "nearstate.encoding",
        "nearstate.blob",
        "nearstate.index",
        "nearstate.write_state",
        "nearstate.read_state",
        "nearstate.infer",
        "nearstate.dataset",
        "nearstate.jsonl",
    }
    assert expected <= names
    assert not any(n.startswith(FORBIDDEN) for n in names)


@pytest.mark.parametrize("path", store_sources(), ids=lambda p: module_name(p))
def test_store_never_imports_content_or_web(path: Path) -> None:
    bad = forbidden_imports(
        path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py"
    )
    assert not bad, f"{module_name(path)} imports {sorted(bad)}"


@pytest.mark.parametrize(
    ("source", "module", "is_package"),
    [
        ("import nearstate.web", "nearstate.cli", False),
        ("import nearstate.content.render as r", "nearstate.cli", False),
        ("from nearstate import web", "nearstate.cli", False),
        ("from nearstate.content import page", "nearstate.cli", False),
        ("from .web import app", "nearstate.cli", False),
        ("from . import content", "nearstate.cli", False),
        ("from .. import web", "nearstate.bench.store", False),
        ("from ..content.x import y", "nearstate.bench.store", False),
        ("from .content import x", "nearstate", True),
        ("def f():\n    from nearstate.web import serve\n", "nearstate.cli", False),
        ("import importlib\nimportlib.import_module('nearstate.web')", "nearstate.cli", False),
        ("__import__('nearstate.content')", "nearstate.cli", False),
    ],
)
def test_the_import_check_catches(source: str, module: str, is_package: bool) -> None:
    assert forbidden_imports(source, module, is_package)


@pytest.mark.parametrize(
    ("source", "module", "is_package"),
    [
        ("import nearstate.webhooks", "nearstate.cli", False),
        ("from .contentious import x", "nearstate.cli", False),
        ("from . import schema, blob", "nearstate.cli", False),
        ("from .. import errors", "nearstate.bench.store", False),
        ("import web", "nearstate.cli", False),
    ],
)
def test_the_import_check_allows(source: str, module: str, is_package: bool) -> None:
    assert not forbidden_imports(source, module, is_package)


def test_importing_the_store_does_not_load_content_or_web() -> None:
    import subprocess
    import sys

    code = (
        "import sys, nearstate, nearstate.cli, nearstate.jsonl, nearstate.dataset; "
        "bad = [m for m in sys.modules if m.startswith(('nearstate.content', 'nearstate.web'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_modules_import_cleanly() -> None:
    for path in store_sources():
        name = module_name(path)
        if name.startswith("nearstate.bench"):
            continue  # benchmarks need optional extras
        importlib.import_module(name)
