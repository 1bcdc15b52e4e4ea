"""The two cores and the compressed layouts: the compiled core agrees with the pure-Python
reference, symbol-table pools round-trip and are chosen by size, old and damaged blobs are
answered clearly. Runs under both cores (scripts/test runs it again with NEARSTATE_PURE=1)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

import nearstate
from nearstate import _native, blob, fsst
from nearstate.encoding import ColumnContext, encode_column
from nearstate.errors import FormatError
from nearstate.schema import FieldType

ROOT = Path(__file__).resolve().parents[1]


def _pure(code: str) -> str:
    """Run ``code`` in a fresh interpreter on the pure core; its stdout."""
    env = {**os.environ, "NEARSTATE_PURE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout


def test_the_compiled_core_is_active_in_ci() -> None:
    # CI builds the extension from pyproject/setup.py: a silent fall back to pure Python
    # would leave the compiled core untested
    if os.environ.get("CI") and not os.environ.get("NEARSTATE_PURE"):
        assert _native.core is not None, _native.describe()
    if os.environ.get("NEARSTATE_PURE"):
        assert _native.core is None and _native.NAME == "pure"


def test_version_and_doctor_name_the_core() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "nearstate", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and f"core: {_native.describe()}" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "nearstate", "doctor"],
        capture_output=True,
        text=True,
        env={**os.environ, "NEARSTATE_PURE": "1"},
    )
    assert "pure Python (NEARSTATE_PURE is set)" in out.stdout


# --- FSST ------------------------------------------------------------------------------------


def _words(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    stems = ["https://example.org/", "user/", "Mary ", "John ", "Smith", "-2024-", "ää", "/v1/"]
    out = []
    for _ in range(n):
        parts = [rng.choice(stems) for _ in range(rng.randint(1, 5))]
        parts.append(rng.randbytes(rng.randint(0, 3)).hex())
        out.append("".join(parts).encode())
    return out


def test_fsst_round_trips_and_compresses() -> None:
    values = _words(3000)
    table = fsst.train(values)
    assert 0 < len(table) <= 255 and all(1 <= len(s) <= 8 for s in table)
    codes, ends = fsst.encode(table, values)
    assert len(codes) < 0.6 * sum(map(len, values))
    dec = fsst.decoder(table, "T/x")
    start = 0
    for v, end in zip(values, ends, strict=True):
        assert dec(codes[start:end]) == v
        start = int(end)


def test_fsst_training_is_deterministic() -> None:
    values = _words(2000, seed=5)
    assert fsst.train(values) == fsst.train(list(values))


def test_fsst_escapes_every_byte_value() -> None:
    values = [bytes(range(256)), b"\xff\xff\xff", b"", b"\x00"]
    table = fsst.train(values * 50)
    codes, ends = fsst.encode(table, values)
    dec = fsst.decoder(table, "T/x")
    bounds = [0, *map(int, ends)]
    assert [dec(codes[a:b]) for a, b in pairwise(bounds)] == values


@pytest.mark.skipif(_native.core is None, reason="needs the compiled core (runs in CI)")
def test_native_and_pure_encoders_give_identical_bytes() -> None:
    values = [*_words(1500, seed=3), b"", bytes(range(200))]
    table = fsst.train(values)
    codes, ends = fsst.encode(table, values)
    pure = _pure(
        "import json, sys; from nearstate import fsst\n"
        f"values = [bytes.fromhex(h) for h in {[v.hex() for v in values]!r}]\n"
        f"table = [bytes.fromhex(h) for h in {[s.hex() for s in table]!r}]\n"
        "c, e = fsst.encode(table, values)\n"
        "print(json.dumps([c.hex(), [int(x) for x in e]]))"
    )
    assert json.loads(pure) == [codes.hex(), [int(x) for x in ends]]


def _column(values: list, kind: str = "str", nullable: bool = False):
    ft = FieldType(kind, nullable=nullable)
    out: dict = {}
    meta = encode_column(ft, values, out, "T/f")
    arrays = {
        k: (v if isinstance(v, np.ndarray) else np.frombuffer(v, np.uint8)) for k, v in out.items()
    }
    arrays = {k: v.astype(v.dtype.newbyteorder("=")) for k, v in arrays.items()}
    from nearstate.encoding import open_column

    return meta, arrays, open_column(ft, meta, ColumnContext(arrays, lambda t: None), "T/f")


def test_pools_choose_a_symbol_table_only_where_it_pays() -> None:
    urls = [f"https://pypi.org/project/package-{i}/{i % 7}.{i % 13}/" for i in range(2000)]
    meta, arrays, col = _column(urls)
    assert meta.get("fsst") is True and "T/f.fsym" in arrays
    assert arrays["T/f.pool"].nbytes < 0.5 * sum(len(u) for u in urls)
    assert [col.get(i) for i in range(len(urls))] == urls
    # hex digests: 4 bits a character, so pairs of digits are worth a symbol
    rng = random.Random(2)
    digests = [rng.randbytes(20).hex() for _ in range(2000)]
    meta, arrays, col = _column(digests)
    assert meta.get("fsst") and arrays["T/f.pool"].nbytes < 0.7 * 40 * 2000
    assert [col.get(i) for i in range(len(digests))] == digests
    # random bytes do not compress: stored plain
    blobs = [rng.randbytes(20) for _ in range(2000)]
    meta, arrays, col = _column(blobs, kind="bytes")
    assert not meta.get("fsst")
    assert [col.get(i) for i in range(len(blobs))] == blobs


def test_compressed_pools_keep_nulls_and_duplicates() -> None:
    rng = random.Random(4)
    names = [f"Person Number {rng.randint(0, 400)} of Somewhere" for _ in range(3000)]
    values = [None if i % 11 == 0 else names[i] for i in range(3000)]
    meta, _, col = _column(values, nullable=True)
    assert meta.get("fsst") and meta["pool"] == "ids" and meta.get("nulls")
    assert [col.get(i) for i in range(len(values))] == values


def test_a_damaged_symbol_table_is_refused_naming_the_column() -> None:
    urls = [f"https://example.com/{i}/index.html" for i in range(2000)]
    meta, arrays, _ = _column(urls)
    flen = arrays["T/f.flen"].copy()
    flen[3] = 9  # symbols are 1..8 bytes
    arrays["T/f.flen"] = flen
    from nearstate.encoding import open_column

    with pytest.raises(FormatError, match=r"T/f.*symbol table is damaged"):
        col = open_column(FieldType("str"), meta, ColumnContext(arrays, lambda t: None), "T/f")
        col.get(0)


def test_a_code_beyond_the_table_is_refused() -> None:
    urls = [f"https://example.com/{i}/index.html" for i in range(2000)]
    meta, arrays, _ = _column(urls)
    n = len(arrays["T/f.flen"])
    arrays["T/f.flen"] = arrays["T/f.flen"][: n // 2].copy()
    arrays["T/f.fsym"] = arrays["T/f.fsym"][: n // 2].copy()
    from nearstate.encoding import open_column

    col = open_column(FieldType("str"), meta, ColumnContext(arrays, lambda t: None), "T/f")
    with pytest.raises(FormatError, match="T/f"):
        for i in range(len(urls)):
            col.get(i)


# --- lookups and views agree across cores ----------------------------------------------------


def _dataset(tmp_path: Path) -> Path:
    rng = random.Random(9)
    lines = []
    for i in range(3000):
        lines.append(
            json.dumps(
                {
                    "id": f"pkg-{i:05d}",
                    "n": i * 3 - 500,
                    "score": round(rng.random() * 100, 2),
                    "ok": i % 3 == 0,
                    "url": f"https://files.example.org/pkg-{i % 500}/{rng.randint(0, 9)}.tar.gz",
                    "tags": [f"tag{rng.randint(0, 30)}" for _ in range(rng.randint(0, 4))],
                    "meta": {"author": f"Author {i % 97}", "year": 1990 + i % 30},
                    "note": None if i % 5 else f"note {i}",
                }
            )
        )
    src = tmp_path / "pkgs.jsonl"
    src.write_text("\n".join(lines) + "\n")
    nearstate.import_jsonl(src, type_name="Pkg", key="id", into=tmp_path / "ds")
    return src


def test_both_cores_read_the_same_records(tmp_path: Path) -> None:
    src = _dataset(tmp_path)
    state = nearstate.LocalDataset(tmp_path / "ds").load()
    pkgs = state["Pkg"]
    expected = [json.loads(line) for line in src.read_text().splitlines()]
    mine = [pkgs.get(r["id"]).to_dict() for r in expected]
    assert mine == expected
    assert pkgs.get("missing") is None and pkgs.get(17) is None and "pkg-00001" in pkgs
    assert [r.n for r in pkgs.find(ok=True)][:3] == [-500, -491, -482]
    code = (
        "import json, nearstate\n"
        f"s = nearstate.LocalDataset({str(tmp_path / 'ds')!r}).load()['Pkg']\n"
        "print(json.dumps([r.to_dict() for r in s]))"
    )
    assert json.loads(_pure(code)) == [r.to_dict() for r in pkgs]


def test_views_read_fields_like_the_reference(tmp_path: Path) -> None:
    _dataset(tmp_path)
    pkgs = nearstate.LocalDataset(tmp_path / "ds").load()["Pkg"]
    r = pkgs.get("pkg-00010")
    assert (r.n, r.ok, r.score, r.meta.year, r["url"]) == (
        -470,
        False,
        r.to_dict()["score"],
        2000,
        r.to_dict()["url"],
    )
    with pytest.raises(AttributeError):
        r.n = 5
    with pytest.raises(AttributeError):
        _ = r.nope
    assert r == pkgs.get("pkg-00010") and hash(r) == hash(pkgs.get("pkg-00010"))
    assert r != pkgs.get("pkg-00011")


# --- blob format versions ----------------------------------------------------------------------


def test_a_format_1_blob_still_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Format 1 had no blocked integers and no symbol tables: written that way, it reads."""
    from nearstate import encoding

    def plain(values, out, section):
        a = np.asarray(values).astype(np.uint64)
        out[section] = a.astype(encoding.narrow_uint(int(a.max()) if len(a) else 0))

    monkeypatch.setattr(encoding, "put_uints", plain)
    monkeypatch.setattr(encoding, "FSST_MIN_BYTES", 1 << 60)
    monkeypatch.setattr(blob, "FORMAT_VERSION", 1)
    src = _dataset(tmp_path)
    monkeypatch.undo()
    files = sorted((tmp_path / "ds" / "snapshots").glob("*.blob"))
    assert files
    assert int.from_bytes(files[0].read_bytes()[8:12], "little") == 1
    state = nearstate.LocalDataset(tmp_path / "ds").load()
    first = json.loads(src.read_text().splitlines()[0])
    assert state["Pkg"].get(first["id"]).to_dict() == first


