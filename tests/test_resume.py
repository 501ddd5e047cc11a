"""Stopping and resuming as people do it, with every record kept.

In-process (fast): a SIGTERM sent during training saves the step and stops with 128 + 15 and the
resume command; the resumed run keeps the CSV curves (every step once) and the loader's stream
position; ``resume=<run dir>`` spells out the run's own overrides; files follow the umask. The
CLI kill tests (SIGTERM and SIGKILL after the first evaluation, resumed from the run dir alone)
are slow.
"""

from __future__ import annotations

import csv
import os
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from helpers import TINY, compose_config, run_cli, start_cli

from gaitgl_lightning.errors import ConfigError, Stopped
from gaitgl_lightning.fileio import atomic_write_text
from gaitgl_lightning.runtime.curves import ResumableCSVLogger
from gaitgl_lightning.runtime.resume import resume_arguments
from gaitgl_lightning.runtime.tasks import train

QUIET = ["eval_best=false", "baseline_gei=false"]


class SignalAt(L.Callback):
    """Sends ``signum`` to this process at the end of training step ``step`` (test only)."""

    def __init__(self, step: int, signum: int = signal.SIGTERM) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "csv" / "metrics.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _steps_of(rows: list[dict[str, str]], key: str) -> list[int]:
    return [int(r["step"]) for r in rows if r.get(key)]


# ----------------------------------------------------------------------------- files
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_atomic_writes_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == mode


# ----------------------------------------------------------------------------- CSV curves
def test_the_csv_logger_keeps_the_rows_before_the_resume_step(tmp_path: Path) -> None:
    first = ResumableCSVLogger(str(tmp_path), name="csv", version="")
    for step in range(8):
        first.log_metrics({"train/loss": float(step)}, step)
    first.log_metrics({"val/rank1": 0.5}, 5)
    # killed here: every row is already on disk (written as logged)
    resumed = ResumableCSVLogger(str(tmp_path), name="csv", version="")
    resumed.resume_at(6)
    resumed.log_metrics({"val/rank1": 0.75}, 5)  # an evaluation repeated at the resume point
    for step in range(6, 10):
        resumed.log_metrics({"train/loss": 10.0 + step}, step)
    resumed.save()
    rows = _rows(tmp_path)
    assert _steps_of(rows, "train/loss") == list(range(10))
    assert [(r["step"], r["val/rank1"]) for r in rows if r["val/rank1"]] == [("5", "0.75")]
    assert [float(r["train/loss"]) for r in rows if r["train/loss"]][6] == 16.0


def test_a_run_killed_while_its_csv_was_set_aside_keeps_its_rows(tmp_path: Path) -> None:
    first = ResumableCSVLogger(str(tmp_path), name="csv", version="")
    for step in range(4):
        first.log_metrics({"train/loss": float(step)}, step)
    csv_file = tmp_path / "csv" / "metrics.csv"
    # killed after the writer moved the file aside and before it wrote the kept rows back
    csv_file.rename(csv_file.with_name("metrics.csv.kept"))
    resumed = ResumableCSVLogger(str(tmp_path), name="csv", version="")
    resumed.resume_at(3)
    resumed.log_metrics({"train/loss": 13.0}, 3)
    resumed.save()
    assert _steps_of(_rows(tmp_path), "train/loss") == [0, 1, 2, 3]
    assert sorted(p.name for p in csv_file.parent.iterdir()) == ["metrics.csv"]


# ----------------------------------------------------------------------------- the command
def _run_dir_with(tmp_path: Path, overrides: list[str]) -> Path:
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return run


def test_resume_spells_out_the_runs_own_overrides(tmp_path: Path) -> None:
    run = _run_dir_with(tmp_path, ["debug=tiny", "trainer.max_steps=30", "seed=3"])
    args = resume_arguments([f"resume={run}", "trainer.max_steps=60"])
    assert args == [
        "debug=tiny",
        "seed=3",
        "trainer.max_steps=60",  # given now: replaces the run's value
        f"hydra.run.dir={run}",
        "ckpt_path=last",
        f"resume={run}",
        "hydra.output_subdir=null",  # Hydra writes nothing over the run's .hydra files
    ]
    # the long form means the same; spelling it out again changes nothing (DDP re-runs it)
    assert resume_arguments(["ckpt_path=last", f"hydra.run.dir={run}", "trainer.max_steps=60"]) == (
        args
    )
    assert resume_arguments(args) == args
    assert resume_arguments(["debug=tiny"]) == ["debug=tiny"]


