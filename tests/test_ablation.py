"""The ablation runner and its report on a tiny sweep: the real Hydra multirun (the CLI's entry
point, in this process) and Lightning trainer, 2 arms x 2 training seeds at ``budget=tiny``;
re-running the sweep runs only its missing jobs; two ratios that drop the same columns are one
arm in the report."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gaitgl_lightning import cli
from gaitgl_lightning.analysis.report import report
from gaitgl_lightning.runtime import tasks as run

ARMS = ("glcl_nomask", "strip_v")
SEEDS = (0, 1)


def _ablation(root: Path, data: Path, *args: str) -> None:
    """``python -m gaitgl_lightning +ablation=... budget=tiny ...`` under ``root``."""
    argv = ["gaitgl", *args, "budget=tiny", f"paths.root_dir={root}", f"paths.data_dir={data}"]
    old = sys.argv
    # cli.main sets these two for the processes it starts; keep them out of later tests' CLIs
    env = {k: os.environ.get(k) for k in (cli.FULL_ERROR_ENV, "GAITGL_SHORT_ERRORS")}
    sys.argv = argv
    try:
        cli.main()
    finally:
        sys.argv = old
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _record_jobs(patch: pytest.MonkeyPatch) -> list[str]:
    """The run dirs whose training actually runs (the real task, wrapped to record its dir)."""
    ran: list[str] = []
    real: Callable[..., Any] = run.TASKS["train"]

    def recording(cfg: Any) -> Any:
        ran.append(str(run.output_dir(cfg)))
        return real(cfg)

    patch.setitem(run.TASKS, "train", recording)
    for name in (cli.FULL_ERROR_ENV, "GAITGL_SHORT_ERRORS"):  # cli.main sets them; restored
        patch.delenv(name, raising=False)
    return ran


@pytest.fixture
def count_jobs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return _record_jobs(monkeypatch)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store for the module's sweeps: the data seed is fixed, so every job reads it."""
    return tmp_path_factory.mktemp("data")


def _metrics(job: Path) -> dict[str, Any]:
    return json.loads((job / "metrics.json").read_text())


@dataclass
class Sweep:
    root: Path
    table: Path
    jobs: dict[tuple[str, int], Path]
    ran: list[str]
    first: dict[tuple[str, int], dict[str, Any]]


SWEEP_ARGS = ("+ablation=table5", f"arm/table5={','.join(ARMS)}")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Sweep]:
    """``+ablation=table5 budget=tiny arm/table5=glcl_nomask,strip_v``: 2 arms x 2 seeds."""
    root = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as patch:
        ran = _record_jobs(patch)
        _ablation(root, data_dir, *SWEEP_ARGS)
    table = root / "outputs" / "ablation" / "table5"
    jobs = {(a, s): table / a / f"seed{s}" for a in ARMS for s in SEEDS}
    yield Sweep(root, table, jobs, ran, {k: _metrics(j) for k, j in jobs.items()})


def test_sweep_runs_arm_x_seed_into_fixed_dirs_on_one_store(sweep: Sweep) -> None:
    assert sorted(sweep.ran) == sorted(str(j) for j in sweep.jobs.values())
    stores = set()
    for (arm, seed), job in sweep.jobs.items():
        cfg = yaml.safe_load((job / ".hydra" / "resolved.yaml").read_text())
        assert (cfg["ablation"]["arm"], cfg["seed"]) == (arm, seed)
        assert cfg["ablation"]["group"] == f"table5/{arm}"  # the W&B group
        assert cfg["dataset"]["sampling_seed"] == seed and cfg["dataset"]["seed"] == 0
        stores.add(cfg["dataset"]["store"])
        assert sweep.first[arm, seed]["steps"] == 2
    assert len(stores) == 1  # paired design: every arm and seed reads the same data