def test_an_unknown_format_version_is_refused_plainly(tmp_path: Path) -> None:
    _dataset(tmp_path)
    path = sorted((tmp_path / "ds" / "snapshots").glob("*.blob"))[0]
    data = bytearray(path.read_bytes())
    data[8:12] = (7).to_bytes(4, "little")
    with pytest.raises(
        FormatError, match=r"format version 7 is not supported.*reads versions 1, 2"
    ):
        blob.parse_blob(bytes(data))


# --- sparse nullable columns ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "make"),
    [
        ("int", lambda i: i * 1_000_003),
        ("float", lambda i: i / 7),
        ("bool", lambda i: i % 2 == 0),
        ("str", lambda i: f"production company {i % 50}"),
        ("text", lambda i: f"a long paragraph about film {i}. " * 3),
    ],
)
def test_mostly_null_columns_store_only_their_values(kind: str, make) -> None:
    n = 3000
    values = [make(i) if i % 9 == 0 else None for i in range(n)]
    meta, arrays, col = _column(values, kind=kind, nullable=True)
    assert meta.get("sparse") is True and "T/f.nrank" in arrays
    assert [col.get(i) for i in range(n)] == values
    with pytest.raises(IndexError):
        col.get(n + 64)


def test_a_few_nulls_keep_the_dense_layout() -> None:
    values = [None if i % 100 == 0 else i for i in range(3000)]
    meta, _, col = _column(values, kind="int", nullable=True)
    assert meta.get("nulls") and not meta.get("sparse")
    assert [col.get(i) for i in range(3000)] == values


