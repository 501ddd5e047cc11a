"""Every figure helper draws a real image from real logs, and says what is missing otherwise."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_helpers import AnalysisRuns, assert_png_not_blank

from gaitgl_lightning.analysis import (
    find_runs,
    load_history,
    plot_embeddings_2d,
    plot_eval_curves,
    plot_ratio_sweep,
    plot_runs_metric,
    plot_training_curves,
    runs_table,
)
from gaitgl_lightning.analysis.plots import ce_at_chance, condition_columns


@pytest.mark.parametrize("prefer", ["csv", "wandb"])
def test_run_figures_from_either_logger(
    analysis_runs: AnalysisRuns, tmp_path: Path, prefer: str
) -> None:
    history = load_history(analysis_runs.single, prefer=prefer)
    assert_png_not_blank(plot_training_curves(history, tmp_path / "train.png"))
    assert_png_not_blank(plot_eval_curves(history, tmp_path / "eval.png"))


def test_sweep_figures(analysis_runs: AnalysisRuns, tmp_path: Path) -> None:
    runs = find_runs(analysis_runs.ratio_sweep)
    histories = {r.path.name: r.history() for r in runs}
    assert_png_not_blank(plot_runs_metric(histories, tmp_path / "sweep.png"))
    table = runs_table(runs, ["mask.strategy", "mask.ratio"])
    assert_png_not_blank(plot_ratio_sweep(table, tmp_path / "fig4.png"))


def test_embedding_scatter(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(["001", "002", "003"], 10)
    points = rng.normal(size=(30, 2)) + np.repeat(np.eye(3, 2) * 5, 10, axis=0)
    path = plot_embeddings_2d(
        {"a": (points, labels), "b": (points[::-1], labels[::-1])}, tmp_path / "e.png"
    )
    assert_png_not_blank(path)


def test_missing_columns_are_named(tmp_path: Path) -> None:
    empty = pd.DataFrame({"epoch": [0, 1]})
    with pytest.raises(ValueError, match=r"no train/\* columns"):
        plot_training_curves(empty, tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"no val/\* columns"):
        plot_eval_curves(empty, tmp_path / "b.png")
    with pytest.raises(ValueError, match=re.escape("do not vary 'mask.ratio'")):
        plot_ratio_sweep(empty, tmp_path / "c.png")
    with pytest.raises(ValueError, match="logged 'val/rank1'"):
        plot_runs_metric({"a": empty}, tmp_path / "d.png")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_condition_columns() -> None:
    casia = ["val/NM/rank1", "val/BG/rank1", "val/rank1", "train/loss", "test/rank1"]
    assert condition_columns(casia) == {
        "NM": "val/NM/rank1",
        "BG": "val/BG/rank1",
        "mean": "val/rank1",
    }
    retrieval = ["val/rank5", "val/rank1", "val/mAP"]
    assert condition_columns(retrieval) == {
        "rank5": "val/rank5",
        "rank1": "val/rank1",
        "mAP": "val/mAP",
    }
    assert condition_columns(casia, prefix="test") == {"rank1": "test/rank1"}


def test_figure_titles_name_the_run() -> None:
    from gaitgl_lightning.analysis.plots import _source_name

    history = pd.DataFrame()
    history.attrs["source"] = "/o/train/multiruns/2026-01-01_00-00-00/2/csv/metrics.csv"
    assert _source_name(history) == "2026-01-01_00-00-00/2"
    history.attrs["source"] = "/o/train/runs/2026-01-01_00-00-00/wandb/offline-run-20260101-ab"
    assert _source_name(history) == "2026-01-01_00-00-00"


def test_a_flat_cross_entropy_is_called_flat_on_the_plot(tmp_path: Path) -> None:
    steps = np.arange(300)
    rng = np.random.default_rng(0)
    flat = pd.DataFrame(
        {
            "train/ce": np.log(60) + rng.normal(0, 0.01, 300),
            "train/ce_acc": np.full(300, 1 / 60),
            "train/triplet": np.linspace(0.3, 0.1, 300),
        },
        index=steps,
    )
    learning = flat.assign(**{"train/ce": np.linspace(np.log(60), 1.0, 300)})
    assert ce_at_chance(flat, 60)
    assert not ce_at_chance(learning, 60)
    assert not ce_at_chance(flat, 10)  # chance of 10 classes is ln 10, far below
    assert not ce_at_chance(flat.drop(columns="train/ce"), 60)
    assert_png_not_blank(plot_training_curves(flat, tmp_path / "flat.png", num_classes=60))
