"""Shared test set-up: CPU only, few threads, no network for W&B; the test tiers.

Tiers: the default suite (``make test``) stays fast on 2 cores; long runs are marked ``slow``
(``make test-all`` and CI run them): a real CLI subprocess, a notebook kernel, a W&B writer in
its own interpreter, DDP spawn. A test that needs the analysis fixture's CLI runs
(``analysis_runs``) is slow by that alone (marked here, not by hand in every test).
"""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch


def _threads_per_process() -> int:
    """The cores of this machine shared out between the pytest-xdist workers (``make test``
    runs one per core): a worker that kept 2 threads on a 2-core machine would make the two
    workers' threads spin against each other. CLI subprocesses inherit it via OMP_NUM_THREADS."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, min(2, (os.cpu_count() or 1) // workers))


if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(_threads_per_process())
torch.set_num_threads(_threads_per_process())


@pytest.hookimpl(tryfirst=True)  # before ``-m 'not slow'`` deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "analysis_runs" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
