"""Pictures of benchmark results (needs matplotlib: ``pip install 'nearstate[bench]'``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..errors import DatasetError

_SYSTEMS = ("nearstate", "dict", "sqlite", "parquet_zstd")
_COLOURS = {
    "nearstate": "#1f77b4",
    "dict": "#ff7f0e",
    "sqlite": "#2ca02c",
    "parquet_zstd": "#9467bd",
}


def plot_store(results: Sequence[str | Path], out: str | Path) -> Path:
    """Draw memory and lookup p50 per system for each ``bench store --json`` result file."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise DatasetError("plots need matplotlib: pip install 'nearstate[bench]'") from e
    runs = [(Path(p).stem, json.loads(Path(p).read_text())) for p in results]
    fig, (mem_ax, lat_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / len(_SYSTEMS)
    for i, system in enumerate(_SYSTEMS):
        xs = [j + (i - 1.5) * width for j in range(len(runs))]
        mem = [(r["memory_bytes"].get(system) or 0) / 1e6 for _, r in runs]
        mem_ax.bar(xs, mem, width, label=system, color=_COLOURS[system])
        if system != "parquet_zstd":
            lat = [r["lookup_ns_p50"].get(system) or 0 for _, r in runs]
            lat_ax.bar(xs, lat, width, label=system, color=_COLOURS[system])
    labels = [f"{name}\n{r['records']:,} records" for name, r in runs]
    for ax, title, unit in (
        (mem_ax, "Memory held (log scale, lower is better)", "MB"),
        (lat_ax, "Key lookup + one field, p50 (lower is better)", "ns"),
    ):
        ax.set_xticks(range(len(runs)), labels)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
        ax.legend(fontsize=8)
    mem_ax.set_yscale("log")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
