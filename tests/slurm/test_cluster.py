"""The cluster path on a real (local, one-node) SLURM: the sbatch example, a submitit sweep, and
preemption that requeues and resumes. CPU, gloo, tiny widths; see docs/cluster.md."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import TINY, run_cli
from slurm_jobs import REPO, job_env, job_info, sbatch, wait_job

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

EXAMPLE = REPO / "docs" / "slurm_example.sbatch"


def _tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.is_file() else f"(no {path})"


def cpu_twin(example: str) -> str:
    """The sbatch example with its GPU cluster's specifics replaced by this machine's: one node,
    2 tasks (one per gloo rank), the tiny synthetic run instead of GREW. Everything else (the run
    dir from the job id, requeue on SIGUSR1, W&B offline, srun) is the example's own text; its
    ``$PYTHON`` is this test's interpreter."""
    header = {
        "--nodes=2": "--nodes=1",
        "--ntasks-per-node=4": "--ntasks-per-node=2",
        "--cpus-per-task=8": "--cpus-per-task=1",
        "--time=72:00:00": "--time=20",
    }
    lines, out = example.splitlines(), []
    run = 'srun "$PYTHON" -m gaitgl_lightning'
    command = [i for i, line in enumerate(lines) if line.startswith(run)]
    assert len(command) == 1, f"the example must run one `{run} ...`"
    for flag in ("--requeue", "--signal=USR1@90"):  # what docs/cluster.md tells to submit with
        assert f"#SBATCH {flag}" in lines, f"the example lost its {flag}"
    for line in lines[: command[0]]:
        if line.startswith("#SBATCH --gpus-per-node"):
            continue
        for old, new in header.items():
            if line == f"#SBATCH {old}":
                line = f"#SBATCH {new}"
                header[old] = ""  # seen
        out.append(line)
    assert not any(header.values()), f"the example lost its {[k for k, v in header.items() if v]}"
    args = [*TINY, "trainer=ddp_cpu", "logger=wandb", "trainer.devices=2", "trainer.num_nodes=1"]
    out.append(f"srun {shlex.quote(sys.executable)} -m gaitgl_lightning {shlex.join(args)}")
    return "\n".join(out) + "\n"


