"""Re-running a sweep runs only its missing jobs (``resume_sweep: true``; the ablations set it).

An ablation's job dirs are deterministic (``<ablation>/<arm>/seed<seed>``, conf/ablation_runner.yaml),
so the same command run again meets every job it already ran, in the same dir:

- complete (``metrics.json`` holds this task's result, for ``train`` at this config's
  ``max_steps``): not run again; one log line, and the stored metrics are the job's result;
- interrupted (checkpoints but no result): resumed from the newest checkpoint, as
  ``ckpt_path=last`` does. Why resume rather than start over: the resume continues the same run
  (the sampler, mask stream and optimizer state are in the checkpoint; tests/test_train.py), so
  the result is the one an uninterrupted job gives, the steps already trained are not paid for
  twice (a job of the ablation budget is minutes), and nothing the job wrote is overwritten;
- anything else (nothing there, or a job killed before its first checkpoint): a fresh run.

A dir whose recorded config (``.hydra/resolved.yaml``) differs from this job's (another budget,
another code version) is an error that names the differing settings: its result is neither
reused for another config nor overwritten.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf, open_dict

from gaitgl_lightning.errors import ConfigError
from gaitgl_lightning.runtime.checkpoints import newest_checkpoint

log = logging.getLogger(__name__)

#: Settings that may differ between two attempts of one job: how it was started, not what it is.
_ATTEMPT_KEYS = ("ckpt_path", "resume_sweep")
#: Settings that say how the report reads a sweep, not what a job runs: editing them leaves every
#: finished job of the sweep its own.
_READING_KEYS = ("ablation.reference", "ablation.control")
#: The metrics.json key of each task's result.
RESULT_KEY = {"train": "final", "eval": "eval"}


def result_of(metrics: Mapping[str, Any], task: str) -> Mapping[str, Any] | None:
    """The task's result in ``metrics`` (with a rank-1 summary), or None."""
    result = metrics.get(RESULT_KEY.get(task, ""))
    if isinstance(result, Mapping) and "rank1" in (result.get("summary") or {}):
        return result
    return None


def flatten_config(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"a.b.c": value}`` (why: two configs compare key by key)."""
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten_config(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def config_differences(current: Mapping[str, Any], recorded: Mapping[str, Any]) -> list[str]:
    """``key: recorded -> current`` for every setting that differs (attempt and reading keys
    aside)."""
    now, then = flatten_config(current), flatten_config(recorded)
    keys = sorted(
        k
        for k in now.keys() | then.keys()
        if k.split(".")[0] not in _ATTEMPT_KEYS and k not in _READING_KEYS
    )
    missing = "<absent>"
    return [
        f"{k}: {then.get(k, missing)} -> {now.get(k, missing)}"
        for k in keys
        if now.get(k, missing) != then.get(k, missing)
    ]


def _check_same_config(run_dir: Path, current: Mapping[str, Any]) -> None:
    recorded_file = run_dir / ".hydra" / "resolved.yaml"
    if not recorded_file.is_file():
        return
    recorded = yaml.safe_load(recorded_file.read_text()) or {}
    diffs = config_differences(current, recorded)
    if diffs:
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise ConfigError(
            f"{run_dir} holds a run of another config ({shown}): move that dir away to run this "
            "job there, or give the sweep another hydra.sweep.dir"
        )


def previous_result(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """With ``resume_sweep``: the stored metrics when this job is complete (the caller returns
    them); otherwise None, after pointing ``ckpt_path`` at the newest checkpoint of an
    interrupted training job. Raises ``ConfigError`` for a dir of another config."""
    task = str(cfg.get("task", "train"))
    if not cfg.get("resume_sweep", False) or task not in RESULT_KEY:
        return None
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    _check_same_config(run_dir, {str(k): v for k, v in resolved.items()})
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        result = result_of(metrics, task)
        done = task != "train" or metrics.get("steps") == int(cfg.trainer.max_steps)
        if result is not None and done:
            rank_zero_info(
                f"{run_dir}: complete (mean rank-1 {100 * result['summary']['rank1']:.2f}), "
                "not run again"
            )
            return dict(metrics)
    if task == "train" and cfg.get("ckpt_path") in (None, ""):
        newest = newest_checkpoint(run_dir / "checkpoints")
        if newest is not None:
            rank_zero_info(f"{run_dir}: interrupted; resuming from {newest}")
            with open_dict(cfg):
                cfg.ckpt_path = "last"
    return None
