"""The CMS's tables are read and written by the CMS alone, read from the source (ast).

The stories, their revisions, tags and references, the layouts and the outbox belong to
the CMS (``content/cms/``), the outbox (``content/outbox.py``) and the write store
(``content/db.py``, ``content/migrations.py``). Everything else — the ingestor, the
editor, the CLI, the demo, the benchmarks — goes through their methods, so there is one
owner of what a status or a row means (issue 19: the ingestor used to write the ingestion
status with its own SQL and the editor patched it again with raw SQL on the outbox).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nearstate

PACKAGE_DIR = Path(nearstate.__file__).resolve().parent

CMS_TABLES = ("stories", "story_revisions", "story_tags", "story_refs", "layouts", "outbox")
OWNERS = (
    "nearstate.content.cms",
    "nearstate.content.outbox",
    "nearstate.content.db",
    "nearstate.content.migrations",
    # the write store as a whole, like db and migrations: a backup counts the stories in
    # the very snapshot it copies, on the database connection that copies it
    "nearstate.content.backup",
)
_SQL = re.compile(r"\b(?:FROM|JOIN|UPDATE|INTO|TABLE)\s+(" + "|".join(CMS_TABLES) + r")\b")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def owned(module: str) -> bool:
    return any(module == o or module.startswith(o + ".") for o in OWNERS)


def sql_on_cms_tables(source: str) -> list[tuple[int, str]]:
    """``(line, table)`` of every string in ``source`` (f-strings' literal parts included)
    that reads or writes one of the CMS's tables."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [(node.lineno, m.group(1)) for m in _SQL.finditer(node.value)]
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "?" for v in node.values)
            found += [(node.lineno, m.group(1)) for m in _SQL.finditer(text)]
    return sorted(set(found))


def test_the_detector_finds_sql_on_a_cms_table() -> None:
    src = (
        'x = "SELECT s.id FROM story_refs r JOIN stories s ON s.id = r.story_id"\n'
        'y = f"UPDATE story_revisions SET token = {t}"\n'
        'z = "INSERT INTO titles (id) VALUES (?)"  # not the CMS\'s\n'
        'w = "the stories from the outbox"  # prose, not SQL\n'
    )
    assert sql_on_cms_tables(src) == [(1, "stories"), (1, "story_refs"), (2, "story_revisions")]


def test_only_the_cms_touches_its_tables() -> None:
    outside, inside = [], 0
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        module = module_name(path)
        hits = sql_on_cms_tables(path.read_text(encoding="utf-8"))
        if owned(module):
            inside += len(hits)
        else:
            outside += [f"{module}:{line}: {table}" for line, table in hits]
    assert inside > 20  # the owners' own SQL is found: the detector reads these files
    assert not outside, "SQL on the CMS's tables outside the CMS:\n" + "\n".join(outside)
