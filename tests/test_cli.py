"""The real command line in a subprocess: the main command, 2-process gloo DDP, multirun + DDP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import TINY, run_cli


def _check(proc) -> None:  # type: ignore[no-untyped-def]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


def _single_run_dir(root: Path, task: str = "train") -> Path:
    (run,) = (root / "outputs" / task / "runs").iterdir()
    return run


@pytest.mark.slow  # a CLI subprocess
def test_main_command_trains_evaluates_and_shows_the_results(tmp_path: Path) -> None:
    with_progress = [
        *TINY,
        "trainer.enable_progress_bar=true",
        "callbacks.progress={_target_: gaitgl_lightning.console.StepProgressBar}",
    ]
    proc = run_cli(with_progress, tmp_path)
    _check(proc)
    run = _single_run_dir(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["final"]["summary"]["rank1"] <= 1
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    assert config["task"] == "train" and config["mask"]["strategy"] == "strip_v"
    assert config["model"]["mask"] == "${mask}"  # the mask group feeds the model
    assert (run / "checkpoints" / "last.ckpt").is_file()
    # Paths the run records resolve from anywhere (notebooks/ runs its kernel elsewhere).
    resolved = yaml.safe_load((run / ".hydra" / "resolved.yaml").read_text())
    assert Path(resolved["dataset"]["store"]).is_absolute()
    assert Path(resolved["dataset"]["store"]).is_dir()
    out = proc.stdout + proc.stderr
    # One line per message (Lightning's own handler and Hydra's both printed it), no adverts,
    # no deprecation warnings from inside Lightning.
    assert out.count("Seed set to 0") == 1, out
    assert "Tip:" not in out and "deprecated" not in out, out
    assert "step" in out and "12/12" in out and "Epoch" not in out, out
    # The results on screen: conditions, mean, baseline, best checkpoint, files.
    assert "mean rank-1" in out and "GEI baseline" in out, out
    assert f"best checkpoint  {metrics['best']['checkpoint']}" in out, out
    assert f"every number     {run / 'metrics.json'}" in out, out


def test_bad_override_fails_with_a_message(tmp_path: Path) -> None:
    proc = run_cli([*TINY, "dataset.P=50"], tmp_path)
    assert proc.returncode != 0
    assert "set dataset.P <= 8" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one_process(tmp_path: Path) -> None:
    _check(run_cli([*TINY, "trainer=ddp_cpu"], tmp_path / "ddp"))
    run = _single_run_dir(tmp_path / "ddp")
    assert (run / "metrics.json").is_file()
    ckpt = run / "checkpoints" / "last.ckpt"
    summaries = []
    for trainer in ("cpu", "ddp_cpu"):
        root = tmp_path / f"eval-{trainer}"
        _check(run_cli([*TINY, "task=eval", f"ckpt_path={ckpt}", f"trainer={trainer}"], root))
        metrics = json.loads((_single_run_dir(root, "eval") / "metrics.json").read_text())
        summaries.append(metrics["eval"]["summary"])
    assert summaries[0] == summaries[1]


@pytest.mark.slow
@pytest.mark.extended  # 72 s in CI: DDP has test_ddp_two_cpu_processes_match_one_process there,
# multiruns the ablation tests and the SLURM sweep
def test_multirun_over_mask_ratio_with_ddp(tmp_path: Path) -> None:
    proc = run_cli(["-m", *TINY, "trainer=ddp_cpu", "mask.ratio=0.1,0.3"], tmp_path)
    _check(proc)
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1"]
    ratios = []
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        for which in ("final", "best"):  # evaluated in spawned processes: the logged summary
            assert 0.0 <= metrics[which]["summary"]["rank1"] <= 1.0, metrics[which]
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        ratios.append(config["mask"]["ratio"])
    assert ratios == [0.1, 0.3]
    assert "ddp_spawn" in proc.stderr + proc.stdout
