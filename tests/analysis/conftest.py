"""Runs made once per session for the analysis tests: real CLI runs at test widths.

- ``single``: one run logged by both loggers (CSV and W&B offline), CASIA-B protocol;
- ``retrieval``: one run with the generic protocol (it has a rank-k curve);
- ``ratio_sweep``: a multirun over mask strategy x dropping ratio, both loggers (Fig. 4, Table 5);
- ``model_sweep``: a multirun over the global-only and local-only variants (Table 5, Fig. 5).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from analysis_helpers import AnalysisRuns
from helpers import TINY, run_cli

SHORT = ("trainer.max_steps=8", "eval_every=4")


def _run(args: list[str], root: Path) -> None:
    proc = run_cli(args, root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="session")
def analysis_runs(tmp_path_factory: pytest.TempPathFactory) -> AnalysisRuns:
    root = tmp_path_factory.mktemp("analysis")
    # Hydra names run dirs by the second: each run gets its own GAITGL_RUN_DIR instead.
    single, retrieval = root / "outputs/train/runs/single", root / "outputs/train/runs/retrieval"
    _run([*TINY, "logger=csv_wandb", f"hydra.run.dir={single}"], root)
    _run([*TINY, *SHORT, "dataset.protocol.name=generic", f"hydra.run.dir={retrieval}"], root)
    ratio = root / "outputs/train/multiruns/ratio"
    models = root / "outputs/train/multiruns/models"
    _run(
        [
            "-m",
            *TINY,
            *SHORT,
            "logger=csv_wandb",
            "mask=part_v,strip_v",
            "mask.ratio=0.25,0.5",
            f"hydra.sweep.dir={ratio}",
        ],
        root,
    )
    _run(
        [
            "-m",
            *TINY,
            *SHORT,
            "++model={local:none},{global_branch:false}",
            f"hydra.sweep.dir={models}",
        ],
        root,
    )
    return AnalysisRuns(root, single, retrieval, ratio, models)
