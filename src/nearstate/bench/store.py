"""The store benchmark: one JSON Lines file loaded into nearstate and into what a Python
user would otherwise pick — a dict of dicts, an in-memory SQLite table, a zstd Parquet
file — measuring memory, key-lookup latency, reading several fields, finding records by a
secondary field, and load time.

One module over ~600 lines on purpose: the definitions below are the contract of every
figure in ``docs/benchmarks.md``, and each measure sits next to the definition it
implements; split, a reader would check one against the other across files.

Definitions (every number comes from the same file, in the same process):

* **records** — the number of records in the file (non-blank lines).
* **core** — which core of nearstate ran: ``nearstate._native.NAME``, ``"native"`` (the
  compiled C core) or ``"pure"`` (the pure-Python reference: ``NEARSTATE_PURE=1``, or the
  extension is not built). Every nearstate figure below is that core's.
* **nearstate** — ``nearstate.import_jsonl(path, type_name=..., key=..., into=WORKDIR/ds)``
  (timed: ``import_s``; ``import_phases_s`` splits it into the importer's own phases:
  *read* = parse, check, stage and encode the file a part at a time (worker processes for
  a large file), *write* = join the parts by columns and write the blob; an import that
  other types refer to stages everything at once and also reports *stage*), then
  ``LocalDataset(WORKDIR/ds).load()`` (memory-mapped, every checksum verified).
  ``memory_bytes.nearstate`` = the blob's bytes (``state.nbytes``: every section is resident
  once touched) **plus** the Python-side overhead of the loaded state, measured with
  :mod:`tracemalloc` around the load and a first lookup, the least of three loads (so
  without the secondary index that **find** builds later: that is ``find_index_bytes``;
  and without another thread's allocations, which tracemalloc counts too).
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
  batches of the ns per lookup. The keys are spread over the whole data set, so a large
  dict misses the CPU caches on most lookups.
* **five fields** — a key lookup plus reading five fields of the record: ``five_fields``
  = the first five top-level fields, in the file's field order (the order in which the
  records first show them), present in every record, other than the key (fewer when
  there are fewer; any type, nulls allowed; nested records are read as their view or
  dict, not walked). The same keys and batches as **lookup**: nearstate
  ``attrgetter(f1, ..., f5)(ts.get(k))`` (a field that cannot be an attribute, as above,
  by subscript), dict ``itemgetter(f1, ..., f5)(d[k])`` (five subscripts). Per system
  ``five_fields_ns_p50``/``five_fields_ns_p99``, ns per lookup, as for **lookup**.
* **find** — the records whose ``find_field`` equals a value, reading ``field`` (the
  lookup's) of every match. ``find_field`` is ``--find-field`` when given (a top-level
  field whose values are scalars: no lists or objects), else chosen: among the top-level
  fields present in every record, other than the key, whose values are all of one type
  among str, int and bool (no nulls), those with between 2 and n/2 distinct values; of
  these the one with the most distinct values (the smallest groups), the first in field
  order on a tie. When none qualifies the find figures are ``None`` and ``find_error``
  says why. Values are drawn with replacement (fixed seed) from the records' values of
  ``find_field``, so a value is drawn as often as records hold it. nearstate
  ``ts.find(**{find_field: v})`` then ``field`` of each match as in **lookup**; the peer
  ``groups[v]`` — a dict of lists of the same record dicts as **dict**, built once,
  untimed — then ``r[field]`` of each match. nearstate's hash index is built by one
  untimed ``find`` first. ``find_index_bytes`` = the traced memory of building each index
  (informative: the dict of lists holds its lists and table, the record dicts and the
  values are shared with **dict**; nearstate's is its index over ordinals). A find batch
  holds ``find_batch`` = ⌈100 / g⌉ calls, g = ``find_matches_mean``, the mean number of
  matches of a drawn value (Σ group² / n), so a batch reads about as many records as a
  lookup batch; there are as many find batches as lookup batches (``find_calls`` in all).
  ``find_ns_p50``/``find_ns_p99`` are per call.
* **timing** — lookup, five fields and find run in one timing window, interleaved batch
  by batch (lookup for nearstate, dict and sqlite, then five fields for nearstate and
  dict, then find for nearstate and dict; round after round) so machine noise hits them
  alike, after an untimed warm-up of 5 rounds; the garbage collector is disabled during
  the window and re-enabled after. A batch the OS preempts (a 4 ms time slice is 40,000
  ns per lookup over a batch) shows in p99, so p99 is only meaningful on an otherwise
  idle machine.
* **load_ms** — the median wall time of seven ``LocalDataset(...).load()`` calls
  each of ``mmap=True, verify=True`` (``nearstate_mmap``), ``mmap=True, verify=False``
  (``nearstate_mmap_noverify``) and ``mmap=False`` (``nearstate_read``, the file read into
  memory and verified), interleaved after one untimed load of each, from a warm page
  cache (the blob was just written); after each, untimed, the state is dropped and the
  garbage collector run, so a load never pays for the previous state's teardown.
* **ratios** — nearstate / peer: ``memory_vs_dict`` and ``memory_vs_parquet`` (memory;
  ``None`` without parquet), ``lookup_p50_vs_dict``, ``lookup_p99_vs_dict``,
  ``five_fields_p50_vs_dict`` and ``find_p50_vs_dict`` (``None`` without a find field).
  Targets (``TARGETS``, each met when the ratio is at most the target): memory ≤ 0.10×
  dict and ≤ 1.0× parquet, lookup p50 ≤ 1.0× dict and p99 ≤ 1.5× dict, five fields p50 ≤
  1.2× dict, find p50 ≤ 1.5× dict.
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
from functools import partial
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any

from nearstate import _native
from nearstate.dataset import LocalDataset
from nearstate.errors import DatasetError, InputError
from nearstate.jsonl import import_jsonl
from nearstate.read_state import Record

from .stats import percentile

BATCH = 100
SEED = 20240611
LOAD_REPEATS = 7
WARMUP_ROUNDS = 5
FIVE = 5

TARGETS = {
    "memory_vs_dict": 0.10,
    "memory_vs_parquet": 1.0,
    "lookup_p50_vs_dict": 1.0,
    "lookup_p99_vs_dict": 1.5,
    "five_fields_p50_vs_dict": 1.2,
    "find_p50_vs_dict": 1.5,
}

_I64 = (-(2**63), 2**63 - 1)

Run = Callable[[list[Any]], None]


def run_store_bench(
    path: str | Path,
    key: str,
    *,
    field: str | None = None,
    find_field: str | None = None,
    type_name: str = "Record",
    workdir: str | Path | None = None,
    lookups: int = 20000,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Load the JSON Lines file ``path`` into nearstate, a dict, SQLite and Parquet; measure.

    Returns ``{"records", "memory_bytes", "lookup_ns_p50", "lookup_ns_p99",
    "five_fields_ns_p50", "five_fields_ns_p99", "find_ns_p50", "find_ns_p99", "load_ms"}``
    (see the module docstring for each definition) and extra keys: ``core``, ``field``,
    ``five_fields``, ``find_field``, ``find_error``, ``find_values``, ``find_matches_mean``,
    ``find_calls``, ``find_batch``, ``find_index_bytes``, ``ratios``, ``targets``,
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
        return _run(path, key, field, find_field, type_name, work, ds_dir, lookups, say)


def _run(
    path: Path,
    key: str,
    field: str | None,
    find_field: str | None,
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
    names = imported.schema[type_name].field_names

    # -- dict: stdlib json, memory traced -----------------------------------------------------
    say("building dicts with the stdlib json module")
    d, dict_bytes = _build_dict(path, key)
    records = list(d.values())
    stats = _FieldStats(records)
    if field is None:
        field = stats.default_field(key)
        if field is None:
            raise InputError(f"{path}: no top-level string field besides the key {key!r}")
    elif field not in names:
        raise InputError(f"{path}: no top-level field {field!r} (fields: {', '.join(names)})")
    five = [f for f in stats.always() if f != key and f in names][:FIVE]
    if not five:
        raise InputError(f"{path}: no top-level field besides the key {key!r} in every record")
    find_error = None
    if find_field is None:
        find_field = stats.find_field(key)
        if find_field is None:
            find_error = (
                f"no top-level str, int or bool field (no nulls) in every record, other "
                f"than the key, with between 2 and {stats.n // 2} distinct values"
            )
    elif find_field not in names:
        raise InputError(
            f"{path}: no top-level field {find_field!r} to find by (fields: {', '.join(names)})"
        )
    elif not stats.scalar(find_field):
        raise InputError(
            f"{path}: cannot find by {find_field!r}: its values include lists or objects"
        )

    say("loading nearstate (measuring its memory)")
    ns_overhead, state = _load_traced(ds, type_name, field, next(iter(d)))
    ns_bytes = state.nbytes + ns_overhead
    ts = state[type_name]

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

    # -- the batches: keys for lookup and five fields, values for find ---------------------------
    rng = random.Random(SEED)
    sample = rng.choices(list(d), k=lookups)
    batches = [sample[i : i + BATCH] for i in range(0, lookups - BATCH + 1, BATCH)]
    always = all(field in r for r in records)
    systems: dict[tuple[str, str], tuple[Run, list[list[Any]]]] = {
        ("lookup", "nearstate"): (_nearstate_lookup(ts, field), batches),
        ("lookup", "dict"): (_dict_lookup(d, field, always=always), batches),
        ("lookup", "sqlite"): (_sqlite_lookup(conn, field), batches),
        ("five_fields", "nearstate"): (_nearstate_lookup(ts, *five), batches),
        ("five_fields", "dict"): (_dict_lookup(d, *five, always=True), batches),
    }
    find_info: dict[str, Any] = {
        "find_values": None,
        "find_matches_mean": None,
        "find_calls": None,
        "find_batch": None,
        "find_index_bytes": None,
    }
    if find_field is not None:
        say(f"building the find indexes on {find_field!r}")
        find_always = all(find_field in r for r in records)
        values = [r[find_field] if find_always else r.get(find_field) for r in records]
        groups, groups_bytes = traced(partial(_group, records, values))
        matches_mean = sum(len(g) ** 2 for g in groups.values()) / len(records)
        per_batch = math.ceil(BATCH / matches_mean)
        drawn = rng.choices(values, k=len(batches) * per_batch)
        del values
        find_batches = [drawn[i : i + per_batch] for i in range(0, len(drawn), per_batch)]
        ns_index_bytes = traced(lambda: len(ts.find(**{find_field: drawn[0]})))[1]
        _check_find(ts, find_field, groups, drawn[:per_batch])
        systems[("find", "nearstate")] = (_nearstate_find(ts, find_field, field), find_batches)
        systems[("find", "dict")] = (_dict_find(groups, field, always=always), find_batches)
        find_info = {
            "find_values": len(groups),
            "find_matches_mean": matches_mean,
            "find_calls": len(drawn),
            "find_batch": per_batch,
            "find_index_bytes": {"nearstate": ns_index_bytes, "dict": groups_bytes},
        }
    del records

    # -- timing -----------------------------------------------------------------------------------
    say("timing lookups, five fields and finds")
    _check_found(systems)
    per_item = _time_interleaved(systems, rounds=len(batches))
    conn.close()

    p50: dict[str, dict[str, float]] = {"lookup": {}, "five_fields": {}, "find": {}}
    p99: dict[str, dict[str, float]] = {"lookup": {}, "five_fields": {}, "find": {}}
    for (figure, system), v in per_item.items():
        p50[figure][system] = percentile(v, 0.50)
        p99[figure][system] = percentile(v, 0.99)
    memory = {
        "nearstate": ns_bytes,
        "dict": dict_bytes,
        "sqlite": sqlite_bytes,
        "parquet_zstd": parquet_bytes,
    }
    result = {
        "records": len(d),
        "core": _native.NAME,
        "memory_bytes": memory,
        "lookup_ns_p50": p50["lookup"],
        "lookup_ns_p99": p99["lookup"],
        "five_fields_ns_p50": p50["five_fields"],
        "five_fields_ns_p99": p99["five_fields"],
        "find_ns_p50": p50["find"] or None,
        "find_ns_p99": p99["find"] or None,
        "load_ms": load_ms,
        "field": field,
        "five_fields": five,
        "find_field": find_field,
        "find_error": find_error,
        **find_info,
        "import_s": import_s,
        "import_phases_s": phases.seconds,
        "blob_bytes": imported.blob_bytes,
        "file_bytes": path.stat().st_size,
        "memory_detail": {"nearstate_blob": state.nbytes, "nearstate_python": ns_overhead},
        "sqlite_table": ddl,
        "lookups": len(batches) * BATCH,
        "batch": BATCH,
        "parquet_error": parquet_error,
        "targets": TARGETS,
    }
    result["ratios"] = _ratios(result)
    return result


_PHASE_WORDS = {
    "read": "reading, staging and encoding parts",
    "stage": "staging records",
    "write": "joining the parts and writing the blob",
}


class _PhaseClock:
    """The importer's progress callback: times its phases and announces each in words.

    The importer reports a phase's progress after doing the work (every so many lines or
    records), so the time since the previous report is charged to the phase of the
    current one; a phase that reports itself complete announces the next.
    """

    _ORDER = ("read", "write")  # "stage" only from an import staging everything at once

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

    return traced(build)


def traced(fn: Callable[[], Any]) -> tuple[Any, int]:
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
    """Load the dataset (mmap, verify) and read one field under tracemalloc: the least of
    three loads. tracemalloc counts every thread's allocations, so another thread at work
    meanwhile (a NATS client's event loop, a consumer following a Log) would otherwise be
    counted as the state's; a load allocates the same each time."""

    def load() -> Any:
        state = ds.load()
        rec = state[type_name].get(some_key)
        if rec is None:
            raise RuntimeError(f"nearstate lost the key {some_key!r}")
        getattr(rec, field)
        return state

    best: tuple[int, Any] | None = None
    for _ in range(3):
        state, overhead = traced(load)
        if best is None or overhead < best[0]:
            best = (overhead, state)
        del state
    assert best is not None
    return best


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
            gc.collect()  # the old state's teardown (an munmap) is not part of the next load
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


class _FieldStats:
    """Per top-level field of the records, in field order (the order in which the records
    first show them): how many records hold it and the types of its values."""

    def __init__(self, records: Iterable[dict[str, Any]]):
        self.kinds: dict[str, set[type]] = {}  # in first-seen order
        self.seen: dict[str, int] = {}
        self.records = records
        n = 0
        for r in records:
            n += 1
            for k, v in r.items():
                if k not in self.kinds:
                    self.kinds[k] = set()
                    self.seen[k] = 0
                self.kinds[k].add(type(v))
                self.seen[k] += 1
        self.n = n

    def always(self) -> list[str]:
        """The fields present in every record, in field order."""
        return [k for k, c in self.seen.items() if c == self.n]

    def default_field(self, key: str) -> str | None:
        """The lookup's field: the first field present in every record whose values are
        strings (or null), other than the key."""
        for k in self.always():
            ks = self.kinds[k]
            if k != key and str in ks and ks <= {str, type(None)}:
                return k
        return None

    def scalar(self, name: str) -> bool:
        """No value of the field is a list or an object."""
        return not self.kinds.get(name, set()) & {list, dict}

    def find_field(self, key: str) -> str | None:
        """The field to find by: of the fields present in every record, other than the key,
        whose values are all str, all int or all bool, one with between 2 and n/2 distinct
        values, the most distinct (the first in field order on a tie)."""
        best, best_distinct = None, 0
        for k in self.always():
            if k == key or len(self.kinds[k]) != 1 or not self.kinds[k] <= {str, int, bool}:
                continue
            distinct = len({r[k] for r in self.records})
            if 2 <= distinct <= self.n // 2 and distinct > best_distinct:
                best, best_distinct = k, distinct
        return best


def _group(records: list[dict[str, Any]], values: list[Any]) -> dict[Any, list[dict[str, Any]]]:
    """The dict of lists: each value -> the records holding it, in file order."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r, v in zip(records, values, strict=True):
        g = groups.get(v)
        if g is None:
            groups[v] = [r]
        else:
            g.append(r)
    return groups


def _check_find(ts: Any, find_field: str, groups: dict[Any, list[Any]], values: list[Any]) -> None:
    """nearstate's find and the dict of lists must agree on how many records match."""
    for v in values:
        got, want = len(ts.find(**{find_field: v})), len(groups[v])
        if got != want:
            raise RuntimeError(
                f"find({find_field}={v!r}): nearstate found {got} records, the dict of lists {want}"
            )


def _attr_ok(field: str) -> bool:
    """A view reads a field as an attribute unless the name is no identifier or is taken by
    the view's own API (key, ordinal, to_dict...); then by subscript."""
    return field.isidentifier() and not hasattr(Record, field)


def _view_reader(*fields: str) -> Callable[[Any], Any]:
    """One call reading ``fields`` of a view: ``attrgetter(*fields)`` when it can."""
    if all(_attr_ok(f) for f in fields):
        return attrgetter(*fields)
    if not any(_attr_ok(f) for f in fields):
        return itemgetter(*fields)
    getters = [attrgetter(f) if _attr_ok(f) else itemgetter(f) for f in fields]
    return lambda rec: tuple([g(rec) for g in getters])


def _nearstate_lookup(ts: Any, *fields: str) -> Run:
    get = ts.get
    read = _view_reader(*fields)

    def run(keys: list[Any]) -> None:
        for k in keys:
            read(get(k))

    return run


def _dict_lookup(d: dict[Any, Any], *fields: str, always: bool) -> Run:
    if len(fields) > 1:  # five fields: present in every record by their choice
        read = itemgetter(*fields)

        def run_many(keys: list[Any]) -> None:
            for k in keys:
                read(d[k])

        return run_many
    (field,) = fields
    if not always:  # some records lack the field

        def run_get(keys: list[Any]) -> None:
            for k in keys:
                d[k].get(field)

        return run_get

    def run(keys: list[Any]) -> None:
        for k in keys:
            d[k][field]

    return run


def _sqlite_lookup(conn: sqlite3.Connection, field: str) -> Run:
    label = field.replace('"', '""').replace("'", "''")
    sql = f"SELECT json_extract(doc, '$.\"{label}\"') FROM t WHERE k=?"
    ex = conn.execute

    def run(keys: list[Any]) -> None:
        for k in keys:
            ex(sql, (k,)).fetchone()[0]

    return run


def _nearstate_find(ts: Any, find_field: str, field: str) -> Run:
    find = ts.find
    read = _view_reader(field)

    def run(values: list[Any]) -> None:
        for v in values:
            for rec in find(**{find_field: v}):
                read(rec)

    return run


def _dict_find(groups: dict[Any, list[dict[str, Any]]], field: str, *, always: bool) -> Run:
    if not always:  # some records lack the field

        def run_get(values: list[Any]) -> None:
            for v in values:
                for rec in groups[v]:
                    rec.get(field)

        return run_get

    def run(values: list[Any]) -> None:
        for v in values:
            for rec in groups[v]:
                rec[field]

    return run


def _check_found(systems: dict[tuple[str, str], tuple[Run, list[list[Any]]]]) -> None:
    """Each system must find every key or value of its first batch (a failed lookup raises
    inside its loop)."""
    for (figure, name), (run, batches) in systems.items():
        try:
            run(batches[0])
        except (AttributeError, KeyError, TypeError) as e:
            raise RuntimeError(f"{figure} {name}: a sampled key was not found ({e!r})") from e


def _time_interleaved(
    systems: dict[Any, tuple[Run, list[list[Any]]]], rounds: int
) -> dict[Any, list[float]]:
    """ns per item (a key looked up, a value found) for each batch, the systems interleaved
    batch by batch: round ``i`` runs every system on its ``i``-th batch."""
    clock = time.perf_counter_ns
    out: dict[Any, list[float]] = {name: [] for name in systems}
    runs = list(systems.items())
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for i in range(min(WARMUP_ROUNDS, rounds)):
            for _name, (run, batches) in runs:
                run(batches[i])
        for i in range(rounds):
            for name, (run, batches) in runs:
                b = batches[i]
                t0 = clock()
                run(b)
                t1 = clock()
                out[name].append((t1 - t0) / len(b))
    finally:
        if gc_was_enabled:
            gc.enable()
    return out


# -- text report ------------------------------------------------------------------------------

_RATIO_LABELS = {
    "memory_vs_dict": "memory vs dict",
    "memory_vs_parquet": "memory vs parquet",
    "lookup_p50_vs_dict": "lookup p50 vs dict",
    "lookup_p99_vs_dict": "lookup p99 vs dict",
    "five_fields_p50_vs_dict": "5 fields p50 vs dict",
    "find_p50_vs_dict": "find p50 vs dict",
}


def format_store_bench(result: dict[str, Any]) -> str:
    """A plain-text table of a :func:`run_store_bench` result."""
    mem = result["memory_bytes"]
    lat = {
        name: result.get(name) or {}
        for name in (
            "lookup_ns_p50",
            "lookup_ns_p99",
            "five_fields_ns_p50",
            "five_fields_ns_p99",
            "find_ns_p50",
            "find_ns_p99",
        )
    }
    title = f"{result['records']:,} records"
    if "core" in result:
        title += f"; {result['core']} core"
    if "field" in result:
        title += f"; lookup = key + field {result['field']!r}"
    lines = [title]
    if result.get("five_fields"):
        lines.append("5 fields = key + " + ", ".join(repr(f) for f in result["five_fields"]))
    if result.get("find_field"):
        mean = result.get("find_matches_mean")
        lines.append(
            f"find = records with a {result['find_field']!r} value, reading "
            f"{result.get('field')!r} of each"
            + (f" ({mean:,.1f} matches on average)" if mean is not None else "")
        )
    elif result.get("find_error"):
        lines.append(f"find: not measured, {result['find_error']}")
    rows = [
        (
            "system",
            "memory MB",
            "lookup p50",
            "lookup p99",
            "5 fields p50",
            "5 fields p99",
            "find p50",
            "find p99",
        )
    ]
    for name in ("nearstate", "dict", "sqlite", "parquet_zstd"):
        m = mem.get(name)
        rows.append(
            (
                name,
                "n/a" if m is None else f"{m / 1e6:,.2f}",
                *(_ns(v.get(name)) for v in lat.values()),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(w) if j == 0 else c.rjust(w)
                for j, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("(latencies in ns: per lookup; per call for find)")
    index = result.get("find_index_bytes")
    if index:
        lines.append(
            "find index memory MB: " + ", ".join(f"{k} {v / 1e6:,.2f}" for k, v in index.items())
        )
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
    for name, label in _RATIO_LABELS.items():
        v = ratios.get(name)
        target = TARGETS[name]
        if v is None:
            lines.append(f"{label:<22} n/a     (target <= {target:g}x)")
        else:
            mark = "met" if v <= target else "NOT met"
            lines.append(f"{label:<22} {v:.3f}x  (target <= {target:g}x) {mark}")
    if result.get("parquet_error"):
        lines.append(f"parquet: {result['parquet_error']}")
    return "\n".join(lines)


def _ns(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _ratios(result: dict[str, Any]) -> dict[str, float | None]:
    """nearstate / peer for each target (``None`` where a figure is missing)."""
    mem = result["memory_bytes"]

    def over(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def vs_dict(section: str) -> float | None:
        fig = result.get(section) or {}
        return over(fig.get("nearstate"), fig.get("dict"))

    return {
        "memory_vs_dict": over(mem["nearstate"], mem["dict"]),
        "memory_vs_parquet": over(mem["nearstate"], mem.get("parquet_zstd")),
        "lookup_p50_vs_dict": vs_dict("lookup_ns_p50"),
        "lookup_p99_vs_dict": vs_dict("lookup_ns_p99"),
        "five_fields_p50_vs_dict": vs_dict("five_fields_ns_p50"),
        "find_p50_vs_dict": vs_dict("find_ns_p50"),
    }
