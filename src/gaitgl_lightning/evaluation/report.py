"""Human-facing output of an ``EvalResult``: rich tables, a JSON of every number, figures.

rich and matplotlib are imported inside the functions: the evaluation code itself must stay
importable (and fast to import) with torch and numpy only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gaitgl_lightning.evaluation.results import EvalResult, ViewTable
from gaitgl_lightning.fileio import atomic_path, atomic_write_bytes


def view_table_rich(name: str, table: ViewTable, title_suffix: str = "") -> Any:
    """The probe-view x gallery-view matrix of one condition as a ``rich`` table (percent)."""
    from rich.table import Table

    t = Table(
        title=f"{name}: rank-1 (%){title_suffix}", caption="rows: probe view; columns: gallery view"
    )
    t.add_column("probe \\ gallery")
    for gv in table.gallery_views:
        t.add_column(gv, justify="right")
    t.add_column("mean", justify="right", style="bold")
    for i, pv in enumerate(table.probe_views):
        cells = ["-" if np.isnan(v) else f"{100 * v:.1f}" for v in table.acc[i]]
        mean = table.per_probe_view[pv]
        t.add_row(pv, *cells, "-" if np.isnan(mean) else f"{100 * mean:.2f}")
    return t


def print_report(result: EvalResult, console: Any = None) -> None:
    """Print the summary table and every cross-view table of ``result``."""
    from rich.console import Console

    console = console or Console()
    console.print(
        f"protocol {result.protocol} | variant: {result.variant} | distance: {result.distance}",
        markup=False,
    )
    console.print(result.table())
    for name, table in result.view_tables.items():
        console.print(view_table_rich(name, table))
    if result.alt_metrics:
        for variant, metrics in result.alt_metrics.items():
            vals = ", ".join(f"{k}={100 * v:.2f}" for k, v in metrics.items())
            console.print(f"other variant ({variant}): {vals}")


def save_json(result: EvalResult, path: str | os.PathLike[str]) -> Path:
    """Write ``result.to_dict()`` as JSON, atomically; return the path."""
    out = Path(path)
    data = json.dumps(result.to_dict(), indent=2, sort_keys=False, allow_nan=False)
    atomic_write_bytes(out, (data + "\n").encode("utf-8"))
    return out


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Save a matplotlib figure as an image, atomically (temporary file, then rename), and close
    it; return the path. Every figure of the package goes through here."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def heatmap_cells(table: ViewTable, identical_excluded: bool) -> np.ma.MaskedArray:
    """The cells a view heatmap fills, in percent: pairs without probes masked, and the
    identical-view cells (probe view = gallery view) too when the condition's number leaves them
    out, so that the figure shows exactly what its title's number averages."""
    data = np.ma.masked_invalid(100.0 * table.acc)
    if identical_excluded:
        for i, view in enumerate(table.probe_views):
            if view in table.gallery_views:
                data[i, table.gallery_views.index(view)] = np.ma.masked
    return data


def plot_view_heatmaps(result: EvalResult, path: str | os.PathLike[str]) -> Path:
    """One probe-view x gallery-view rank-1 heatmap per condition, side by side, as an image.

    Why a figure: an 11 x 11 table per condition is hard to read; the heatmap shows at a glance
    which view pairs fail (typically the far-apart ones and 90 degrees under CL).
    """
    if not result.view_tables:
        raise ValueError(f"{result.protocol}: result has no cross-view tables to plot")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = list(result.view_tables)
    fig, axes = plt.subplots(
        1, len(names), figsize=(5.4 * len(names), 5.2), squeeze=False, layout="constrained"
    )
    image = None
    excluded = not result.options.get("include_identical_view", False)
    for ax, name in zip(axes[0], names, strict=True):
        table = result.view_tables[name]
        data = heatmap_cells(table, excluded)
        cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
        image = ax.imshow(data, vmin=0.0, vmax=100.0, cmap=cmap)
        ax.set_xticks(range(len(table.gallery_views)), table.gallery_views, rotation=90, fontsize=8)
        ax.set_yticks(range(len(table.probe_views)), table.probe_views, fontsize=8)
        ax.set_xlabel("gallery view")
        ax.set_ylabel("probe view")
        ax.set_title(f"{name}: {100 * table.mean:.2f}%")
        if len(table.gallery_views) <= 14:
            for (i, j), v in np.ndenumerate(data.filled(np.nan)):
                if not np.isnan(v):
                    colour = "black" if v > 60 else "white"
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8, color=colour)
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="rank-1 (%)")
    grey = "; grey: identical views, not in the number" if excluded else ""
    fig.suptitle(f"{result.protocol} ({result.variant}; distance {result.distance}){grey}")
    return save_figure(fig, path)


def plot_rank_curve(
    results: EvalResult | Sequence[EvalResult], path: str | os.PathLike[str]
) -> Path:
    """Rank-k accuracy against k for one or several results (e.g. two distances) as an image."""
    items = [results] if isinstance(results, EvalResult) else list(results)
    items = [r for r in items if r.cmc]
    if not items:
        raise ValueError("plot_rank_curve: no result with a rank-k curve (cmc)")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    for r in items:
        ks = sorted(r.cmc)
        ax.plot(ks, [100.0 * r.cmc[k] for k in ks], marker=".", label=f"{r.protocol}, {r.distance}")
    ax.set_xlabel("rank k")
    ax.set_ylabel("rank-k accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("rank-k curve")
    return save_figure(fig, path)


def write_report(
    result: EvalResult, out_dir: str | os.PathLike[str], stem: str | None = None
) -> dict[str, Path]:
    """Write ``<stem>.json`` and the figures that apply to ``result``; return name -> path."""
    out = Path(out_dir)
    stem = stem or f"{result.protocol}_{result.distance}"
    paths = {"json": save_json(result, out / f"{stem}.json")}
    if result.view_tables:
        paths["heatmap"] = plot_view_heatmaps(result, out / f"{stem}_views.png")
    if result.cmc:
        paths["rank_curve"] = plot_rank_curve(result, out / f"{stem}_rank_curve.png")
    return paths
