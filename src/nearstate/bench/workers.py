"""``nearstate bench workers``: the memory of a pool of site workers on one host.

For N = 1, 2, 4, 8 it runs ``nearstate site serve --workers N`` on a dataset (N = 1: one
process serving; more: a parent that only watches and N workers), drives it
with ``wrk`` (requests per second), and then reads each process's memory from
``/proc/PID/smaps_rollup``: USS (its private pages: ``Private_Clean + Private_Dirty``) and
PSS (its private pages plus its share of every page it shares), and the host total (the
sum of the pool's PSS: what the pool costs the host). Beside it, the same records held as
plain Python dicts in one process (N such processes share nothing: N times its USS).

Two datasets:

- **films**: the demo's content (the real films, their people, the sample stories), as
  ``bench site`` makes it; requests are a story page (``/stories/{slug}``) and a search,
  after every worker has served the home, a title's and a person's page.
- **catalog**: a generated product catalogue of ``records`` records (1M by default), as
  ``bench data catalog`` writes it; not the site's schema, so requests are ``/healthz``.
  It measures what a large state costs per worker.

Beside the requests per second, the requests served per CPU-second of the workers (their
user + system time over the wrk run, from ``/proc/PID/stat``; the parent's and wrk's
left out). On a host whose few cores wrk shares, requests per second cannot show that they
scale with the cores; this can: if it stays flat as N grows, a worker costs no more per
request beside others (no lock, no contention), so the pool serves about cores × this
figure once it has a worker per core.

Target: each worker past the first adds at most 5% of the state's size to the host total.
Runs are kept short (the median of ``runs`` runs per N is reported).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nearstate

from ..errors import NearstateError
from ..web.processes import free_port, nearstate_command
from .site import SECRET, wrk

Progress = Callable[[str, int, int], None]
TARGET = 0.05  #: at most this fraction of the state's size per extra worker
MB = 1 << 20


def memory(pid: int) -> dict[str, int]:
    """``rss``, ``pss`` and ``uss`` (bytes) of process ``pid`` from its smaps_rollup."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            fields[name] = int(parts[0]) * 1024
    return {"rss": fields.get("Rss", 0), "pss": fields.get("Pss", 0),
            "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)}  # fmt: skip


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """The CPU time (user + system, seconds) each of ``pids`` has used, from
    ``/proc/PID/stat`` (a process gone is left out)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        out[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime: fields 14, 15
    return out


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, urllib.error.URLError):
        return 0


def _search_ready(base: str) -> bool:
    """Whether the site answering at ``base`` has built its search index. One process
    serving (N = 1) answers /healthz before; a pool's workers take no request before."""
    url = f"{base}/api/search?q=ready-{time.monotonic_ns()}"  # a new query: not a cached page
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return bool(json.loads(r.read()).get("ready"))
    except (OSError, ValueError):
        return False


def _wait(check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            log = proc.stdout.read().decode()[-2000:] if proc.stdout else ""
            raise NearstateError(f"the site pool stopped while {what}:\n{log}")
        if time.monotonic() > deadline:
            raise NearstateError(f"the site pool: not within {timeout:g} s: {what}")
        time.sleep(0.1)


@contextlib.contextmanager
def pool(data: Path, workers: int, cache: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """``nearstate site serve --workers N`` on ``data``, ready; stopped afterwards."""
    port = free_port()
    proc = subprocess.Popen(
        [*nearstate_command(), "site", "serve", "--data", str(data), "--no-media", "--port",
         str(port), "--workers", str(workers), "--search-cache", str(cache), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        env=dict(os.environ, NEARSTATE_SECRET=SECRET),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        want = 0 if workers == 1 else workers  # one worker: the process itself serves
        # the search index built too: else the first run (N = 1, the host's files just
        # removed) measured its build with the requests
        _wait(lambda: _get(base + "/healthz") == 200 and len(children(proc.pid)) == want
              and _search_ready(base), 600, f"{workers} worker(s) answering", proc)  # fmt: skip
        yield proc, base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def measure_pool(data: Path, workers: int, cache: Path, urls: list[str], seconds: float,
                 connections: int, warm: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """One run: requests per second on each of ``urls`` (paths) and per CPU-second of
    the workers (see the module docstring), then every process's memory (after the load,
    so every worker has served). ``warm``: paths asked for before (each kind of page once
    per worker at least: its derived indexes are made)."""
    with pool(data, workers, cache) as (proc, base):
        for path in [*urls, *warm]:
            for _ in range(4 * workers):
                _get(base + path)
        pids = children(proc.pid) or [proc.pid]  # the workers, or the one process serving
        rps: dict[str, int] = {}
        per_cpu: dict[str, int] = {}
        for path in urls:
            before = cpu_seconds(pids)
            rps[path] = wrk(base + path, seconds, connections)["requests_per_s"]
            after = cpu_seconds(pids)
            used = sum(after[p] - before[p] for p in before if p in after)
            per_cpu[path] = round(rps[path] * seconds / used) if used > 0 else 0
        pids = children(proc.pid)
        if pids:  # a pool: the parent only watches
            mem, parent = [memory(p) for p in pids], memory(proc.pid)
        else:
            mem, parent = [memory(proc.pid)], {"rss": 0, "pss": 0, "uss": 0}
    return {
        "requests_per_s": rps,
        "requests_per_cpu_s": per_cpu,
        "workers": mem,
        "parent": parent,
        "host_pss": parent["pss"] + sum(m["pss"] for m in mem),
    }


def hold_dicts(dataset: str) -> None:
    """Hold every record of ``dataset`` as plain dicts, the state itself dropped; print
    "ready" and wait to be killed (run in a child process by :func:`measure_dicts`)."""
    ds = nearstate.open(dataset)
    c = ds.consumer().start()
    state = c.state
    gc.disable()
    held = {name: [r.to_dict() for r in state[name]] for name in state.schema.types}
    c.stop()
    del state, c, ds
    gc.enable()
    gc.collect()
    print("ready", sum(map(len, held.values())), flush=True)
    time.sleep(3600)


def measure_dicts(dataset: Path) -> dict[str, Any]:
    """One process holding the dataset's records as dicts: its memory."""
    code = f"from nearstate.bench.workers import hold_dicts; hold_dicts({str(dataset)!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().split()
        if not line or line[0] != "ready":
            raise NearstateError("the dicts process did not start")
        return {"records": int(line[1]), **memory(proc.pid)}
    finally:
        proc.kill()
        proc.wait(10)


def state_bytes(dataset: Path) -> int:
    ds = nearstate.open(dataset)
    c = ds.consumer().start()
    try:
        return int(c.state.nbytes)
    finally:
        c.stop()


def films_data(work: Path, films: int | None,
               progress: Progress | None) -> tuple[Path, list[str], tuple[str, ...]]:  # fmt: skip
    """The demo's content as a site data directory under ``work`` (made once); the paths
    to measure and those to ask for first (a title's and a person's page, the home)."""
    from ..content.cms import CMS
    from .site import make_content

    d = work / f"films-{films or 'all'}"
    meta = d / "bench.json"
    if not meta.is_file():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        store, published = make_content(d, f"sqlite:///{d / 'cms.db'}", films, progress)
        slug = CMS(store).story(published[0])["slug"]
        store.close()
        meta.write_text(json.dumps({"slug": slug}))
    slug = json.loads(meta.read_text())["slug"]
    ds = nearstate.open(d / "dataset")
    c = ds.consumer().start()
    try:
        title, person = next(iter(c.state["Title"])).slug, next(iter(c.state["Person"])).slug
    finally:
        c.stop()
    warm = ("/", f"/titles/{title}", f"/people/{person}", "/api/search?q=the")
    return d, [f"/stories/{slug}", "/api/search?q=love"], warm


def catalog_data(work: Path, n: int,
                 progress: Progress | None) -> tuple[Path, list[str], tuple[str, ...]]:  # fmt: skip
    """A data directory whose dataset holds ``n`` generated catalogue records (made once)."""
    from ..jsonl import import_jsonl
    from .datasets import write_catalog

    d = work / f"catalog-{n}"
    if not (d / "dataset" / "announced.json").is_file():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        src = d / "catalog.jsonl"
        write_catalog(src, n, progress=progress)
        import_jsonl(src, type_name="Product", key="id", into=d / "dataset", progress=progress,
                     workers=1)  # fmt: skip
        src.unlink()
    return d, ["/healthz"], ()


def bench_workers(
    *,
    work: Path,
    workers: tuple[int, ...] = (1, 2, 4, 8),
    runs: int = 3,
    datasets: tuple[str, ...] = ("films", "catalog"),
    records: int = 1_000_000,
    films: int | None = None,
    seconds: float = 3.0,
    connections: int = 16,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Every dataset, every N, ``runs`` times; medians (see the module docstring)."""
    out: dict[str, Any] = {"cpus": os.cpu_count(), "runs": runs, "seconds": seconds,
                           "connections": connections, "datasets": {}}  # fmt: skip
    for name in datasets:
        if name == "films":
            data, urls, warm = films_data(work, films, progress)
        elif name == "catalog":
            data, urls, warm = catalog_data(work, records, progress)
        else:
            raise NearstateError(f"unknown dataset {name!r}: use films or catalog")
        size = state_bytes(data / "dataset")
        cache = data / "cache"
        shutil.rmtree(cache, ignore_errors=True)  # the first run builds the search file
        dicts = [measure_dicts(data / "dataset") for _ in range(runs)]
        per_n: dict[int, Any] = {}
        for n in workers:
            got = []
            for i in range(runs):
                if progress:
                    progress(f"{name}: {n} worker(s), run", i + 1, runs)
                got.append(measure_pool(data, n, cache, urls, seconds, connections, warm))
            per_n[n] = _medians(got)
        search = sum(p.stat().st_size for p in cache.glob("*.arrays"))
        one = per_n[min(workers)]["host_pss"]
        for n, r in per_n.items():
            if n > min(workers):
                r["added_per_worker"] = round((r["host_pss"] - one) / (n - min(workers)))
                r["added_pct_of_state"] = round(100 * r["added_per_worker"] / size, 2)
        floor = pool_increment(per_n, size)
        d_uss = statistics.median(d["uss"] for d in dicts)
        out["datasets"][name] = {
            "records": dicts[0]["records"],
            "state_bytes": size,
            "search_file_bytes": search,
            "dicts_process_uss": round(d_uss),
            "dicts_process_pss": round(statistics.median(d["pss"] for d in dicts)),
            "pools": {str(n): r for n, r in per_n.items()},
            **({"in_pool": floor} if floor else {}),
        }
    return out


def pool_increment(per_n: dict[int, Any], size: int) -> dict[str, Any] | None:
    """What one more worker adds inside a pool (the host PSS between the smallest and the
    largest pool of at least 2 workers, per worker: the parent counted in both), that as
    a share of the state, and the state size at which it would be the target's 5%."""
    pools = sorted(n for n in per_n if n >= 2)
    if len(pools) < 2:
        return None
    lo, hi = pools[0], pools[-1]
    added = (per_n[hi]["host_pss"] - per_n[lo]["host_pss"]) / (hi - lo)
    return {"from": lo, "to": hi, "added_per_worker": round(added),
            "added_pct_of_state": round(100 * added / size, 2),
            "state_bytes_for_target": round(added / TARGET)}  # fmt: skip


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(xs: list[float]) -> int:
        return round(statistics.median(xs))

    return {
        "requests_per_s": {p: med([r["requests_per_s"][p] for r in runs])
                           for p in runs[0]["requests_per_s"]},
        "requests_per_cpu_s": {p: med([r["requests_per_cpu_s"][p] for r in runs])
                               for p in runs[0]["requests_per_cpu_s"]},
        "host_pss": med([r["host_pss"] for r in runs]),
        "worker_uss": med([statistics.mean(w["uss"] for w in r["workers"]) for r in runs]),
        "worker_pss": med([statistics.mean(w["pss"] for w in r["workers"]) for r in runs]),
        "worker_rss": med([statistics.mean(w["rss"] for w in r["workers"]) for r in runs]),
        "parent_pss": med([r["parent"]["pss"] for r in runs]),
        "host_pss_runs": [r["host_pss"] for r in runs],
    }  # fmt: skip


def summary(r: dict[str, Any]) -> list[str]:
    lines = [f"{r['cpus']} CPUs; medians of {r['runs']} runs; wrk {r['seconds']:g} s, "
             f"{r['connections']} connections"]  # fmt: skip
    for name, d in r["datasets"].items():
        lines.append(
            f"{name}: {d['records']:,} records, state {d['state_bytes'] / MB:.1f} MB, search "
            f"file {d['search_file_bytes'] / MB:.1f} MB; as dicts one process USS "
            f"{d['dicts_process_uss'] / MB:.0f} MB"
        )
        lines.append("  N  worker USS  worker PSS  host PSS  dicts N×USS  added/worker  req/s"
                     "  req/CPU-s")  # fmt: skip
        for n, p in d["pools"].items():
            added = p.get("added_pct_of_state")
            mark = "" if added is None else (
                f"{p['added_per_worker'] / MB:6.1f} MB ({added:.1f}% "
                f"{'met' if added <= TARGET * 100 else 'NOT met'})")  # fmt: skip
            rps = " / ".join(f"{v:,}" for v in p["requests_per_s"].values())
            per_cpu = " / ".join(f"{v:,}" for v in p.get("requests_per_cpu_s", {}).values())
            lines.append(
                f"  {n:>1}  {p['worker_uss'] / MB:7.1f} MB  {p['worker_pss'] / MB:7.1f} MB  "
                f"{p['host_pss'] / MB:6.1f} MB  {int(n) * d['dicts_process_uss'] / MB:8.0f} MB"
                f"  {mark or '-':>20}  {rps}  {per_cpu or '-'}"
            )
        f = d.get("in_pool")
        if f:
            lines.append(
                f"  in a pool ({f['from']} to {f['to']} workers) each worker adds "
                f"{f['added_per_worker'] / MB:.1f} MB, {f['added_pct_of_state']:.1f}% of the "
                f"state: 5% from a state of {f['state_bytes_for_target'] / MB:,.0f} MB"
            )
    return lines


__all__ = [
    "bench_workers", "cpu_seconds", "hold_dicts", "measure_dicts", "measure_pool", "memory",
    "pool_increment", "summary",
]  # fmt: skip
