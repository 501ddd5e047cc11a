"""Runs as records, the swept settings, and Table 5 filled from real multirun folders."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
from analysis_helpers import AnalysisRuns

from gaitgl_lightning.analysis import (
    PAPER_TABLE5,
    find_runs,
    latest_run,
    load_run,
    mask_strategy_table,
    model_kind,
    run_labels,
    runs_table,
    varying_settings,
)
from gaitgl_lightning.analysis.runs import RunInfo, flatten
from gaitgl_lightning.analysis.tables import table5_row


def test_multirun_folder_gives_the_swept_settings(analysis_runs: AnalysisRuns) -> None:
    runs = find_runs(analysis_runs.ratio_sweep)
    assert [r.path.name for r in runs] == ["0", "1", "2", "3"]
    assert varying_settings(runs) == ["mask", "mask.ratio"]
    table = runs_table(runs)
    assert list(table["mask"]) == ["part_v", "part_v", "strip_v", "strip_v"]
    assert list(table["mask.ratio"]) == [0.25, 0.5, 0.25, 0.5]
    for run, rank1 in zip(runs, table["rank1"], strict=True):
        metrics = json.loads((run.path / "metrics.json").read_text())
        assert rank1 == pytest.approx(100 * metrics["final"]["summary"]["rank1"])
        assert run.flat_config["model.mask.ratio"] == run.setting("mask.ratio")  # resolved
    assert run_labels(runs)[1] == "mask=part_v, mask.ratio=0.5"


def test_the_same_sweep_from_its_wandb_runs_alone(analysis_runs: AnalysisRuns) -> None:
    hydra_runs = find_runs(analysis_runs.ratio_sweep)
    wandb_runs = find_runs(sorted(analysis_runs.ratio_sweep.glob("*/wandb")))
    assert [r.source for r in wandb_runs] == ["wandb"] * 4
    assert varying_settings(wandb_runs) == ["mask.ratio", "mask.strategy"]
    for h, w in zip(hydra_runs, wandb_runs, strict=True):
        assert w.flat_config["mask.strategy"] == h.setting("mask")
        for which in ("final", "best"):
            assert w.summary(which).keys() == h.summary(which).keys() != set()
            for key, value in h.summary(which).items():
                assert w.summary(which)[key] == pytest.approx(value, abs=1e-6)


def test_table5_rows_from_global_local_and_mask_runs(analysis_runs: AnalysisRuns) -> None:
    runs = find_runs([analysis_runs.ratio_sweep, analysis_runs.model_sweep])
    assert sorted(model_kind(r) for r in runs) == ["GLCL"] * 4 + ["global only", "local only"]
    table = mask_strategy_table(runs)
    assert list(table["row"]) == [
        "global only",
        "local only, strip-level (V)",
        "part-level (V)",
        "part-level (V)",
        "strip-level (V)",
        "strip-level (V)",
    ]
    assert math.isnan(table["d"][0]) and list(table["d"][1:]) == [0.25, 0.25, 0.5, 0.25, 0.5]
    assert list(table["paper mean"]) == [92.3, 92.6, 93.5, 93.5, 93.6, 93.6]
    global_only = next(r for r in runs if model_kind(r) == "global only")
    assert table["mean"][0] == pytest.approx(100 * global_only.summary()["rank1"])
    assert table["CL"][0] == pytest.approx(100 * global_only.summary()["CL/rank1"])


def _run(
    strategy: str, ratio: float, rank1: float, stages: list[dict] | None = None, **model: object
) -> RunInfo:
    config = {
        "model": {"stages": stages or [{"local": "mask"}], "mask": {"strategy": strategy}, **model},
        "mask": {"strategy": strategy, "ratio": ratio},
    }
    config["model"]["mask"]["ratio"] = ratio
    summary = {"rank1": rank1, "NM/rank1": 1.0, "BG/rank1": rank1, "CL/rank1": 0.0}
    return RunInfo(
        Path(f"/runs/{strategy}{ratio}{rank1}"), "r", config, {"final": {"summary": summary}}
    )


def test_table5_averages_seeds_and_drops_d_where_unused() -> None:
    runs = [
        _run("strip_v", 0.25, 0.5),
        _run("strip_v", 0.25, 0.7),  # another seed of the same row
        _run("part_fixed", 0.25, 0.4),
        _run("part_fixed", 0.5, 0.6),  # d is unused by fixed parts: same row
        _run("pixel", 0.1, 0.3),
        RunInfo(Path("/runs/none"), "r", {}, {}),  # no result yet: left out
    ]
    table = mask_strategy_table(runs).set_index("row")
    assert table.loc["strip-level (V)", "mean"] == pytest.approx(60.0)
    assert table.loc["strip-level (V)", "runs"] == 2
    assert table.loc["part-level fixed", "mean"] == pytest.approx(50.0)
    assert math.isnan(table.loc["part-level fixed", "d"])
    assert table.loc["pixel-level", "d"] == 0.1
    assert list(table.index) == ["part-level fixed", "strip-level (V)", "pixel-level"]
    assert set(PAPER_TABLE5) >= set(table.index)
    with pytest.raises(ValueError, match="rank-1"):
        mask_strategy_table(runs[-1:])


def test_rows_follow_the_model_config_not_the_name() -> None:
    local_none = [{"local": "none"}, {"local": "none"}]
    no_global = [{"local": "mask", "global": False}]
    row, d = table5_row(_run("strip_v", 0.25, 0.5, local_none))
    assert row == "global only" and math.isnan(d)
    assert table5_row(_run("strip_h", 0.3, 0.5, no_global)) == ("local only, strip-level (H)", 0.3)
    assert table5_row(_run("part_h", 0.3, 0.5)) == ("part-level (H)", 0.3)
    # The model-level keys (model.local / model.global_branch), a stage's own key winning.
    plain = [{"channels": 4}, {"kind": "conv"}, {"channels": 8}]
    assert table5_row(_run("strip_v", 0.25, 0.5, plain, local="none"))[0] == "global only"
    local_only = _run("pixel", 0.1, 0.5, plain, global_branch=False)
    assert table5_row(local_only) == ("local only, pixel-level", 0.1)
    own = [{"local": "mask"}, {}]
    assert table5_row(_run("strip_v", 0.25, 0.5, own, local="none"))[0] == "strip-level (V)"


def test_flatten_names_list_items_by_position() -> None:
    flat = flatten({"a": {"b": [{"c": 1}, {"c": 2}], "d": [1, 2]}, "e": None})
    assert flat == {"a.b.0.c": 1, "a.b.1.c": 2, "a.d": (1, 2), "e": None}


def test_run_records_and_their_errors(analysis_runs: AnalysisRuns, tmp_path: Path) -> None:
    run = load_run(analysis_runs.single)
    assert run.settings["model"] == "tiny" and run.settings["logger"] == "csv_wandb"
    assert run.checkpoint("last") == analysis_runs.single / "checkpoints" / "last.ckpt"
    best = run.checkpoint("best")
    assert best is not None and best.name.startswith("step")
    assert list(run.results_table().index) == ["final", "best", "baseline_gei"]
    assert run.result("final").view_tables  # the full result, back from metrics.json
    assert latest_run(analysis_runs.root / "outputs", "multiruns").name in {"ratio", "models"}
    with pytest.raises(FileNotFoundError, match="neither a run dir"):
        load_run(tmp_path)
    broken = tmp_path / "broken"
    (broken / ".hydra").mkdir(parents=True)
    (broken / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (broken / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match=re.escape("metrics.json: not valid JSON")):
        load_run(broken)
    with pytest.raises(FileNotFoundError, match="no runs found"):
        find_runs(tmp_path / "broken" / ".hydra")


def test_latest_run_skips_a_run_stopped_before_its_first_evaluation(tmp_path: Path) -> None:
    runs = tmp_path / "train" / "runs"
    done, stopped = runs / "2026-01-01_00-00-00", runs / "2026-01-02_00-00-00"
    for run, header in ((done, "step,train/loss,val/rank1"), (stopped, "step,train/loss")):
        (run / "csv").mkdir(parents=True)
        (run / "csv" / "metrics.csv").write_text(f"{header}\n0,1.0\n")
    os.utime(done, (1, 1))  # older
    assert latest_run(tmp_path) == done  # the newer one has no val/* to show


def test_latest_run_skips_dirs_without_a_history(tmp_path: Path) -> None:
    trained = tmp_path / "train" / "runs" / "2026-01-01_00-00-00"
    (trained / "csv").mkdir(parents=True)
    (trained / "csv" / "metrics.csv").write_text("step,train/loss\n0,1.0\n")
    (tmp_path / "eval" / "runs" / "2026-01-02_00-00-00" / ".hydra").mkdir(parents=True)
    assert latest_run(tmp_path) == trained  # the newer eval dir logged nothing to look at
    with pytest.raises(FileNotFoundError, match="no multiruns"):
        latest_run(tmp_path, "multiruns")


def test_bookkeeping_choices_are_not_swept_settings() -> None:
    def run(sweep: str, logger: str, ratio: float) -> RunInfo:
        settings = {"sweep": sweep, "logger": logger, "model": "tiny", "mask.ratio": ratio}
        return RunInfo(Path(f"/r/{sweep}{ratio}"), "r", {}, {}, settings=settings)

    runs = [run("mask_ratio", "csv", 0.1), run("", "wandb", 0.1), run("", "csv", 0.3)]
    assert varying_settings(runs) == ["mask.ratio"]


def test_a_run_is_read_from_the_resolved_config_it_saved(tmp_path: Path) -> None:
    hydra = tmp_path / "run" / ".hydra"
    hydra.mkdir(parents=True)
    (hydra / "config.yaml").write_text(
        "name: ${hydra:runtime.choices.dataset}\ndataset: {store: '${paths.data_dir}/x'}\n"
        "paths: {data_dir: '${gaitgl.abspath:data}'}\n"
    )
    (hydra / "resolved.yaml").write_text(
        "name: synthetic-tiny\ndataset: {store: /abs/data/x}\npaths: {data_dir: /abs/data}\n"
    )
    (hydra / "hydra.yaml").write_text(
        "hydra: {runtime: {choices: {model: tiny, hydra/launcher: basic}}}\n"
    )
    (hydra / "overrides.yaml").write_text(
        "- +experiment=casia_b\n- mask.ratio=0.5\n- ++trainer.max_steps=7\n"
        "- ~callbacks.progress\n- \"tag='a b'\"\n"
    )
    run = load_run(tmp_path / "run")
    # The paths as the run resolved them where it ran, not against this process's directory.
    assert run.name == "synthetic-tiny" and run.config["dataset"]["store"] == "/abs/data/x"
    # Overrides read as Hydra reads them: prefixes, types, quoting; deletions are no setting.
    assert run.settings == {
        "model": "tiny",
        "experiment": "casia_b",
        "mask.ratio": 0.5,
        "trainer.max_steps": 7,
        "tag": "a b",
    }
    # A run from before the resolved copy: what resolves here does, the rest stays as written.
    (hydra / "resolved.yaml").unlink()
    older = load_run(tmp_path / "run")
    assert older.config["name"] == "${hydra:runtime.choices.dataset}"
    assert Path(older.config["dataset"]["store"]).is_absolute()