def test_resume_names_a_run_dir_that_is_not_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such run dir"):
        resume_arguments([f"resume={tmp_path / 'nope'}"])
    with pytest.raises(ConfigError, match=r"no \.hydra/overrides\.yaml"):
        resume_arguments([f"resume={tmp_path}"])
    run = _run_dir_with(tmp_path, ["debug=tiny"])
    with pytest.raises(ConfigError, match="give one run dir"):
        resume_arguments([f"resume={run}", f"hydra.run.dir={tmp_path}"])


# ----------------------------------------------------------------------------- in-process runs
def test_sigterm_saves_the_step_and_a_resume_keeps_every_record(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    common = [*TINY, *QUIET, "trainer.max_steps=8", "eval_every=4", "checkpoint_every=100"]
    stop = "+callbacks.signal_at={_target_: test_resume.SignalAt, step: 5}"
    # sent after this step's StopOnSignal hook (callback order): it stops at the next step
    with pytest.raises(Stopped) as stopped:
        train(compose_config([*common, stop], tmp_path))
    assert stopped.value.code == 128 + signal.SIGTERM
    run = tmp_path / "run"
    assert "at step 6" in stopped.value.line and f"resume={run}" in stopped.value.line
    saved = run / "checkpoints" / "interrupted-step000006.ckpt"
    state = torch.load(saved, weights_only=False)
    assert state["global_step"] == 6
    # the loader's stream position travels with the checkpoint (no "not resumable" warning)
    (loader,) = state["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader["step"] == 6
    assert _steps_of(_rows(run), "train/loss") == list(range(6))

    recwarn.clear()
    metrics = train(compose_config([*common, "ckpt_path=last", f"resume={run}"], tmp_path))
    assert metrics["steps"] == 8
    assert not [w for w in recwarn if "not resumable" in str(w.message)]
    rows = _rows(run)
    assert _steps_of(rows, "train/loss") == list(range(8))  # every step once
    assert len(_steps_of(rows, "val/rank1")) == len(set(_steps_of(rows, "val/rank1"))) == 2
    assert (run / ".hydra" / "resume-1" / "overrides.yaml").is_file()


def test_ckpt_path_takes_a_run_dir(tmp_path: Path) -> None:
    common = [*TINY, *QUIET, "trainer.max_steps=4", "eval_every=4"]
    train(compose_config(common, tmp_path / "a"))
    run = tmp_path / "a" / "run"
    for given in (run, run / "checkpoints"):
        metrics = train(compose_config([*common, f"ckpt_path={given}"], tmp_path / "b"))
        assert metrics["steps"] == 4  # resumed at its end: nothing left to train


def test_a_finished_run_trained_on_logs_each_step_once(tmp_path: Path) -> None:
    """Training a finished run longer (``ckpt_path=last``, larger ``max_steps``) goes on from
    its last step: the curves hold steps 0-5 once each, evaluations at 1, 3 and 5, as one run
    of 6 steps logs them (``last.ckpt`` written after fit was restored one step ahead: 0-3,
    then 5-6)."""
    common = [*TINY, *QUIET, "eval_every=2", "checkpoint_every=100"]
    train(compose_config([*common, "trainer.max_steps=4"], tmp_path))
    run = tmp_path / "run"
    longer = [*common, "trainer.max_steps=6", "ckpt_path=last", f"resume={run}"]
    assert train(compose_config(longer, tmp_path))["steps"] == 6
    rows = _rows(run)
    assert _steps_of(rows, "train/loss") == list(range(6))
    assert _steps_of(rows, "val/rank1") == [1, 3, 5]


# ----------------------------------------------------------------------------- the CLI (slow)
@pytest.mark.slow
@pytest.mark.timeout(3600)  # three CLI runs; a busy 2-core machine takes minutes for each
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_run_killed_after_its_first_evaluation_resumes_from_its_run_dir(
    tmp_path: Path, signum: int
) -> None:
    common = [
        *TINY,
        *QUIET,
        "logger=csv_wandb",
        "trainer.deterministic=true",
        "trainer.max_steps=12",
        "checkpoint_every=2",
        "eval_every=4",
    ]
    full = run_cli(common, tmp_path / "full", timeout=1500)
    assert full.returncode == 0, full.stderr[-3000:]
    (full_run,) = (tmp_path / "full" / "outputs" / "train" / "runs").iterdir()

    proc = start_cli(common, tmp_path / "killed")
    deadline = time.monotonic() + 1500
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((tmp_path / "killed" / "outputs").glob("train/runs/*/checkpoints/*r1_*"))
        if found:  # the step-4 evaluation is done (its best checkpoint written)
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == (128 + signum if signum == signal.SIGTERM else -signum), err
    (run,) = (tmp_path / "killed" / "outputs" / "train" / "runs").iterdir()
    if signum == signal.SIGTERM:
        (line,) = [x for x in err.splitlines() if x.startswith("stopped by SIGTERM")]
        assert line.endswith(f"resume with: python -m gaitgl_lightning resume={run}")
    config = (run / ".hydra" / "config.yaml").read_bytes()
    overrides = (run / ".hydra" / "overrides.yaml").read_bytes()

    resumed = run_cli([f"resume={run}"], tmp_path / "killed", timeout=1500)  # the run dir alone
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (run / ".hydra" / "config.yaml").read_bytes() == config
    assert (run / ".hydra" / "overrides.yaml").read_bytes() == overrides
    rows = _rows(run)
    assert _steps_of(rows, "train/loss") == list(range(12))  # every step once, from the first
    val = _steps_of(rows, "val/rank1")
    assert len(val) == len(set(val)) == 3
    want = torch.load(full_run / "checkpoints" / "last.ckpt", weights_only=False)
    got = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert got["global_step"] == want["global_step"] == 12
    for key, value in want["state_dict"].items():
        torch.testing.assert_close(got["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    from gaitgl_lightning.analysis import load_history

    history = load_history(run, prefer="wandb")  # the W&B segments joined
    # After a SIGKILL, W&B's offline writer has lost the rows it had not flushed: the resumed
    # segment logs them again from the CSV first (curves.backfill_wandb).
    assert list(history["train/loss"].dropna().index) == list(range(12))
    assert list(history["val/rank1"].dropna().index) == val


def test_help_lists_the_tasks_and_the_resume(tmp_path: Path) -> None:
    proc = run_cli(["--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for text in ("task=train", "task=eval", "task=extract", "task=prepare", "resume=<run dir>"):
        assert text in proc.stdout, text
    assert "README.md" in proc.stdout
    assert not (tmp_path / "outputs").exists()  # no run dir for a help page


@pytest.mark.slow
def test_a_command_that_fails_leaves_no_run_dir(tmp_path: Path) -> None:
    proc = run_cli([*TINY, "dataset.P=50"], tmp_path)  # P x K the train split cannot serve
    assert proc.returncode == 1 and "dataset.P" in proc.stderr, proc.stderr[-2000:]
    assert not list((tmp_path / "outputs").glob("train/runs/*"))


def test_a_misspelt_key_gets_the_nearest_existing_one() -> None:
    from gaitgl_lightning.suggest import with_suggestion

    hydra_line = (
        "Could not override 'trainer.max_step'. To append to your config use "
        "+trainer.max_step=5: Key 'max_step' is not in struct"
    )
    line = with_suggestion(hydra_line)
    assert line.endswith("did you mean trainer.max_steps?")
    assert "+trainer.max_step" not in line  # Hydra's hint only moves the error elsewhere
    far = hydra_line.replace("max_step", "zzz")
    assert with_suggestion(far) == far  # nothing close: the line as Hydra gave it
