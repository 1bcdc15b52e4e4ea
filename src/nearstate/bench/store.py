"""The store benchmark: one JSON Lines file loaded into nearstate and into what a Python
user would otherwise pick — a dict of dicts, an in-memory SQLite table, a zstd Parquet
file — measuring memory, key-lookup latency and load time.

Definitions (every number comes from the same file, in the same process):

* **records** — the number of records in the file (non-blank lines).
* **nearstate** — ``nearstate.import_jsonl(path, type_name=..., key=..., into=WORKDIR/ds)``
  (timed: ``import_s``; ``import_phases_s`` splits it into the importer's own phases:
  *read* = parse the JSON and infer the schema, *stage* = check and stage every record,
  *write* = encode the columns and write the blob), then ``LocalDataset(WORKDIR/ds).load()``
  (memory-mapped, every checksum verified).
  ``memory_bytes.nearstate`` = the blob's bytes (``state.nbytes``: every section is resident
  once touched) **plus** the Python-side overhead of the loaded state, measured with
  :mod:`tracemalloc` around the load and a first lookup.
* **dict** — ``{key: record}`` decoded from the same file with the stdlib's ``json.loads``
  per line, as a Python user would. Its memory is the traced memory after building it
  minus before (json decoding makes fresh objects, so this counts the keys, dicts,
  strings, lists, ints and floats, and the outer dict's table).
* **sqlite** — ``sqlite3.connect(":memory:")``, one table ``t(k PRIMARY KEY, doc TEXT)``
  holding each record as compact JSON text. The key is declared the way a user would
  declare it: ``k INTEGER PRIMARY KEY`` (the rowid itself, no separate index) when every
  key is a 64-bit integer, else ``k TEXT PRIMARY KEY`` (a rowid table plus its unique key
  index). Memory = ``page_count * page_size`` after loading.
* **parquet_zstd** — with pyarrow: a table of the records (``pyarrow.Table.from_pydict``
  over the union of the records' fields, which is ``from_pylist`` when every record has
  the same fields) written by ``pyarrow.parquet.write_table(..., compression="zstd")``;
  the file's size. Without pyarrow (or if pyarrow cannot represent the data) the value
  is ``None`` (``parquet_error`` then says why).
* **lookup** — a key lookup plus reading one field. ``field`` defaults to the first
  top-level field, in the file's field order, present in every record, whose values are
  strings (nulls allowed) and that is not the key. Every system looks up the same
  pre-drawn random sample of existing keys (``lookups`` draws with replacement, fixed
  seed):
  nearstate ``attrgetter(field)(state[type_name].get(k))`` (``rec[field]`` when the name
  is no identifier or is taken by the view's own API, e.g. ``key``); dict ``d[k][field]``
  (``d[k].get(field)`` when some records lack the field); sqlite
  ``conn.execute("SELECT json_extract(doc, '$.<field>') FROM t WHERE k=?", (k,))
  .fetchone()[0]`` (SQL text built once). Lookups run in batches of 100 with
  ``time.perf_counter_ns()`` around each batch, so the timer's own cost is amortised;
  ``lookup_ns_p50``/``lookup_ns_p99`` are the nearest-rank 50th/99th percentiles over
  batches of the ns per lookup. The systems are interleaved batch by batch (A, B, C, A,
  B, C, ...) so machine noise hits them alike, after an untimed warm-up of 5 rounds; the
  garbage collector is disabled during the timing window and re-enabled after. The keys
  are spread over the whole data set, so a large dict misses the CPU caches on most
  lookups; and a batch the OS preempts (a 4 ms time slice is 40,000 ns per lookup over a
  batch) shows in p99, so p99 is only meaningful on an otherwise idle machine.
* **load_ms** — the median wall time of seven ``LocalDataset(...).load()`` calls
  each of ``mmap=True, verify=True`` (``nearstate_mmap``), ``mmap=True, verify=False``
  (``nearstate_mmap_noverify``) and ``mmap=False`` (``nearstate_read``, the file read into
  memory and verified), interleaved after one untimed load of each, from a warm page
  cache (the blob was just written).
* **ratios** — ``memory_vs_dict`` = nearstate / dict memory, ``memory_vs_parquet`` =
  nearstate / parquet_zstd memory (``None`` without parquet), ``lookup_p50_vs_dict`` =
  nearstate / dict lookup p50. Targets: memory ≤ 0.10× dict and ≤ 2× parquet, lookup p50
  ≤ 1.5× dict.
"""

