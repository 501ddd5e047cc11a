"""What the cluster path needs outside SLURM itself: a run dir that a requeued job finds again,
and one writer per dataset store when several jobs share the data dir."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from helpers import compose_config

from gaitgl_lightning.datamodule import store_lock
from gaitgl_lightning.resolvers import run_stamp

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
