"""The command line: ``python -m gaitgl_lightning [overrides]`` (also the ``gaitgl`` script).

This is the only module that uses ``@hydra.main``. It adds what a plain Hydra app lacks for
Lightning: W&B falls back to offline mode when no account is configured, and a multirun sweep
combined with script-relaunching DDP (which re-runs the whole sweep inside every rank, upstream
Lightning #11300 / Hydra #2070) is switched to the safe ``ddp_spawn`` path.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from gaitgl_lightning import config_dir

log = logging.getLogger(__name__)

#: Environment variables that mean "the ranks were started by a launcher, not by Lightning".
_EXTERNAL_LAUNCH = ("LOCAL_RANK", "TORCHELASTIC_RUN_ID")


def wandb_default_offline() -> None:
    """Use ``WANDB_MODE=offline`` when the user has no W&B credentials.

    A run then never blocks on a login prompt; ``wandb sync`` uploads it later.
    """
    if "WANDB_MODE" in os.environ or os.environ.get("WANDB_API_KEY"):
        return
    netrc = Path.home() / ".netrc"
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return
    os.environ["WANDB_MODE"] = "offline"


def launched_externally() -> bool:
    """True when torchrun / SLURM (srun with one task per device) created the processes."""
    if any(v in os.environ for v in _EXTERNAL_LAUNCH):
        return True
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ


def guard_multirun_ddp(cfg: DictConfig) -> None:
    """Make multirun + DDP safe, or stop with a message that says what to use instead.

    Lightning's ``ddp`` starts ranks 1..N-1 by re-executing the command line, which in a
    multirun holds the whole sweep: every child would run the sweep itself. In a multirun job we
    therefore switch to ``ddp_spawn`` (ranks are forked from the job, nothing is re-executed).
    """
    try:
        mode = HydraConfig.get().mode
    except ValueError:  # composed without @hydra.main (tests)
        return
    strategy = str(cfg.trainer.get("strategy", "auto"))
    if mode != RunMode.MULTIRUN or strategy != "ddp" or launched_externally():
        return
    launcher = str(HydraConfig.get().runtime.choices.get("hydra/launcher", "basic"))
    if launcher != "basic":
        raise RuntimeError(
            f"multirun with trainer.strategy=ddp and hydra/launcher={launcher}: give the launcher "
            "one task per device (e.g. hydra/launcher=submitit_slurm with tasks_per_node = GPUs "
            "per node) so that it, not Lightning, starts the ranks; see docs/cluster.md"
        )
    log.warning(
        "multirun + trainer.strategy=ddp: Lightning would re-run the whole sweep in every rank; "
        "using strategy=ddp_spawn for this job instead (same result, slower start-up)."
    )
    with open_dict(cfg):
        cfg.trainer.strategy = "ddp_spawn"


@hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")
def _main(cfg: DictConfig) -> Any:
    from gaitgl_lightning.run import run_task  # heavy imports after Hydra parsed the CLI

    guard_multirun_ddp(cfg)
    result = run_task(cfg)
    if isinstance(result, dict):
        final = result.get("final") or result.get("eval") or {}
        summary = final.get("summary") if isinstance(final, dict) else None
        if isinstance(summary, dict) and "rank1" in summary:
            return float(summary["rank1"])
    return None


def main() -> None:
    """Entry point of ``python -m gaitgl_lightning`` and of the ``gaitgl`` script."""
    wandb_default_offline()
    os.environ.setdefault("WANDB_START_METHOD", "thread")
    _main()
