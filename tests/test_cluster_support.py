"""What the cluster path needs outside SLURM itself: a run dir that a requeued job finds again,
a preemption checkpoint taken between steps, and one writer per dataset store when several jobs
share the data dir."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
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
from gaitgl_lightning.runtime.tasks import train

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


class StopAfterStep(Callback):
    """Ends the job after step ``at_step`` as a preemption would (no warning, no checkpoint)."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.at_step:
            raise SystemExit("preempted")


class RecordStart(Callback):
    """Writes the step training starts at (after any checkpoint was restored) into ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        Path(self.path).write_text(str(trainer.global_step))


class JobStopped(Exception):
    """What ends the process when SLURM stops a requeued job."""


class SignalInFinalEvaluation(Callback):
    """Sends SIGUSR1 once the evaluation after ``fit`` starts, then ends the job at its end as
    SLURM does once the job is requeued."""

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.state.fn == "validate":
            os.kill(os.getpid(), signal.SIGUSR1)

    def on_validation_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.state.fn == "validate":
            raise JobStopped("requeued: SLURM stops the job")


def _in_slurm_job(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, restarts: int = 0) -> Path:
    """SLURM's variables of a one-task batch job, and a ``scontrol`` that records its request."""
    env = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "gaitgl", "SLURM_JOB_ID": "99"}
    for name, value in {**env, "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLURM_RESTART_COUNT", str(restarts))
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "scontrol").write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "asked"}\n')
    (fake / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "asked"


def _with_callback(overrides: list[str], name: str, target: str, **args: Any) -> list[str]:
    key = f"+callbacks.{name}"
    return [*overrides, f"{key}._target_={__name__}.{target}"] + [
        f"{key}.{k}={v}" for k, v in args.items()
    ]


def test_a_requeued_job_resumes_from_its_own_newest_checkpoint(
    no_slurm: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A submitit sweep job preempted without a warning is started again by SLURM with the same
    arguments (no ckpt_path) in the same dir: it goes on from its step checkpoints."""
    common = [
        *TINY,
        "trainer.max_steps=12",
        "checkpoint_every=4",
        "eval_best=false",
        "baseline_gei=false",
    ]
    _in_slurm_job(no_slurm, tmp_path)
    with pytest.raises(SystemExit, match="preempted"):
        train(
            compose_config(
                _with_callback(common, "stop_after", "StopAfterStep", at_step=9), tmp_path
            )
        )
    _in_slurm_job(no_slurm, tmp_path, restarts=1)
    started = tmp_path / "started"
    cfg = compose_config(_with_callback(common, "rec", "RecordStart", path=started), tmp_path)
    assert train(cfg)["steps"] == 12
    assert started.read_text() == "8"  # from step checkpoint 8, not from scratch


def test_a_warning_during_the_final_evaluation_requeues_and_the_job_finishes_it(
    no_slurm: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    common = [
        *TINY,
        "trainer.max_steps=12",
        "eval_every=5",
        "checkpoint_every=4",
        "eval_best=false",
        "baseline_gei=false",
    ]
    asked = _in_slurm_job(no_slurm, tmp_path)
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)  # before the fix: nothing happens
    try:
        with pytest.raises(JobStopped, match="requeued"):
            train(
                compose_config(_with_callback(common, "sig", "SignalInFinalEvaluation"), tmp_path)
            )
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert asked.read_text().split() == ["requeue", "99"]
    run = tmp_path / "run"
    assert not (run / "metrics.json").exists()
    steps = {p: p.stat().st_mtime_ns for p in (run / "checkpoints" / "steps").iterdir()}
    _in_slurm_job(no_slurm, tmp_path, restarts=1)
    metrics = train(compose_config(common, tmp_path))  # the requeued job
    assert metrics["steps"] == 12 and 0.0 <= metrics["final"]["summary"]["rank1"] <= 1.0
    assert json.loads((run / "metrics.json").read_text())["final"] == metrics["final"]
    assert {p: p.stat().st_mtime_ns for p in steps} == steps  # no step trained again


def _listening(port: int) -> socket.socket | None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("0.0.0.0", port))
    except OSError:  # taken already (another cluster): as good for this test
        sock.close()
        return None
    sock.listen()
    return sock


def test_a_second_local_cluster_chooses_free_ports(tmp_path: Path) -> None:
    """With SLURM's ports 6817 / 6818 held (by a first local cluster), a second one
    (another state dir) is configured on other, free ports, not on the same ones."""
    held = [_listening(6817), _listening(6818)]
    try:
        script = Path(__file__).parents[1] / "scripts" / "slurm-local.sh"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_LOCAL_")}
        done = subprocess.run(
            [str(script), "ports", str(tmp_path / "second")],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=60,
        )
        ports = dict(item.split("=") for item in done.stdout.split())
        ctld, slurmd = int(ports["SlurmctldPort"]), int(ports["SlurmdPort"])
        assert {ctld, slurmd}.isdisjoint({6817, 6818}) and ctld != slurmd
        for port in (ctld, slurmd):
            sock = _listening(port)
            assert sock is not None, port  # free
            sock.close()
    finally:
        for sock in held:
            if sock is not None:
                sock.close()
