"""The figures of a run and of a sweep, from the tables that ``history`` and ``runs`` build.

Every function takes a DataFrame (or arrays), draws one figure and saves it as an image through
``evaluation.report.save_figure`` (atomic write), returning the path, so that a notebook shows
it and a test can check it. Colours of the conditions follow the paper's Fig. 4: NM red, BG
purple, CL cyan, their mean blue.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gaitgl_lightning.evaluation.report import save_figure

CONDITION_COLOURS = {"NM": "tab:red", "BG": "tab:purple", "CL": "tab:cyan", "mean": "tab:blue"}

#: Panels of the training-curve figure: title, columns (any present are drawn), y label, log y.
TRAINING_PANELS: tuple[tuple[str, tuple[str, ...], str, bool], ...] = (
    ("losses", ("train/loss", "train/triplet", "train/ce"), "loss", False),
    ("triplets with non-zero loss", ("train/triplet_nonzero",), "count per part", False),
    ("mean anchor-positive/negative distance", ("train/mean_dist",), "distance", False),
    ("cross-entropy accuracy", ("train/ce_acc",), "accuracy", False),
    ("learning rate", ("train/lr",), "lr", True),
    ("gradient norm", ("train/grad_norm",), "global 2-norm", True),
    ("throughput", ("train/seq_per_s",), "sequences / s", False),
)


def trained_steps(index: pd.Index) -> np.ndarray:
    """The step a row logged during training stands for, as logs and checkpoints name it.

    Why + 1: Lightning logs the rows of training step n (and the evaluation run after it) at
    its logger step, the count of steps finished *before* it (n - 1), while ``global_step``
    (checkpoint names ``step000100``, ``metrics.json``, the console) counts it done (n). So the
    step-100 evaluation sits in the CSV / W&B history at 99 and is drawn at 100.
    """
    return np.asarray(index, dtype=np.int64) + 1


def agg_pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend unless one is chosen (figures are saved, not shown)."""
    import matplotlib

    matplotlib.use("Agg", force=False)  # keeps an interactive backend a notebook already chose
    import matplotlib.pyplot as plt

    return plt


def smooth(values: pd.Series, window: int | None = None) -> pd.Series:
    """Centred rolling mean (window: 1/20 of the points, at least 1) for noisy per-step curves."""
    window = window or max(1, len(values) // 20)
    return values.rolling(window, center=True, min_periods=1).mean()


def ce_at_chance(history: pd.DataFrame, num_classes: int, tolerance: float = 0.02) -> bool:
    """True when the cross-entropy term never left chance: its smoothed value stays within
    ``tolerance`` (relative) of ln(K) over the whole run.

    Why it can: the per-part classifier starts with logits near zero (xavier init over a
    [parts, D, classes] tensor counts parts x classes in its fans: weights ~0.02, logits ~0.1),
    and Adam at lr 1e-4 moves each weight by at most 1e-4 a step; the short synthetic default
    (300 steps) ends before CE leaves ln(K), while the triplet term learns (docs/model.md).
    """
    if "train/ce" not in history or num_classes < 2:
        return False
    values = history["train/ce"].dropna()
    if values.empty:
        return False
    chance = math.log(num_classes)
    return bool((smooth(values) - chance).abs().max() <= tolerance * chance)


def plot_training_curves(
    history: pd.DataFrame, path: str | os.PathLike[str], num_classes: int | None = None
) -> Path:
    """Every training term against the step: losses, non-zero triplets, lr, throughput.

    Raw values are drawn faint and a rolling mean over them, since per-step losses are noisy.
    With ``num_classes`` (K) the chance levels of the cross-entropy terms are drawn (ln K for
    the loss, 1/K for the accuracy), and a run whose CE never left chance says so on the plot.
    """
    panels = [(t, [c for c in cols if c in history], y, log) for t, cols, y, log in TRAINING_PANELS]
    panels = [p for p in panels if p[1]]
    if not panels:
        raise ValueError(f"{history.attrs.get('source', 'history')}: no train/* columns to plot")
    plt = agg_pyplot()
    ncols = 3 if len(panels) > 4 else 2
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.2 * nrows), squeeze=False)
    for ax, (title, cols, ylabel, log) in zip(axes.flat, panels, strict=False):
        for col in cols:
            values = history[col].dropna()
            steps = trained_steps(values.index)
            line = ax.plot(steps, values.to_numpy(), alpha=0.3, linewidth=0.8)[0]
            if len(values) > 2:
                ax.plot(steps, smooth(values).to_numpy(), color=line.get_color(), label=col)
            else:
                line.set_label(col)
        ax.set(title=title, xlabel="step", ylabel=ylabel)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if num_classes and num_classes > 1:
            _draw_chance(ax, cols, num_classes, ce_at_chance(history, num_classes))
        if len(cols) > 1:
            ax.legend(fontsize=8)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(f"training: {_source_name(history)}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def _draw_chance(ax: Any, cols: Sequence[str], num_classes: int, flat: bool) -> None:
    """Chance levels of the CE terms on their panels, and why a flat CE is flat."""
    if "train/ce" in cols:
        chance = math.log(num_classes)
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1, label=f"ln {num_classes}")
    if "train/ce_acc" in cols:
        ax.axhline(1.0 / num_classes, color="grey", linestyle=":", linewidth=1)
        if flat:
            # below the axes (under the x label), where no curve can run through it
            ax.annotate(
                f"CE stayed at chance (ln {num_classes}) for the whole run:\n"
                "the per-part classifier starts near-silent and has not\n"
                "left it yet; the triplet term did the learning",
                xy=(0.0, 0.0),
                xycoords="axes fraction",
                xytext=(0, -30),
                textcoords="offset points",
                va="top",
                fontsize=7,
                color="tab:red",
                annotation_clip=False,
            )


