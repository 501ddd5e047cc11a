"""Rebuild the network a checkpoint was trained with, from the checkpoint alone.

Every checkpoint of ``GaitGLModule`` stores the resolved run config under ``gaitgl.config``, so a
checkpoint is enough to know the architecture; ``task=extract`` and the notebooks use this
instead of asking the user to repeat the model overrides of the run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class LoadedNetwork:
    """The network with its trained weights (in eval mode), the run config, the step."""

    net: nn.Module
    config: DictConfig
    step: int


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, read with torch's weights-only loader (no arbitrary code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint file here")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged or foreign file
        raise ValueError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ValueError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    return state


def load_network(
    path: str | Path, fallback_config: Mapping[str, Any] | DictConfig | None = None
) -> LoadedNetwork:
    """Instantiate ``config.model`` of the checkpoint and load its ``net.*`` weights.

    ``fallback_config`` is used for a checkpoint without a stored config (e.g. written by other
    code); without either, the architecture is unknown and this raises.
    """
    state = read_checkpoint(path)
    stored = (state.get("gaitgl") or {}).get("config")
    if stored is None and fallback_config is None:
        raise ValueError(f"{path}: the checkpoint holds no run config (gaitgl.config)")
    source: Any = stored if stored is not None else fallback_config
    config = OmegaConf.create(source)
    if not isinstance(config, DictConfig):
        raise ValueError(f"{path}: the stored run config is not a mapping")
    net = instantiate(config.model, num_classes=int(config.dataset.num_classes))
    weights = {k[4:]: v for k, v in state["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit the stored model config: {err}") from err
    net.eval()
    return LoadedNetwork(net=net, config=config, step=int(state.get("global_step", 0)))


class RankOrLatestCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that keeps the best by ``monitor`` and, when an evaluation could not
    compute the monitored metric (GREW's hidden test labels: no rank-1), keeps the latest.

    Lightning's own callback stops the run with an error in that case. The fallback file is
    named with ``latest`` in place of the metric (``step020000-latest.ckpt``), so that its name
    does not claim a score.
    """

    def _save_topk_checkpoint(self, trainer: Any, monitor_candidates: dict[str, Any]) -> None:
        if self.save_top_k == 0 or self.monitor is None or self.monitor in monitor_candidates:
            super()._save_topk_checkpoint(trainer, monitor_candidates)
            return
        if not getattr(self, "_said_latest", False):
            log.info(
                "checkpoint selection: no %s in this evaluation (hidden labels?): keeping the "
                "latest checkpoint instead of the best",
                self.monitor,
            )
            self._said_latest = True
        template = self.filename
        if template and self.monitor:
            pattern = r"[^-{}/]*\{" + re.escape(self.monitor) + r"[^}]*\}"
            self.filename = re.sub(pattern, "latest", template)
        try:
            self._save_none_monitor_checkpoint(trainer, monitor_candidates)
        finally:
            self.filename = template
