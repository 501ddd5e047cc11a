"""Every figure helper draws a real image from real logs, and says what is missing otherwise."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
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


def _capture_figures(monkeypatch: pytest.MonkeyPatch, module: object) -> list[object]:
    """Keep every figure a plot function saves, to read what it drew."""
    figures: list[object] = []
    real = module.save_figure  # type: ignore[attr-defined]

    def keep(fig: object, path: Path) -> Path:
        figures.append(fig)
        return real(fig, path)

    monkeypatch.setattr(module, "save_figure", keep)
    return figures


@pytest.mark.parametrize("prefer", ["csv", "wandb"])
def test_evaluations_are_drawn_at_the_step_logs_and_checkpoints_name(
    analysis_runs: AnalysisRuns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefer: str
) -> None:
    import gaitgl_lightning.analysis.plots as plots

    # The run trains 12 steps and evaluates every 6 (debug=tiny): the console, metrics.json and
    # the checkpoint names say steps 6 and 12, while Lightning logs those evaluations at 5, 11.
    config = yaml.safe_load((analysis_runs.single / ".hydra" / "config.yaml").read_text())
    every, steps = int(config["eval_every"]), int(config["trainer"]["max_steps"])
    evaluated = list(range(every, steps + 1, every))
    assert json.loads((analysis_runs.single / "metrics.json").read_text())["steps"] == steps
    history = load_history(analysis_runs.single, prefer=prefer)
    assert list(history["val/rank1"].dropna().index) == [s - 1 for s in evaluated]
    named = {
        int(m.group(1))
        for p in analysis_runs.single.rglob("*.ckpt")
        if (m := re.fullmatch(r"step(\d+)-r1_.*\.ckpt", p.name))
    }
    assert named and named <= set(evaluated), named
    figures = _capture_figures(monkeypatch, plots)
    plot_eval_curves(history, tmp_path / "eval.png")
    ax = figures[0].axes[0]  # type: ignore[attr-defined]
    assert ax.get_ylabel() == "rank-1 (%)"
    for line in ax.get_lines():
        assert list(line.get_xdata()) == evaluated


def test_a_rank1_of_100_is_drawn_inside_the_axes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gaitgl_lightning.analysis.plots as plots

    history = pd.DataFrame({"val/rank1": [0.5, 1.0]}, index=[99, 199])
    figures = _capture_figures(monkeypatch, plots)
    plot_eval_curves(history, tmp_path / "eval.png")
    assert figures[0].axes[0].get_ylim()[1] > 100.0  # type: ignore[attr-defined]


def test_identical_sweep_runs_are_told_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gaitgl_lightning.analysis.plots as plots

    same = pd.DataFrame({"val/rank1": [0.2, 0.4, 0.6]}, index=[99, 199, 299])
    other = same * 0.5
    figures = _capture_figures(monkeypatch, plots)
    plot_runs_metric({"a": same, "b": same.copy(), "c": other}, tmp_path / "s.png")
    lines = {ln.get_label(): ln for ln in figures[0].axes[0].get_lines()}  # type: ignore[attr-defined]
    assert set(lines) == {"a (n=2 identical)", "b (n=2 identical)", "c"}
    xa, xb = lines["a (n=2 identical)"].get_xdata(), lines["b (n=2 identical)"].get_xdata()
    assert all(a != b for a, b in zip(xa, xb, strict=True))
    assert lines["a (n=2 identical)"].get_marker() != lines["b (n=2 identical)"].get_marker()
    assert list(lines["c"].get_xdata()) == [100, 200, 300]


def test_the_ce_note_is_below_its_axes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gaitgl_lightning.analysis.plots as plots

    flat = pd.DataFrame(
        {"train/ce": np.full(50, np.log(60)), "train/ce_acc": np.full(50, 1 / 60)},
        index=np.arange(50),
    )
    figures = _capture_figures(monkeypatch, plots)
    plot_training_curves(flat, tmp_path / "flat.png", num_classes=60)
    fig = figures[0]
    fig.canvas.draw()  # type: ignore[attr-defined]
    ax = next(a for a in fig.axes if a.get_title() == "cross-entropy accuracy")  # type: ignore[attr-defined]
    notes = [t for t in ax.texts if "stayed at chance" in t.get_text()]
    assert len(notes) == 1
    note = notes[0].get_window_extent()
    assert note.y1 <= ax.get_window_extent().y0  # entirely under the panel: no curve beneath


def test_view_heatmap_leaves_identical_views_empty_when_excluded() -> None:
    from gaitgl_lightning.evaluation.report import heatmap_cells
    from gaitgl_lightning.evaluation.results import ViewTable

    acc = np.array([[1.0, 0.5, 0.25], [0.5, 1.0, np.nan]])
    table = ViewTable(["000", "018"], ["000", "018", "036"], acc, {}, 0.5)
    cells = heatmap_cells(table, identical_excluded=True)
    assert cells.mask.tolist() == [[True, False, False], [False, True, True]]
    assert cells[0, 1] == 50.0
    assert heatmap_cells(table, identical_excluded=False).mask.tolist() == [
        [False, False, False],
        [False, False, True],
    ]


def test_view_heatmap_draws_no_number_on_excluded_identical_views(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gaitgl_lightning.evaluation.report as report
    from gaitgl_lightning.evaluation.results import EvalResult, ViewTable

    views = [f"{v:03d}" for v in range(0, 181, 18)]
    acc = np.full((11, 11), 0.8)
    table = ViewTable(views, views, acc, {}, 0.8)
    result = EvalResult(
        "casia-b",
        "test",
        "euclidean",
        {"rank1": 0.8},
        options={"include_identical_view": False},
        view_tables={"NM": table, "CL": table},
    )
    figures = _capture_figures(monkeypatch, report)
    assert_png_not_blank(report.plot_view_heatmaps(result, tmp_path / "views.png"))
    for ax in figures[0].axes[:2]:  # type: ignore[attr-defined]
        assert len(ax.texts) == 11 * 10  # every cell but the diagonal
        assert ax.images[0].get_array().mask.diagonal().all()
