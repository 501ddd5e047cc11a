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

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.hookimpl(tryfirst=True)  # before ``-m 'not slow'`` deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "analysis_runs" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