def test_report_gives_the_runs_numbers_paired_by_seed(sweep: Sweep, tmp_path: Path) -> None:
    (tab,) = report(sweep.table, out=tmp_path / "report", show=False)
    assert tab.reference == "glcl_nomask" and [a.name for a in tab.arms] == list(ARMS)
    assert tab.conditions == ["NM", "BG", "CL"] and tab.steps == [2]
    for column, key in (("mean", "rank1"), ("CL", "CL/rank1")):
        score = {k: 100 * m["final"]["summary"][key] for k, m in sweep.first.items()}
        strip = tab.arm("strip_v")
        assert strip.spread(column).mean == pytest.approx(
            sum(score["strip_v", s] for s in SEEDS) / 2
        )
        diffs = [score["strip_v", s] - score["glcl_nomask", s] for s in SEEDS]
        assert strip.paired(tab.ref, column).mean == pytest.approx(sum(diffs) / 2)
    runs_csv = (sweep.table / "runs.csv").read_text()
    head = "table,arm,seed,steps,NM,BG,CL,mean,run,masks,setting,strategy,ratio"
    assert runs_csv.splitlines()[0] == head
    assert len(runs_csv.splitlines()) == 5 and "strip_v/seed1" in runs_csv
    for name in ("table5.md", "table5-summary.csv", "table5-views.csv", "table5.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    # The committed form: the report on the CSV alone gives the same table.
    results = tmp_path / "results"
    results.mkdir()
    (results / "table5.csv").write_text(runs_csv)
    views_csv = (sweep.table / "probe_views" / "runs.csv").read_text()
    assert views_csv.splitlines()[0] == "table,arm,seed,condition,probe_view,rank1"
    (results / "probe_views").mkdir()
    (results / "probe_views" / "table5.csv").write_text(views_csv)
    (again,) = report(results, draw=False, show=False)
    md = (results / "report" / "table5.md").read_text()
    assert md == (tmp_path / "report" / "table5.md").read_text()
    assert "where the seed sd comes from: strip_v - glcl_nomask: sd over seeds" in md
    assert not (results / "runs.csv").exists()
    assert again.arm("strip_v").paired(again.ref, "mean").mean == pytest.approx(
        tab.arm("strip_v").paired(tab.ref, "mean").mean, abs=1e-3
    )


def test_a_job_dir_of_another_config_is_an_error_not_overwritten(
    sweep: Sweep, data_dir: Path, count_jobs: list[str]
) -> None:
    job = sweep.jobs["strip_v", 0]
    before = (job / "metrics.json").read_bytes()
    with pytest.raises(SystemExit) as stop:
        _ablation(sweep.root, data_dir, *SWEEP_ARGS, "seed=0", "trainer.max_steps=3")
    assert stop.value.code == 1 and not count_jobs
    assert (job / "metrics.json").read_bytes() == before


def test_editing_how_the_report_reads_a_sweep_reruns_no_job(
    sweep: Sweep, data_dir: Path, count_jobs: list[str]
) -> None:
    # The reference and the control say how the report reads the sweep, not what a job runs:
    # every finished job stays its own, not "another config".
    _ablation(
        sweep.root,
        data_dir,
        *SWEEP_ARGS,
        "ablation.reference=strip_v",
        "+ablation.control=table5/strip_v",
    )
    assert not count_jobs


@pytest.mark.slow  # 4 more evaluation jobs; the fast tier has the sweep, report and re-run
def test_eval_mode_evaluates_the_same_checkpoints(
    sweep: Sweep, data_dir: Path, count_jobs: list[str]
) -> None:
    _ablation(sweep.root, data_dir, "+ablation=eval_mode")
    assert not count_jobs  # nothing trained
    folder = sweep.root / "outputs" / "ablation" / "eval_mode"
    for seed in SEEDS:
        none = _metrics(folder / "none" / f"seed{seed}")
        assert none["checkpoint"] == str(sweep.jobs["strip_v", seed] / "checkpoints" / "last.ckpt")
        # The unmasked test-time branch is what training evaluated: the same numbers.
        assert none["eval"]["summary"] == sweep.first["strip_v", seed]["final"]["summary"]
        mean = _metrics(folder / "mean" / f"seed{seed}")
        assert mean["masks"]["eval"] == "mean of 4 pairs" and mean["steps"] == 2
    (tab,) = report(folder, draw=False, show=False)
    assert tab.reference == "none" and [a.name for a in tab.arms] == ["none", "mean"]


def test_rerun_runs_only_the_missing_jobs(
    sweep: Sweep, data_dir: Path, count_jobs: list[str]
) -> None:
    # An interrupted sweep: one job lost its result (its checkpoints are there: it resumes),
    # one lost everything (it runs again from scratch). The same command runs those two only.
    jobs = sweep.jobs
    (jobs["strip_v", 1] / "metrics.json").unlink()
    shutil.rmtree(jobs["glcl_nomask", 0])
    untouched = jobs["strip_v", 0] / "metrics.json"
    stamp = untouched.stat().st_mtime_ns
    _ablation(sweep.root, data_dir, *SWEEP_ARGS)
    assert sorted(count_jobs) == sorted(str(jobs[k]) for k in (("strip_v", 1), ("glcl_nomask", 0)))
    assert untouched.stat().st_mtime_ns == stamp
    for key, job in jobs.items():  # the resumed and the re-run job give the same numbers
        assert _metrics(job)["final"]["summary"] == sweep.first[key]["final"]["summary"], key


def test_ratios_that_drop_the_same_columns_are_one_arm(
    tmp_path: Path, data_dir: Path, count_jobs: list[str]
) -> None:
    # On the tiny net's 12- and 6-column maps floor(0.25 * W) == floor(0.3 * W); 0.5 differs.
    args = ("+ablation=fig4", "mask=strip_v", "mask.ratio=0.25,0.3", "seed=0")
    _ablation(tmp_path, data_dir, *args, "trainer.max_steps=1", "eval_every=1")
    sweep = tmp_path / "outputs" / "ablation" / "fig4"
    masks = {r: _metrics(sweep / r / "seed0")["masks"] for r in ("strip_v_d0.25", "strip_v_d0.3")}
    assert masks["strip_v_d0.25"]["layers"] == masks["strip_v_d0.3"]["layers"]
    assert [layer["dropped_cols"] for layer in masks["strip_v_d0.25"]["layers"]] == [3, 3, 1, 1]
    (tab,) = report(sweep, reference="strip_v_d0.3", draw=False, show=False)
    assert [a.label for a in tab.arms] == ["strip_v_d0.25 = strip_v_d0.3"]  # one point
    md = (sweep / "report" / "fig4.md").read_text()
    assert "strip_v_d0.3 run exactly what strip_v_d0.25 runs" in md
    runs = (sweep / "runs.csv").read_text().splitlines()  # what the network drew, and d
    assert runs[0].endswith(",strategy,ratio") and runs[1].endswith(",strip_v,0.25")


def _read_once_written(folder: Path, timeout: float = 60.0) -> Any:
    """The W&B run in ``folder``, read again until its run record is there: W&B's writer is its
    own process and may still be flushing the last job's file when ``wandb.finish()`` has
    returned in this one (seen in CI on a busy machine: no run record yet, a moment later
    there)."""
    from gaitgl_lightning.analysis.wandb_offline import WandbLogError, load_wandb_run

    deadline = time.monotonic() + timeout
    while True:
        try:
            wandb_run = load_wandb_run(folder)
            if wandb_run.run_id or time.monotonic() > deadline:
                return wandb_run
        except WandbLogError:  # a record cut off mid-write
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


@pytest.mark.slow  # a W&B run
def test_wandb_runs_are_grouped_by_arm(
    tmp_path: Path, data_dir: Path, count_jobs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    _ablation(tmp_path, data_dir, *SWEEP_ARGS, "seed=0", "logger=csv_wandb")
    for arm in ARMS:
        (folder,) = (tmp_path / "outputs/ablation/table5" / arm / "seed0" / "wandb").glob(
            "offline-run-*"
        )
        wandb_run = _read_once_written(folder)
        assert (wandb_run.group, wandb_run.name) == (f"table5/{arm}", f"table5-{arm}-seed0")
