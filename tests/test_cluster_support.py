"""What the cluster path needs outside SLURM itself: a run dir that a requeued job finds again,
a preemption checkpoint taken between steps, and one writer per dataset store when several jobs
share the data dir."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from helpers import TINY, compose_config
from lightning.pytorch.callbacks import Callback

from gaitgl_lightning.datamodule import store_lock
from gaitgl_lightning.resolvers import run_stamp
from gaitgl_lightning.run import train

_SLURM = ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_JOB_NAME", "SLURM_ARRAY_JOB_ID")


@pytest.fixture
def no_slurm(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (*_SLURM, "SLURM_ARRAY_TASK_ID", "GAITGL_RUN_DIR"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_run_dir_of_a_slurm_job_is_named_by_job_and_step(no_slurm: pytest.MonkeyPatch) -> None:
    no_slurm.setenv("SLURM_JOB_ID", "4242")
    no_slurm.setenv("SLURM_JOB_NAME", "train")
    assert run_stamp() == "slurm-4242"  # python run by the batch script itself
    no_slurm.setenv("SLURM_STEP_ID", "0")
    assert run_stamp() == "slurm-4242.0"  # every rank of an srun step: one dir
    no_slurm.setenv("SLURM_ARRAY_JOB_ID", "4240")
    no_slurm.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert run_stamp() == "slurm-4240_2.0"


def test_run_dir_outside_a_batch_job_is_the_start_time(no_slurm: pytest.MonkeyPatch) -> None:
    assert run_stamp()[:2] == "20" and not run_stamp().startswith("slurm")
    no_slurm.setenv("SLURM_JOB_ID", "4242")
    no_slurm.setenv("SLURM_JOB_NAME", "interactive")  # salloc: each command is its own run
    assert not run_stamp().startswith("slurm")


def test_composed_run_dir_uses_the_job_id(no_slurm: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from hydra.core.hydra_config import HydraConfig

    no_slurm.setenv("SLURM_JOB_ID", "77")
    no_slurm.setenv("SLURM_JOB_NAME", "gaitgl")
    compose_config([], tmp_path)
    assert Path(str(HydraConfig.get().run.dir)).parts[-2:] == ("runs", "slurm-77")


def test_store_lock_lets_one_writer_at_a_time(tmp_path: Path) -> None:
    store = tmp_path / "data" / "store"
    entered = threading.Event()

    def second_writer() -> None:
        with store_lock(store):
            entered.set()

    with store_lock(store):
        thread = threading.Thread(target=second_writer)
        thread.start()
        assert not entered.wait(0.3)  # blocked while the first holds the store
    assert entered.wait(5)
    thread.join(5)


class SignalMidStep(Callback):
    """Sends this process SIGUSR1 between backward and optimizer step of step ``at_step + 1``:
    the worst moment for a checkpoint (the step's mask draw is counted, the weights not updated)."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_before_optimizer_step(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), signal.SIGUSR1)


def test_preemption_warning_checkpoints_between_steps_and_requeues(
    no_slurm: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    slurm = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "gaitgl", "SLURM_JOB_ID": "99"}
    for name, value in {**slurm, "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}.items():
        no_slurm.setenv(name, value)
    fake = tmp_path / "bin"  # a scontrol that records what it was asked
    fake.mkdir()
    (fake / "scontrol").write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "asked"}\n')
    (fake / "scontrol").chmod(0o755)
    no_slurm.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    callback = "+callbacks.signal_mid_step"
    overrides = [*TINY, "trainer.max_steps=6", "eval_every=6", "baseline_gei=false"]
    cfg = compose_config(
        [*overrides, f"{callback}._target_={__name__}.SignalMidStep", f"{callback}.at_step=3"],
        tmp_path,
    )
    train(cfg)
    ckpt = torch.load(tmp_path / "run" / "hpc_ckpt_1.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 4  # saved when step 4 had ended, not inside it
    assert int(ckpt["state_dict"]["net.mask_draws"]) == 4  # one draw per finished step
    assert (tmp_path / "asked").read_text().split() == ["requeue", "99"]
    assert signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None)  # handler given back