def _source_name(history: pd.DataFrame) -> str:
    """The run dir's name of a history (above ``csv/`` and ``wandb/<run>/``)."""
    source = history.attrs.get("source")
    if not source:
        return "run"
    for part in (Path(source), *Path(source).parents):
        if part.name not in ("csv", "wandb", "metrics.csv") and "run-" not in part.name:
            # a multirun job dir is a number: name its sweep too
            return f"{part.parent.name}/{part.name}" if part.name.isdigit() else part.name
    return str(source)


def condition_columns(columns: Sequence[str], prefix: str = "val") -> dict[str, str]:
    """Curve label -> column of the evaluation metrics to draw.

    CASIA-B-like protocols give ``{"NM": "val/NM/rank1", ..., "mean": "val/rank1"}``; the
    others their flat metrics by name (``rank1``, ``rank5``, ``mAP``, ...).
    """
    split = [(c, c.split("/")) for c in columns if c.split("/")[0] == prefix]
    found = {p[1]: c for c, p in split if len(p) == 3 and p[2] == "rank1"}
    by_condition = bool(found)
    for col, parts in split:
        if len(parts) == 2:
            found["mean" if by_condition and parts[1] == "rank1" else parts[1]] = col
    return found


def plot_eval_curves(
    history: pd.DataFrame, path: str | os.PathLike[str], prefix: str = "val"
) -> Path:
    """Rank-1 per condition (and their mean) at every evaluation, against the step."""
    columns = condition_columns(list(history.columns), prefix)
    if not columns:
        raise ValueError(
            f"{history.attrs.get('source', 'history')}: no {prefix}/* columns (no evaluation "
            "was logged; is eval_every larger than the run?)"
        )
    plt = agg_pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    top = 0.0
    for name, col in columns.items():
        values = history[col].dropna()
        top = max(top, 100.0 * float(values.max()) if len(values) else 0.0)
        ax.plot(
            trained_steps(values.index),
            100.0 * values.to_numpy(),
            marker="o",
            color=CONDITION_COLOURS.get(name),
            linewidth=2.2 if name == "mean" else 1.4,
            label=name,
        )
    ax.set(
        xlabel="step",
        ylabel="rank-1 (%)",
        title=f"evaluation over training: {_source_name(history)}",
    )
    ax.set_ylim(0, max(100.0, top) + 5.0)  # room above 100 %, so a marker there is drawn whole
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_runs_metric(
    histories: Mapping[str, pd.DataFrame],
    path: str | os.PathLike[str],
    column: str = "val/rank1",
    percent: bool = True,
) -> Path:
    """One metric of several runs against the step, one line per run (a sweep side by side).

    Runs whose curves are identical (same seed and settings that do not change the numbers)
    would be drawn exactly on top of each other and look like one: each is shifted a little
    along x, drawn with its own marker, and its label says how many runs share the curve.
    """
    drawn = {label: h[column].dropna() for label, h in histories.items() if column in h}
    drawn = {label: v for label, v in drawn.items() if len(v)}
    if not drawn:
        raise ValueError(f"none of the {len(histories)} runs logged {column!r}")
    plt = agg_pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    scale = 100.0 if percent else 1.0
    offsets, shared = _identical_offsets(drawn)
    span = max(int(v.index.max()) - int(v.index.min()) for v in drawn.values()) or 1
    for label, values in drawn.items():
        k = offsets[label]
        ax.plot(
            trained_steps(values.index) + 0.012 * span * k,
            scale * values.to_numpy(),
            marker=_MARKERS[round(k + (shared[label] - 1) / 2) % len(_MARKERS)],
            markersize=4,
            label=f"{label} (n={shared[label]} identical)" if shared[label] > 1 else label,
        )
    ax.set(xlabel="step", ylabel=f"{column}{' (%)' if percent else ''}", title=column)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1.0), loc="upper left", frameon=False)
    return save_figure(fig, path)