def test_sbatch_example_cpu_twin(tmp_path: Path) -> None:
    """2 tasks under srun are one DDP run of world size 2: one run dir, one metrics file, one
    W&B offline run."""
    job = sbatch(cpu_twin(EXAMPLE.read_text()), tmp_path, job_env(tmp_path))
    info = wait_job(job)
    log = tmp_path / f"slurm-{job}.out"
    assert info["JobState"] == "COMPLETED", _tail(log)
    text = log.read_text()
    assert "world size 2" in text
    assert [p.name for p in (tmp_path / "outputs" / "train").iterdir()] == ["slurm"]
    run = tmp_path / "outputs" / "train" / "slurm" / job
    assert sorted(tmp_path.rglob("metrics.json")) == [run / "metrics.json"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 12 and 0 <= metrics["final"]["summary"]["rank1"] <= 1
    wandb_runs = sorted(tmp_path.rglob("offline-run-*"))
    assert len(wandb_runs) == 1 and wandb_runs[0].parent == run / "wandb", wandb_runs
    # Each rank trained on half the global batch; rank 0 alone logged.
    assert "per rank 8.0" in text


def test_multirun_through_submitit(tmp_path: Path) -> None:
    """``-m hydra/launcher=slurm_cpu``: one SLURM job per sweep point, each with its own dir,
    config and metrics; the sweep command returns once both jobs have finished."""
    proc = run_cli(["-m", "hydra/launcher=slurm_cpu", *TINY, "mask.ratio=0.1,0.3"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1"]
    ratios = []
    for job in jobs:
        assert json.loads((job / "metrics.json").read_text())["steps"] == 12
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        ratios.append(config["mask"]["ratio"])
    assert ratios == [0.1, 0.3]
    submitted = (sweep / ".submitit").iterdir()
    tasks = sorted(p.name for p in submitted if re.fullmatch(r"\d+_\d+", p.name))
    array = tasks[0].split("_")[0] if tasks else "?"
    assert tasks == [f"{array}_0", f"{array}_1"], tasks  # one SLURM array task per sweep point
    for task in tasks:  # each job's result was written before the sweep returned ...
        assert (sweep / ".submitit" / task / f"{task}_0_result.pkl").is_file()
    for task in tasks:  # ... and each then ends as COMPLETED (its step may still be exiting)
        assert wait_job(task, timeout=120)["JobState"] == "COMPLETED", job_info(task)


#: 45 steps, evaluated at 20 and 40: the preemption lands after step 20 and the final weights
#: (step 45) are evaluated on their own, the path that must not read the older hpc checkpoint.
PREEMPT_RUN = (*TINY, "trainer.max_steps=45", "eval_every=20")


def preemptible_job() -> str:
    """A job as docs/cluster.md says to submit one that may be preempted: requeueable, warned
    by USR1 before its time limit, appending its log across the restarts."""
    command = shlex.join([sys.executable, "-m", "gaitgl_lightning", *PREEMPT_RUN])
    return f"""#!/bin/bash
#SBATCH --job-name=gaitgl-preempt
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --time=20
#SBATCH --signal=USR1@90
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%j.out
set -euo pipefail
srun {command}
"""


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


def test_preempted_job_requeues_and_resumes_in_its_run_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """USR1 (what --signal sends before the time limit; here at once, by scancel): the job saves
    hpc_ckpt_1.ckpt at the end of the step and requeues itself; the restarted job finds it in the
    same run dir (named by the job id) and ends with the weights and metrics of a run that was
    never preempted."""
    root = tmp_path / "slurm"
    job = sbatch(preemptible_job(), root, job_env(root))
    run = root / "outputs" / "train" / "runs" / f"slurm-{job}.0"
    log = root / f"slurm-{job}.out"
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "last.ckpt").is_file():  # the step-20 evaluation is done
        assert job_info(job).get("JobState") in ("PENDING", "RUNNING"), _tail(log)
        assert time.monotonic() < deadline, _tail(log)
        time.sleep(0.2)
    time.sleep(0.5)
    subprocess.run(["scancel", "--signal=USR1", job], check=True, timeout=60)

    info = wait_job(job)
    assert info["JobState"] == "COMPLETED", _tail(log)
    assert info["Restarts"] == "1", info
    text = log.read_text()
    # Requeued by the job itself (Restarts=1 above; scontrol may be stopped by the requeue).
    assert "preemption warning: saved" in text and "requeueing SLURM job" in text, _tail(log)
    hpc = run / "hpc_ckpt_1.ckpt"
    assert re.search(rf"Restoring states from the checkpoint path at {re.escape(str(hpc))}", text)
    saved_at = torch.load(hpc, map_location="cpu", weights_only=False)["global_step"]
    assert 20 <= saved_at < 45, saved_at
    assert [p.name for p in run.parent.iterdir()] == [run.name]  # no second run dir

    # The job ran with one thread (job_env); so does the reference, or float sums differ.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    reference = run_cli(PREEMPT_RUN, tmp_path / "never-preempted")
    assert reference.returncode == 0, reference.stderr[-6000:]
    (ref_run,) = (tmp_path / "never-preempted" / "outputs" / "train" / "runs").iterdir()
    resumed, full = (_weights(r / "checkpoints" / "last.ckpt") for r in (run, ref_run))
    assert resumed.keys() == full.keys()
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=1e-6, msg=key)
    got, want = (json.loads((r / "metrics.json").read_text()) for r in (run, ref_run))
    assert got["steps"] == want["steps"] == 45
    assert got["final"]["summary"] == pytest.approx(want["final"]["summary"], abs=1e-6)
    assert got["best"]["summary"] == pytest.approx(want["best"]["summary"], abs=1e-6)