from __future__ import annotations

import gc
import json
import math
import random
import sqlite3
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any

from nearstate.dataset import LocalDataset
from nearstate.errors import DatasetError, InputError
from nearstate.jsonl import import_jsonl
from nearstate.read_state import Record

BATCH = 100
SEED = 20240611
LOAD_REPEATS = 7
WARMUP_ROUNDS = 5

TARGETS = {"memory_vs_dict": 0.10, "memory_vs_parquet": 2.0, "lookup_p50_vs_dict": 1.5}

_I64 = (-(2**63), 2**63 - 1)


def run_store_bench(
    path: str | Path,
    key: str,
    *,
    field: str | None = None,
    type_name: str = "Record",
    workdir: str | Path | None = None,
    lookups: int = 20000,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Load the JSON Lines file ``path`` into nearstate, a dict, SQLite and Parquet; measure.

    Returns ``{"records", "memory_bytes", "lookup_ns_p50", "lookup_ns_p99", "load_ms"}`` (see
    the module docstring for each definition) and extra keys: ``field``, ``ratios``,
    ``import_s``, ``import_phases_s``, ``blob_bytes``, ``file_bytes``, ``memory_detail``,
    ``sqlite_table``, ``lookups``, ``batch`` and ``parquet_error``.
    """
    path = Path(path)
    if lookups < BATCH:
        raise InputError(f"must be at least {BATCH}, got {lookups}", field="lookups")
    say = progress or (lambda _msg: None)
    with ExitStack() as stack:
        if workdir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nearstate-bench-")))
        else:
            work = Path(workdir)
            work.mkdir(parents=True, exist_ok=True)
        ds_dir = work / "ds"
        if ds_dir.exists() and any(ds_dir.iterdir()):
            raise DatasetError(f"{ds_dir} is not empty; give an empty or new workdir")
        return _run(path, key, field, type_name, work, ds_dir, lookups, say)


def _run(
    path: Path,
    key: str,
    field: str | None,
    type_name: str,
    work: Path,
    ds_dir: Path,
    lookups: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    # -- nearstate: import, then load under tracemalloc -------------------------------------
    say("importing into nearstate")
    phases = _PhaseClock(say)
    imported = import_jsonl(path, type_name=type_name, key=key, into=ds_dir, progress=phases)
    import_s = phases.finish()
    ds = LocalDataset(ds_dir)

    # -- dict: stdlib json, memory traced -----------------------------------------------------
    say("building dicts with the stdlib json module")
    d, dict_bytes = _build_dict(path, key)
    records = list(d.values())
    if field is None:
        field = _default_field(records, key)
        if field is None:
            raise InputError(f"{path}: no top-level string field besides the key {key!r}")
    elif field not in imported.schema[type_name].field_names:
        raise InputError(
            f"{path}: no top-level field {field!r} "
            f"(fields: {', '.join(imported.schema[type_name].field_names)})"
        )

    say("loading nearstate (measuring its memory)")
    ns_overhead, state = _load_traced(ds, type_name, field, next(iter(d)))
    ns_bytes = state.nbytes + ns_overhead

    say("timing nearstate loads")
    load_ms = _time_loads(ds)

    # -- sqlite ---------------------------------------------------------------------------------
    say("loading sqlite")
    conn, ddl = _build_sqlite(d)
    page_count = conn.execute("PRAGMA page_count").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    sqlite_bytes = page_count * page_size

    # -- parquet --------------------------------------------------------------------------------
    say("writing parquet (zstd)")
    parquet_bytes, parquet_error = _parquet_size(records, work / "records.parquet")
    del records

    # -- lookups --------------------------------------------------------------------------------
    say("timing lookups")
    rng = random.Random(SEED)
    sample = rng.choices(list(d), k=lookups)
    batches = [sample[i : i + BATCH] for i in range(0, lookups - BATCH + 1, BATCH)]
    systems = {
        "nearstate": _nearstate_lookup(state, type_name, field),
        "dict": _dict_lookup(d, field, always=all(field in r for r in d.values())),
        "sqlite": _sqlite_lookup(conn, field),
    }
    _check_found(systems, sample[:BATCH])
    per_lookup = _time_interleaved(systems, batches)
    conn.close()

    p50 = {name: _percentile(v, 0.50) for name, v in per_lookup.items()}
    p99 = {name: _percentile(v, 0.99) for name, v in per_lookup.items()}
    memory = {
        "nearstate": ns_bytes,
        "dict": dict_bytes,
        "sqlite": sqlite_bytes,
        "parquet_zstd": parquet_bytes,
    }
    return {
        "records": len(d),
        "memory_bytes": memory,
        "lookup_ns_p50": p50,
        "lookup_ns_p99": p99,
        "load_ms": load_ms,
        "field": field,
        "ratios": {
            "memory_vs_dict": ns_bytes / dict_bytes,
            "memory_vs_parquet": ns_bytes / parquet_bytes if parquet_bytes else None,
            "lookup_p50_vs_dict": p50["nearstate"] / p50["dict"],
        },
        "import_s": import_s,
        "import_phases_s": phases.seconds,
        "blob_bytes": imported.blob_bytes,
        "file_bytes": path.stat().st_size,
        "memory_detail": {"nearstate_blob": state.nbytes, "nearstate_python": ns_overhead},
        "sqlite_table": ddl,
        "lookups": len(batches) * BATCH,
        "batch": BATCH,
        "parquet_error": parquet_error,
    }


_PHASE_WORDS = {
    "read": "reading and inferring the schema",
    "stage": "staging records",
    "write": "encoding and writing the blob",
}


class _PhaseClock:
    """The importer's progress callback: times its phases and announces each in words.

    The importer reports a phase's progress after doing the work (every so many lines or
    records), so the time since the previous report is charged to the phase of the
    current one; a phase that reports itself complete announces the next.
    """

    _ORDER = ("read", "stage", "write")

    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self.seconds: dict[str, float] = {}
        self._announced: set[str] = {"read"}  # the caller announces the import's start
        self._phase: str | None = None
        self._start = self._since = time.perf_counter()

    def _announce(self, phase: str) -> None:
        if phase not in self._announced:
            self._announced.add(phase)
            self.say(f"importing into nearstate: {_PHASE_WORDS.get(phase, phase)}")

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._since
        self._phase, self._since = phase, now
        self._announce(phase)
        if done >= total and phase in self._ORDER[:-1]:
            self._announce(self._ORDER[self._ORDER.index(phase) + 1])

    def finish(self) -> float:
        """Charge the time since the last report to the last phase; the seconds since the
        clock was made (the phases' sum)."""
        now = time.perf_counter()
        if self._phase is not None:
            self.seconds[self._phase] += now - self._since
        self._since = now
        return now - self._start


def _build_dict(path: Path, key: str) -> tuple[dict[Any, Any], int]:
    """``{key: record}`` decoded with ``json.loads``; the traced bytes it holds."""
    loads = json.loads

    def build() -> dict[Any, Any]:
        d: dict[Any, Any] = {}
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    rec = loads(line)
                    d[rec[key]] = rec
        return d

    return _traced(build)


def _traced(fn: Callable[[], Any]) -> tuple[Any, int]:
    """``fn()``'s result and the bytes of Python memory it left allocated (tracemalloc)."""
    gc.collect()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = fn()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return result, after - before


def _load_traced(ds: LocalDataset, type_name: str, field: str, some_key: Any) -> tuple[int, Any]:
    """Load the dataset (mmap, verify) and read one field under tracemalloc."""

    def load() -> Any:
        state = ds.load()
        rec = state[type_name].get(some_key)
        if rec is None:
            raise RuntimeError(f"nearstate lost the key {some_key!r}")
        getattr(rec, field)
        return state

    state, overhead = _traced(load)
    return overhead, state


def _time_loads(ds: LocalDataset) -> dict[str, float]:
    modes = {
        "nearstate_mmap": {"mmap": True, "verify": True},
        "nearstate_mmap_noverify": {"mmap": True, "verify": False},
        "nearstate_read": {"mmap": False, "verify": True},
    }
    times: dict[str, list[float]] = {name: [] for name in modes}
    for kw in modes.values():  # warm-up: page cache, imports, lazy module state
        ds.load(**kw)
    for _ in range(LOAD_REPEATS):
        for name, kw in modes.items():
            t0 = time.perf_counter_ns()
            st = ds.load(**kw)
            t1 = time.perf_counter_ns()
            del st
            times[name].append((t1 - t0) / 1e6)
    return {name: statistics.median(v) for name, v in times.items()}


def _build_sqlite(d: dict[Any, Any]) -> tuple[sqlite3.Connection, str]:
    int_keys = all(type(k) is int and _I64[0] <= k <= _I64[1] for k in d)
    ktype = "INTEGER" if int_keys else "TEXT"
    ddl = f"CREATE TABLE t (k {ktype} PRIMARY KEY, doc TEXT)"
    conn = sqlite3.connect(":memory:")
    conn.execute(ddl)
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    with conn:
        conn.executemany("INSERT INTO t VALUES (?, ?)", ((k, dumps(r)) for k, r in d.items()))
    return conn, ddl


def _parquet_size(records: list[dict[str, Any]], out: Path) -> tuple[int | None, str | None]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return None, "pyarrow is not installed"
    names = dict.fromkeys(k for r in records for k in r)
    try:
        table = pa.Table.from_pydict({n: [r.get(n) for r in records] for n in names})
        pq.write_table(table, out, compression="zstd")
    except (pa.ArrowException, ValueError, TypeError, OverflowError) as e:
        return None, f"pyarrow cannot store these records: {e}"
    size = out.stat().st_size
    out.unlink()
    return size, None


def _default_field(records: Iterable[dict[str, Any]], key: str) -> str | None:
    """The first top-level field, in field order, present in every record, whose values are
    strings (or null)."""
    kinds: dict[str, set[type]] = {}  # in first-seen order
    seen: dict[str, int] = {}
    n = 0
    for r in records:
        n += 1
        for k, v in r.items():
            if k not in kinds:
                kinds[k] = set()
                seen[k] = 0
            kinds[k].add(type(v))
            seen[k] += 1
    for k, ks in kinds.items():
        if k != key and seen[k] == n and str in ks and ks <= {str, type(None)}:
            return k
    return None


def _nearstate_lookup(state: Any, type_name: str, field: str) -> Callable[[list[Any]], None]:
    get = state[type_name].get
    # a view reads a field as an attribute unless the name is no identifier or is taken by
    # the view's own API (key, ordinal, to_dict...); then by subscript
    if field.isidentifier() and not hasattr(Record, field):
        read = attrgetter(field)
    else:
        read = itemgetter(field)

    def run(keys: list[Any]) -> None:
        for k in keys:
            read(get(k))

    return run


def _dict_lookup(d: dict[Any, Any], field: str, *, always: bool) -> Callable[[list[Any]], None]:
    if not always:  # some records lack the field

        def run_get(keys: list[Any]) -> None:
            for k in keys:
                d[k].get(field)

        return run_get

    def run(keys: list[Any]) -> None:
        for k in keys:
            d[k][field]

    return run


def _sqlite_lookup(conn: sqlite3.Connection, field: str) -> Callable[[list[Any]], None]:
    label = field.replace('"', '""').replace("'", "''")
    sql = f"SELECT json_extract(doc, '$.\"{label}\"') FROM t WHERE k=?"
    ex = conn.execute

    def run(keys: list[Any]) -> None:
        for k in keys:
            ex(sql, (k,)).fetchone()[0]

    return run


def _check_found(systems: dict[str, Callable[[list[Any]], None]], keys: list[Any]) -> None:
    """Each system must find every key (a failed lookup raises inside its loop)."""
    for name, run in systems.items():
        try:
            run(keys)
        except (AttributeError, KeyError, TypeError) as e:
            raise RuntimeError(f"{name}: a sampled key was not found ({e!r})") from e


def _time_interleaved(
    systems: dict[str, Callable[[list[Any]], None]], batches: list[list[Any]]
) -> dict[str, list[float]]:
    """ns per lookup for each batch, the systems interleaved batch by batch."""
    clock = time.perf_counter_ns
    out: dict[str, list[float]] = {name: [] for name in systems}
    runs = list(systems.items())
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for b in batches[:WARMUP_ROUNDS]:
            for _name, run in runs:
                run(b)
        for b in batches:
            n = len(b)
            for name, run in runs:
                t0 = clock()
                run(b)
                t1 = clock()
                out[name].append((t1 - t0) / n)
    finally:
        if gc_was_enabled:
            gc.enable()
    return out


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


# -- text report ------------------------------------------------------------------------------


def format_store_bench(result: dict[str, Any]) -> str:
    """A plain-text table of a :func:`run_store_bench` result."""
    mem = result["memory_bytes"]
    p50 = result["lookup_ns_p50"]
    p99 = result["lookup_ns_p99"]
    lines = [f"{result['records']:,} records"]
    if "field" in result:
        lines[0] += f"; lookup = key + field {result['field']!r}"
    rows = [("system", "memory MB", "lookup p50 ns", "lookup p99 ns")]
    for name in ("nearstate", "dict", "sqlite", "parquet_zstd"):
        m = mem.get(name)
        rows.append(
            (
                name,
                "n/a" if m is None else f"{m / 1e6:,.2f}",
                _ns(p50.get(name)),
                _ns(p99.get(name)),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for i, r in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(w) if j == 0 else c.rjust(w)
                for j, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    load = result.get("load_ms", {})
    if load:
        lines.append("")
        lines.append(
            "load ms (median): "
            + ", ".join(f"{k.removeprefix('nearstate_')} {v:,.2f}" for k, v in load.items())
        )
    if "import_s" in result:
        phases = result.get("import_phases_s") or {}
        detail = ", ".join(f"{k} {v:.2f}" for k, v in phases.items())
        lines.append(f"import s: {result['import_s']:.2f}" + (f" ({detail})" if detail else ""))
    ratios = result.get("ratios")
    if ratios is None:
        ratios = _ratios(result)
    lines.append("")
    for name, label in (
        ("memory_vs_dict", "memory vs dict"),
        ("memory_vs_parquet", "memory vs parquet"),
        ("lookup_p50_vs_dict", "lookup p50 vs dict"),
    ):
        v = ratios.get(name)
        target = TARGETS[name]
        if v is None:
            lines.append(f"{label:<20} n/a     (target <= {target:g}x)")
        else:
            mark = "ok" if v <= target else "MISSED"
            lines.append(f"{label:<20} {v:.3f}x  (target <= {target:g}x) {mark}")
    if result.get("parquet_error"):
        lines.append(f"parquet: {result['parquet_error']}")
    return "\n".join(lines)


def _ns(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _ratios(result: dict[str, Any]) -> dict[str, float | None]:
    mem, p50 = result["memory_bytes"], result["lookup_ns_p50"]
    pq = mem.get("parquet_zstd")
    return {
        "memory_vs_dict": mem["nearstate"] / mem["dict"],
        "memory_vs_parquet": mem["nearstate"] / pq if pq else None,
        "lookup_p50_vs_dict": p50["nearstate"] / p50["dict"],
    }