_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")


def _identical_offsets(
    curves: Mapping[str, pd.Series],
) -> tuple[dict[str, float], dict[str, int]]:
    """Per run: its place in its group of identical curves, centred on 0 (for a small x
    jitter), and the group's size (1 for a curve no other run shares)."""
    groups: dict[tuple[tuple[int, ...], tuple[float, ...]], list[str]] = {}
    for label, values in curves.items():
        key = (tuple(int(i) for i in values.index), tuple(float(v) for v in values))
        groups.setdefault(key, []).append(label)
    offsets: dict[str, float] = {}
    shared: dict[str, int] = {}
    for labels in groups.values():
        for i, label in enumerate(labels):
            offsets[label] = i - (len(labels) - 1) / 2
            shared[label] = len(labels)
    return offsets, shared


def plot_ratio_sweep(
    table: pd.DataFrame,
    path: str | os.PathLike[str],
    ratio: str = "mask.ratio",
    group: str | None = "mask.strategy",
) -> Path:
    """The paper's Fig. 4: rank-1 of NM / BG / CL and their mean against the dropping ratio d,
    one panel per mask strategy. ``table`` is ``runs_table`` output (metrics in percent); runs
    that repeat a setting (seeds) are averaged."""
    if ratio not in table:
        raise ValueError(f"the runs do not vary {ratio!r}; columns: {list(table.columns)}")
    metrics = {"NM": "NM/rank1", "BG": "BG/rank1", "CL": "CL/rank1", "mean": "rank1"}
    metrics = {k: v for k, v in metrics.items() if v in table}
    if not metrics:
        raise ValueError("the runs have no rank-1 results (metrics.json missing?)")
    groups = [(None, table)] if group is None or group not in table else list(table.groupby(group))
    plt = agg_pyplot()
    fig, axes = plt.subplots(
        1, len(groups), figsize=(4.2 * len(groups), 3.6), squeeze=False, sharey=True
    )
    for ax, (name, part) in zip(axes[0], groups, strict=True):
        mean = part.groupby(ratio)[list(metrics.values())].mean().sort_index()
        for label, col in metrics.items():
            ax.plot(
                mean.index,
                mean[col],
                marker="o",
                color=CONDITION_COLOURS[label],
                linewidth=2.2 if label == "mean" else 1.4,
                label=label,
            )
        ax.set(xlabel=f"dropping ratio d ({ratio})", title=str(name) if name is not None else "")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("rank-1 (%)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle("rank-1 against the dropping ratio (cf. the paper's Fig. 4)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_embeddings_2d(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike[str]
) -> Path:
    """One scatter per model of 2-D points coloured by subject (the paper's Fig. 5).

    ``panels``: title -> (points [n, 2], subject labels [n]). The same subject gets the same
    colour in every panel, so the panels can be compared point group by point group.
    """
    if not panels:
        raise ValueError("plot_embeddings_2d: no panels")
    plt = agg_pyplot()
    subjects = sorted({str(s) for _, labels in panels.values() for s in labels})
    cmap = plt.get_cmap("tab10" if len(subjects) <= 10 else "tab20")
    colour = {s: cmap(i % cmap.N) for i, s in enumerate(subjects)}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    for ax, (title, (points, labels)) in zip(axes[0], panels.items(), strict=True):
        for s in subjects:
            sel = np.asarray([str(x) == s for x in labels])
            if sel.any():
                ax.scatter(points[sel, 0], points[sel, 1], s=14, color=colour[s], label=s)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(
        title="subject", fontsize=7, bbox_to_anchor=(1.02, 1.0), loc="upper left", frameon=False
    )
    return save_figure(fig, path)
