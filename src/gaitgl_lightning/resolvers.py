"""OmegaConf resolvers the configs use (registered when the package is imported).

``${gaitgl.synthetic_classes:<size>}``: the number of training identities of a synthetic preset,
read from the generator's own presets so that the config can never disagree with the data.

``${gaitgl.run_stamp:}``: the name of a run's dir (see :func:`run_stamp`).

``${gaitgl.abspath:<path>}``: the path made absolute against the working directory at
composition time, so that a path a run records (the store in a checkpoint's config) resolves
from anywhere, e.g. from a notebook kernel that runs in ``notebooks/``.
"""

from __future__ import annotations

import os
from datetime import datetime

from omegaconf import OmegaConf

from gaitgl_lightning.errors import ConfigError

#: SLURM job names of interactive allocations (salloc / srun --pty), as Lightning reads them:
#: runs typed in such a shell are separate runs, not one job's ranks or requeues.
_INTERACTIVE_JOB_NAMES = ("bash", "interactive")


def synthetic_classes(size: str) -> int:
    """Training identities of the synthetic preset ``size``."""
    from gaitgl_lightning.data.synthetic import SIZES

    if size not in SIZES:
        raise ConfigError(f"synthetic dataset size {size!r} is not one of {sorted(SIZES)}")
    return int(SIZES[size]["train_subjects"])  # type: ignore[call-overload]


def run_stamp() -> str:
    """The run dir's name: ``slurm-<job>[.<step>]`` in a SLURM batch job, the start time otherwise.

    A requeued SLURM job restarts its script with the same job id (and step numbers), so keying
    the dir by them resumes the preempted run in its own dir, where Lightning finds its
    ``hpc_ckpt_*.ckpt``; the ranks of one ``srun`` step agree on it without sharing a clock.
    """
    job = os.environ.get("SLURM_JOB_ID")
    if job and os.environ.get("SLURM_JOB_NAME") not in _INTERACTIVE_JOB_NAMES:
        array = os.environ.get("SLURM_ARRAY_JOB_ID")
        if array:
            job = f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
        step = os.environ.get("SLURM_STEP_ID")
        return f"slurm-{job}" + (f".{step}" if step else "")
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def abspath(path: str) -> str:
    """``path`` with ``~`` expanded, absolute against the working directory."""
    return os.path.abspath(os.path.expanduser(str(path)))


def register() -> None:
    """Register the resolvers once (idempotent)."""
    if not OmegaConf.has_resolver("gaitgl.synthetic_classes"):
        OmegaConf.register_new_resolver("gaitgl.synthetic_classes", synthetic_classes)
    if not OmegaConf.has_resolver("gaitgl.run_stamp"):
        # Cached: the dir is named once per config, like Hydra's own ${now:...}.
        OmegaConf.register_new_resolver("gaitgl.run_stamp", run_stamp, use_cache=True)
    if not OmegaConf.has_resolver("gaitgl.abspath"):
        OmegaConf.register_new_resolver("gaitgl.abspath", abspath)
