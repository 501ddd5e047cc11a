"""Submitting and watching jobs on the local SLURM cluster of the ``slurm`` tests."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def job_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment a test job is submitted with: no SLURM variables of an enclosing job (CI
    may itself run under SLURM), outputs under ``root``, offline W&B, one thread per task."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}
    env.update(
        GAITGL_ROOT=str(root), WANDB_MODE="offline", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"
    )
    env.update(extra)
    return env


def sbatch(script: str, root: Path, env: Mapping[str, str]) -> str:
    """Submit ``script`` from ``root``; returns the job id."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "job.sbatch"
    path.write_text(script)
    proc = subprocess.run(
        ["sbatch", "--parsable", str(path)],
        cwd=root,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def job_info(job: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (JobState, Restarts, ...); empty once SLURM forgot it."""
    proc = subprocess.run(
        ["scontrol", "show", "job", "-o", job], capture_output=True, text=True, check=False
    )
    fields = (item.split("=", 1) for item in proc.stdout.split() if "=" in item)
    return dict(fields) if proc.returncode == 0 else {}


def wait_job(job: str, timeout: float = 600) -> dict[str, str]:
    """Wait until the job has ended (for good, not requeued); returns its last ``job_info``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = job_info(job)
        if info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"):
            return info
        time.sleep(1)
    subprocess.run(["scancel", job], check=False)
    raise AssertionError(f"SLURM job {job} did not end in {timeout:.0f} s: {job_info(job)}")
