"""Medians (and ranges) of `nearstate bench store` runs: one Markdown table per core.

Usage: python scripts/bench_store_summary.py DIR   (DIR holds <dataset>-<core>-<run>.json)
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROWS = [
    ("records", lambda r: r["records"], "{:,.0f}"),
    ("nearstate memory, MB", lambda r: r["memory_bytes"]["nearstate"] / 1e6, "{:,.2f}"),
    ("dict memory, MB", lambda r: r["memory_bytes"]["dict"] / 1e6, "{:,.1f}"),
    ("zstd Parquet, MB", lambda r: (r["memory_bytes"]["parquet_zstd"] or 0) / 1e6, "{:,.2f}"),
    ("memory ÷ dict (≤ 0.10)", lambda r: r["ratios"]["memory_vs_dict"], "{:.3f}"),
    ("memory ÷ Parquet (≤ 1.0)", lambda r: r["ratios"]["memory_vs_parquet"], "{:.2f}"),
    ("lookup + 1 field p50, ns (nearstate)", lambda r: r["lookup_ns_p50"]["nearstate"], "{:,.0f}"),
    ("lookup + 1 field p50, ns (dict)", lambda r: r["lookup_ns_p50"]["dict"], "{:,.0f}"),
    ("lookup p50 ÷ dict (≤ 1.0)", lambda r: r["ratios"]["lookup_p50_vs_dict"], "{:.2f}"),
    ("lookup p99 ÷ dict (≤ 1.5)", lambda r: r["ratios"]["lookup_p99_vs_dict"], "{:.2f}"),
    ("five fields p50 ÷ dict (≤ 1.2)", lambda r: r["ratios"]["five_fields_p50_vs_dict"], "{:.2f}"),
    ("find p50 ÷ dict of lists (≤ 1.5)", lambda r: r["ratios"].get("find_p50_vs_dict"), "{:.2f}"),
    ("load, mmap + verify, ms", lambda r: r["load_ms"]["nearstate_mmap"], "{:,.1f}"),
    ("import, s", lambda r: r["import_s"], "{:,.1f}"),
]


def main(directory: str) -> None:
    runs: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for p in sorted(Path(directory).glob("*.json")):
        ds, core, _run = p.stem.rsplit("-", 2)
        if p.stat().st_size == 0:  # a run still going
            continue
        runs[(ds, core)].append(json.loads(p.read_text()))
    datasets = list(dict.fromkeys(ds for ds, _ in runs))
    for core in ("native", "pure"):
        cols = [ds for ds in datasets if (ds, core) in runs]
        if not cols:
            continue
        n = {ds: len(runs[(ds, core)]) for ds in cols}
        print(f"\n**{core} core** (median of runs, range in brackets)\n")
        print("| | " + " | ".join(f"{ds} ({n[ds]} runs)" for ds in cols) + " |")
        print("| --- |" + " ---: |" * len(cols))
        for label, get, fmt in ROWS:
            cells = []
            for ds in cols:
                vals = [v for r in runs[(ds, core)] if (v := get(r)) is not None]
                if not vals:
                    cells.append("n/a")
                    continue
                med = fmt.format(statistics.median(vals))
                lo, hi = fmt.format(min(vals)), fmt.format(max(vals))
                cells.append(med if lo == hi else f"{med} ({lo}–{hi})")
            print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