def test_sparse_lists_and_records_read_back(tmp_path: Path) -> None:
    lines = []
    for i in range(2000):
        rec: dict = {"id": i}
        if i % 7 == 0:
            rec["box"] = {"gross": i * 10, "currency": "USD" if i % 2 else "EUR"}
            rec["crew"] = [f"person {i % 13}", f"person {i % 17}"]
        else:
            rec["box"] = None
            rec["crew"] = None
        lines.append(json.dumps(rec))
    src = tmp_path / "s.jsonl"
    src.write_text("\n".join(lines) + "\n")
    nearstate.import_jsonl(src, type_name="T", key="id", into=tmp_path / "ds")
    state = nearstate.LocalDataset(tmp_path / "ds").load()
    meta = state.blob.header["types"]["T"]["columns"]
    assert meta["box"].get("sparse") and meta["crew"].get("sparse")
    assert [r.to_dict() for r in state["T"]] == [json.loads(x) for x in lines]


def test_inspect_shows_each_fields_layout_and_the_core(tmp_path: Path) -> None:
    _dataset(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "nearstate", "inspect", str(tmp_path / "ds"), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(out.stdout)
    assert info["core"] == _native.NAME
    fields = info["types"]["Pkg"]["fields"]
    assert "symbol table" in fields["url"]["layout"]
    assert "sparse" in fields["note"]["layout"]
    assert "blocked" in fields["n"]["layout"]  # -500, -497, ... in order
    assert (
        fields["tags"]["layout"].endswith("items: dictionary")
        or "items:" in fields["tags"]["layout"]
    )


def test_without_the_extension_nearstate_imports_warns_once_and_works(tmp_path: Path) -> None:
    import shutil

    pkg = tmp_path / "nearstate"
    shutil.copytree(
        Path(nearstate.__file__).parent, pkg, ignore=shutil.ignore_patterns("*.so", "__pycache__")
    )
    code = (
        "import warnings, json\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import nearstate, nearstate.cli\n"
        "from nearstate import _native\n"
        f"src = {str(tmp_path / 'r.jsonl')!r}\n"
        "open(src, 'w').write(json.dumps({'id': 'a', 'v': [1, 2]}) + '\\n')\n"
        f"nearstate.import_jsonl(src, type_name='T', key='id', into={str(tmp_path / 'ds')!r})\n"
        f"s = nearstate.LocalDataset({str(tmp_path / 'ds')!r}).load()\n"
        "print(json.dumps([_native.NAME, [str(x.message) for x in w], s['T'].get('a').v]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NEARSTATE_PURE"}
    env["PYTHONPATH"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    name, warned, value = json.loads(out.stdout)
    assert name == "pure" and value == [1, 2]
    assert len(warned) == 1 and "was not built" in warned[0] and "NEARSTATE_PURE" in warned[0]


def test_key_probes_agree_with_and_without_tags(tmp_path: Path) -> None:
    from nearstate.index import make_pk_lookup

    _dataset(tmp_path)
    state = nearstate.LocalDataset(tmp_path / "ds").load()
    arrays = state.blob.arrays
    assert arrays["Pkg/#pktag"].dtype == np.uint8
    assert len(arrays["Pkg/#pktag"]) == len(arrays["Pkg/#pk"])
    ts = state["Pkg"]
    col = ts.column("id")
    probes = [
        make_pk_lookup(arrays["Pkg/#pk"], ts._key_at, key_column=col, tags=t)
        for t in (arrays["Pkg/#pktag"], None)
    ]
    keys = [f"pkg-{i:05d}" for i in range(0, 3100, 7)] + ["", "pkg-", "nope", "pkg-00001\0"]
    for k in keys:
        assert probes[0](k) == probes[1](k) == ts.ordinal_of(k)
