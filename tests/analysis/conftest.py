"""Runs made once per session for the analysis tests: real CLI runs at test widths.

- ``single``: one run logged by both loggers (CSV and W&B offline), CASIA-B protocol;
- ``retrieval``: one run with the generic protocol (it has a rank-k curve);
- ``ratio_sweep``: a multirun over mask strategy x dropping ratio, both loggers (Fig. 4, Table 5);
- ``model_sweep``: a multirun over the global-only and local-only variants (Table 5, Fig. 5).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from analysis_helpers import AnalysisRuns
from filelock import FileLock
from helpers import TINY, run_cli

SHORT = ("trainer.max_steps=8", "eval_every=4")


def _run(args: list[str], root: Path) -> None:
    proc = run_cli(args, root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


#: run -> (its dir under outputs/train, the CLI arguments that make it there).
RUNS: dict[str, tuple[str, list[str]]] = {
    "single": ("runs/single", [*TINY, "logger=csv_wandb"]),
    "retrieval": ("runs/retrieval", [*TINY, *SHORT, "dataset.protocol.name=generic"]),
    "ratio_sweep": (
        "multiruns/ratio",
        ["-m", *TINY, *SHORT, "logger=csv_wandb", "mask=part_v,strip_v", "mask.ratio=0.25,0.5"],
    ),
    "model_sweep": (
        "multiruns/models",
        ["-m", *TINY, *SHORT, "++model={local:none},{global_branch:false}"],
    ),
}


def _maker(root: Path) -> Callable[[str], Path]:
    """``make(name)``: the run's dir, made by the first caller (a lock per run: under
    pytest-xdist every worker shares ``root``; the tests only read the runs)."""

    marks = root / "marks"  # beside outputs/: the run finders read only that tree
    marks.mkdir(exist_ok=True)
    ready: set[str] = set()  # made or found made by this process: no lock taken again

    def make(name: str) -> Path:
        sub, args = RUNS[name]
        path = root / "outputs" / "train" / sub
        if name in ready:
            return path
        made = marks / f"{name}.made"
        with FileLock(marks / f"{name}.lock"):
            if not made.is_file():
                shutil.rmtree(path, ignore_errors=True)
                # Hydra names run dirs by the second: each run gets its own dir instead.
                dir_key = "hydra.sweep.dir" if args[0] == "-m" else "hydra.run.dir"
                _run([*args, f"{dir_key}={path}"], root)
                made.touch()
        ready.add(name)
        return path

    return make


@pytest.fixture(scope="session")
def analysis_runs(tmp_path_factory: pytest.TempPathFactory) -> AnalysisRuns:
    """The runs, shared by every test of the session, and under pytest-xdist by every worker
    (the workers' common temp dir): each one is made once (about 85 s in all on 2 cores)."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        root = tmp_path_factory.getbasetemp().parent / "analysis"
        root.mkdir(exist_ok=True)
    else:
        root = tmp_path_factory.mktemp("analysis")
    return AnalysisRuns(root, _maker(root))
