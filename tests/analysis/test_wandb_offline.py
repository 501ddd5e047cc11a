"""The W&B run-file reader against files written by wandb itself (offline, no account)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_helpers import AnalysisRuns

from gaitgl_lightning.analysis import load_history, load_wandb_run, read_csv_history
from gaitgl_lightning.analysis.history import wandb_dirs
from gaitgl_lightning.analysis.wandb_offline import WandbLogError, read_records, run_file


def test_history_from_wandb_equals_history_from_csv(analysis_runs: AnalysisRuns) -> None:
    csv = load_history(analysis_runs.single, prefer="csv")
    wandb = load_history(analysis_runs.single, prefer="wandb")
    assert "csv" in csv.attrs["source"] and "wandb" in wandb.attrs["source"]
    # Steps 0..11 of training, and step 12: the best checkpoint's test loop after fit, test/*.
    steps = list(range(13))
    assert list(csv.index) == list(wandb.index) == steps
    expected = {"train/loss", "train/triplet", "train/ce", "train/triplet_nonzero", "train/lr"}
    assert expected | {"train/seq_per_s", "val/rank1", "val/NM/rank1"} <= set(wandb.columns)
    # val/* only at the evaluations made during fit (after steps 6 and 12, logged at 5 and 11):
    # the end-of-run evaluation of the best checkpoint goes to test/*, not into this curve.
    assert list(csv["val/rank1"].dropna().index) == [5, 11]
    assert list(csv["test/rank1"].dropna().index) == [12]
    assert list(wandb["test/NM/rank1"].dropna().index) == [12]
    shared = sorted(set(csv.columns) & set(wandb.columns))
    assert len(shared) >= 12
    pd.testing.assert_frame_equal(csv[shared], wandb[shared], check_dtype=False, rtol=1e-6)


def test_config_and_summary_of_a_training_run(analysis_runs: AnalysisRuns) -> None:
    run = load_wandb_run(wandb_dirs(analysis_runs.single)[0])
    metrics = json.loads((analysis_runs.single / "metrics.json").read_text())
    assert run.config["model"]["channels"][0] == 4  # the resolved run config
    assert run.config["dataset"]["size"] == "tiny" and run.job_type == "train"
    final = metrics["final"]["summary"]
    assert run.summary["val/rank1"] == pytest.approx(final["rank1"], abs=1e-6)
    assert run.summary["val/CL/rank1"] == pytest.approx(final["CL/rank1"], abs=1e-6)
    best = metrics["best"]["summary"]  # the best checkpoint's test loop
    assert run.summary["test/rank1"] == pytest.approx(best["rank1"], abs=1e-6)


_LONG_RUN = """
import sys, wandb
run = wandb.init(mode="offline", dir=sys.argv[1], project="p", name="n",
                 config={"big": "x" * 100_000, "lr": 0.1})
for step in range(3000):
    run.log({"loss": 1.0 / (step + 1), "acc": step % 7}, step=step)
run.summary["best"] = 0.5
run.finish()
"""


@pytest.mark.slow  # a W&B writer process
def test_long_run_across_blocks_and_split_records(tmp_path: Path) -> None:
    """Thousands of rows and a record larger than a 32 KiB block, as wandb writes them.

    wandb runs in its own interpreter, as in a training job, so that no W&B state left in the
    test process by earlier tests can touch the file."""
    proc = subprocess.run(
        [sys.executable, "-c", _LONG_RUN, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    file = run_file(next(tmp_path.glob("wandb/offline-run-*")))
    assert file.stat().st_size > 4 * 32 * 1024
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a finished run's file must be complete
        loaded = load_wandb_run(file)
        history = load_history(file)
    big = "x" * 100_000  # one config record spans several blocks (first / middle / last chunks)
    assert loaded.config["big"] == big and loaded.config["lr"] == 0.1 and loaded.name == "n"
    assert loaded.summary["best"] == 0.5
    assert list(history.index) == list(range(3000))
    np.testing.assert_allclose(history["loss"], 1.0 / np.arange(1, 3001))
    np.testing.assert_array_equal(history["acc"], np.arange(3000) % 7)


def _copy_run_file(analysis_runs: AnalysisRuns, tmp_path: Path) -> Path:
    source = run_file(wandb_dirs(analysis_runs.single)[0])
    target = tmp_path / "offline-run-x" / source.name
    target.parent.mkdir()
    shutil.copy(source, target)
    return target


def test_cut_off_file_reads_what_was_written(analysis_runs: AnalysisRuns, tmp_path: Path) -> None:
    """A run still writing (or killed) ends mid-record: read up to there, with a warning."""
    file = _copy_run_file(analysis_runs, tmp_path)
    full = len(load_wandb_run(file).history)
    data = file.read_bytes()
    file.write_bytes(data[: len(data) * 2 // 3])
    with pytest.warns(UserWarning, match=r"incomplete|ends inside"):
        partial = load_wandb_run(file)
    assert 0 < len(partial.history) < full


def test_damaged_file_names_the_file(analysis_runs: AnalysisRuns, tmp_path: Path) -> None:
    file = _copy_run_file(analysis_runs, tmp_path)
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(WandbLogError, match=f"{file.name}.*checksum"):
        list(read_records(file))


def test_not_a_wandb_file(tmp_path: Path) -> None:
    bad = tmp_path / "run-abc.wandb"
    bad.write_bytes(b"not a wandb transaction log at all")
    with pytest.raises(WandbLogError, match=re.escape("run-abc.wandb: not a W&B run file")):
        load_wandb_run(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no W&B run file"):
        load_wandb_run(tmp_path / "empty")


def test_csv_reader_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no CSV logger file"):
        read_csv_history(tmp_path)
    bad = tmp_path / "metrics.csv"
    bad.write_text("epoch,loss\n0,1.0\n")
    with pytest.raises(ValueError, match=re.escape("metrics.csv: no 'step' column")):
        read_csv_history(bad)
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match="no training log"):
        load_history(tmp_path / "run")


def test_history_from_a_wandb_dir(analysis_runs: AnalysisRuns) -> None:
    history = load_history(analysis_runs.single / "wandb")
    assert "wandb" in history.attrs["source"] and "train/loss" in history
