"""Pictures of benchmark results (needs matplotlib: ``pip install 'nearstate[bench]'``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DatasetError

_SYSTEMS = ("nearstate", "dict", "sqlite", "parquet_zstd")
_COLOURS = {
    "nearstate": "#1f77b4",
    "dict": "#ff7f0e",
    "sqlite": "#2ca02c",
    "parquet_zstd": "#9467bd",
}


def pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise DatasetError("plots need matplotlib: pip install 'nearstate[bench]'") from e
    return plt


_STORE_RATIOS = (  # (ratio key, label, target) drawn as nearstate / dict, p50
    ("lookup_p50_vs_dict", "lookup", 1.0),
    ("five_fields_p50_vs_dict", "5 fields", 1.2),
    ("find_p50_vs_dict", "find", 1.5),
)


def plot_store(results: Sequence[str | Path], out: str | Path) -> Path:
    """Draw memory and lookup p50 per system, and nearstate ÷ dict p50 for lookup, five
    fields and find against their targets, for each ``bench store --json`` result file."""
    plt = pyplot()
    runs = [(Path(p).stem, json.loads(Path(p).read_text())) for p in results]
    fig, (mem_ax, lat_ax, ratio_ax) = plt.subplots(1, 3, figsize=(16, 4.2))
    width = 0.8 / len(_SYSTEMS)
    for i, system in enumerate(_SYSTEMS):
        xs = [j + (i - 1.5) * width for j in range(len(runs))]
        mem = [(r["memory_bytes"].get(system) or 0) / 1e6 for _, r in runs]
        mem_ax.bar(xs, mem, width, label=system, color=_COLOURS[system])
        if system != "parquet_zstd":
            lat = [r["lookup_ns_p50"].get(system) or 0 for _, r in runs]
            lat_ax.bar(xs, lat, width, label=system, color=_COLOURS[system])
    labels = [
        f"{name.removesuffix('-1').removesuffix('-native').removesuffix('-pure')}\n"
        f"{r['records'] / 1000:,.0f}k" + (f", {r['core']}" if "core" in r else "")
        for name, r in runs
    ]
    width = 0.8 / len(_STORE_RATIOS)
    shades = ("#1f77b4", "#6baed6", "#c6dbef")
    for i, (key, label, target) in enumerate(_STORE_RATIOS):
        xs = [j + (i - (len(_STORE_RATIOS) - 1) / 2) * width for j in range(len(runs))]
        vals = [(r.get("ratios") or {}).get(key) or 0 for _, r in runs]
        ratio_ax.bar(xs, vals, width, label=f"{label} (target ≤ {target:g})", color=shades[i])
        for x in xs:  # the target, as a tick over each bar
            ratio_ax.hlines(target, x - width / 2, x + width / 2, color="#d62728", linewidth=1.5)
    ratio_ax.axhline(1.0, color="#555555", linestyle=":", linewidth=1)
    for ax, title, unit in (
        (mem_ax, "Memory held (log scale, lower is better)", "MB"),
        (lat_ax, "Key lookup + one field, p50 (lower is better)", "ns"),
        (ratio_ax, "nearstate ÷ dict, p50; red ticks: targets (lower is better)", "ratio"),
    ):
        ax.set_xticks(range(len(runs)), labels, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
        ax.legend(fontsize=8)
    mem_ax.set_yscale("log")
    return _save(plt, fig, out)


def plot_versions(result: str | Path, out: str | Path) -> Path:
    """Draw delta apply time against a full snapshot load, per state size, from a
    ``bench versions --json`` result file."""
    plt = pyplot()
    r = json.loads(Path(result).read_text())
    sizes = list(r["delta_apply_ms"])
    labels = [f"{int(n):,}" for n in sizes]
    x = range(len(sizes))
    fig, ax = plt.subplots(figsize=(7, 4))
    w = 0.38
    apply = [r["delta_apply_ms"][n] for n in sizes]
    load = [r["snapshot_load_ms"][n] for n in sizes]
    blue = _COLOURS["nearstate"]
    ax.bar([i - w / 2 for i in x], apply, w, label=f"apply a delta of {r['change']:,} changes",
           color=blue)  # fmt: skip
    ax.bar([i + w / 2 for i in x], load, w, label="map + verify a whole snapshot",
           color="#bbbbbb")  # fmt: skip
    ax.axhline(50, color="#d62728", linestyle="--", linewidth=1, label="target: 50 ms")
    ax.set_xticks(list(x), labels)
    ax.set_xlabel("records in the state")
    ax.set_ylabel("ms (median)")
    ax.set_title("A delta costs what the change costs, not the dataset")
    ax.legend(frameon=False, fontsize=9)
    return _save(plt, fig, out)


def _save(plt: Any, fig: Any, out: str | Path) -> Path:
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_raw(results: Sequence[str | Path], out: str | Path) -> Path:
    """Draw write -> visible (p50, p99 per run, nearstate and Redis) and commit rates
    (nearstate, SQLite, Redis) from ``bench raw --json`` result files."""
    plt = pyplot()
    runs = [json.loads(Path(p).read_text()) for p in results]
    fig, (vis_ax, rate_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    w = 0.38
    x = range(len(runs))
    for i, (who, colour) in enumerate((("nearstate", _COLOURS["nearstate"]),
                                       ("redis", "#d62728"))):  # fmt: skip
        vis = [r["visible_ms"] if who == "nearstate" else
               r.get("peers", {}).get("redis", {}).get("visible_ms") for r in runs]  # fmt: skip
        xs = [j + (i - 0.5) * w for j in x]
        vis_ax.bar(xs, [v["p99"] if v else 0 for v in vis], w, color=colour, alpha=0.35,
                   label=f"{who} p99")  # fmt: skip
        vis_ax.bar(xs, [v["p50"] if v else 0 for v in vis], w, color=colour,
                   label=f"{who} p50")  # fmt: skip
    # issue 18's targets (issue 4's were 20 and 5 ms)
    vis_ax.axhline(5, color="#555555", linestyle="--", linewidth=1, label="target p99: 5 ms")
    vis_ax.axhline(1, color="#555555", linestyle=":", linewidth=1, label="target p50: 1 ms")
    vis_ax.set_xticks(list(x), [f"run {j + 1}" for j in x])
    vis_ax.set_ylabel("ms")
    vis_ax.set_title("Write -> visible in another process (lower is better)", fontsize=10)
    vis_ax.legend(fontsize=8, frameon=False)
    systems = ["nearstate", "sqlite", "redis"]
    colours = [_COLOURS["nearstate"], _COLOURS["sqlite"], "#d62728"]
    keys = ["commits_per_s", "batched_mutations_per_s"]
    ticks = ["single-record\ncommits/s", "batched\nmutations/s"]
    if any("threaded_commits_per_s" in r for r in runs):  # runs since group commit
        keys.insert(1, "threaded_commits_per_s")
        ticks.insert(1, "the same from\nthreads at once")
    for k, key in enumerate(keys):
        vals = []
        for s in systems:
            got = [r[key] if s == "nearstate" else r.get("peers", {}).get(s, {}).get(key)
                   for r in runs]  # fmt: skip
            got = sorted(v for v in got if v)
            vals.append(got[len(got) // 2] if got else 0)
        xs = [k + (i - 1) * 0.27 for i in range(len(systems))]
        for xi, v, s, c in zip(xs, vals, systems, colours, strict=True):
            rate_ax.bar(xi, v, 0.27, color=c, label=s if k == 0 else None)
    rate_ax.set_yscale("log")
    rate_ax.set_xticks(list(range(len(keys))), ticks)
    rate_ax.set_title("Write rates, median of runs (higher is better; log scale)", fontsize=10)
    rate_ax.legend(fontsize=8, frameon=False)
    return _save(plt, fig, out)


def plot_raw_nats(results: Sequence[str | Path], out: str | Path) -> Path:
    """Draw ``bench raw --backend nats --json`` results: write -> visible on each of the
    consumer processes and on all of them (the slowest), per run; and the big snapshot's
    publish and fetch times through NATS beside a local directory."""
    plt = pyplot()
    runs = [json.loads(Path(p).read_text()) for p in results]
    fig, (vis_ax, snap_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    n = max(len(r.get("visible_ms_per_consumer", [])) for r in runs)
    labels = ["each consumer"] * n + ["all (slowest)"]
    w = 0.8 / len(labels)
    for j, r in enumerate(runs):
        series = [*r.get("visible_ms_per_consumer", []), r["visible_ms"]]
        for i, v in enumerate(series):
            colour = _COLOURS["nearstate"] if i == len(series) - 1 else "#9ecae1"
            x = j + (i - (len(series) - 1) / 2) * w
            vis_ax.bar(x, v["p99"], w * 0.9, color=colour, alpha=0.35)
            shown = j == 0 and i in (0, len(series) - 1)
            vis_ax.bar(x, v["p50"], w * 0.9, color=colour, label=labels[i] if shown else None)
    vis_ax.axhline(25, color="#555555", linestyle="--", linewidth=1,
                   label="target p99 on all: 25 ms")  # fmt: skip
    vis_ax.set_xticks(range(len(runs)), [f"run {j + 1}" for j in range(len(runs))])
    vis_ax.set_ylabel("ms (solid p50, pale p99)")
    vis_ax.set_title("Write -> visible on each consumer process, NATS (lower is better)",
                     fontsize=10)  # fmt: skip
    vis_ax.legend(fontsize=8, frameon=False)
    snaps = [r["snapshot"] for r in runs if "snapshot" in r]
    if snaps:
        mb = snaps[0]["bytes"] / 1e6
        keys = [("nats", "publish_s"), ("nats", "fetch_s"), ("local", "publish_s"),
                ("local", "fetch_s")]  # fmt: skip
        for k, (where, what) in enumerate(keys):
            vals = sorted(s[where][what] for s in snaps)
            colour = _COLOURS["nearstate"] if where == "nats" else _COLOURS["sqlite"]
            snap_ax.bar(k, vals[len(vals) // 2], 0.6, color=colour)
            snap_ax.scatter([k] * len(vals), vals, color="#333333", s=10, zorder=3)
        snap_ax.axhline(5, color="#555555", linestyle="--", linewidth=1, label="target: 5 s")
        snap_ax.set_xticks(range(len(keys)), [f"{a}\n{b.removesuffix('_s')}" for a, b in keys])
        snap_ax.set_ylabel("seconds (bar: median; dots: runs)")
        snap_ax.set_title(f"A {mb:,.0f} MB snapshot: publish and fetch (lower is better)",
                          fontsize=10)  # fmt: skip
        snap_ax.legend(fontsize=8, frameon=False)
    return _save(plt, fig, out)
