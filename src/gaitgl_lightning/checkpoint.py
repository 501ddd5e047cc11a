"""Checkpoints: read them safely (weights-only, errors naming the file and what it is), rebuild
the network a checkpoint was trained with, accept OpenGait's checkpoints wherever ours are.

Every checkpoint of ``GaitGLModule`` stores the resolved run config under ``gaitgl.config``, so a
checkpoint is enough to know the architecture; ``task=extract`` and the notebooks use this
instead of asking the user to repeat the model overrides of the run.
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from torch import nn

from gaitgl_lightning.errors import CheckpointError, MissingCheckpointError
from gaitgl_lightning.models.opengait import (
    OpenGaitCheckpointError,
    load_opengait_state,
    opengait_num_classes,
    opengait_problems,
)

log = logging.getLogger(__name__)


@dataclass
class LoadedNetwork:
    """The network with its trained weights (in eval mode), the run config, the step."""

    net: nn.Module
    config: DictConfig
    step: int


def read_checkpoint_any(path: str | Path) -> tuple[str, dict[str, Any]]:
    """``(kind, dict)`` of a checkpoint file: ``lightning`` (ours) or ``opengait``.

    Always read with torch's weights-only loader (tensors and plain containers, never code):
    the package enforces it rather than relying on torch's default. Every failure names the
    file and what it is: missing, empty, truncated, not a torch checkpoint, holding objects the
    weights-only loader refuses, or a torch file of another kind.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingCheckpointError(f"{path}: no checkpoint file here")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint")
    with path.open("rb") as f:
        head = f.read(4)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged or foreign file
        text = str(err)
        first = text.splitlines()[0][:200] if text else type(err).__name__
        if head.startswith(b"PK") and not zipfile.is_zipfile(path):  # its end is missing
            raise CheckpointError(
                f"{path}: truncated checkpoint ({size} bytes; the zip archive is cut short): "
                "copy it again, or take an earlier checkpoint"
            ) from err
        if "Unsupported global" in text:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
            what = found.group(1) if found else "objects other than tensors and containers"
            raise CheckpointError(
                f"{path}: holds {what}, which the weights-only loader refuses (it never runs "
                "code from a file), so it is not a checkpoint this package reads"
            ) from err
        raise CheckpointError(
            f"{path}: not a torch checkpoint ({type(err).__name__}: {first})"
        ) from err
    if isinstance(state, dict) and "state_dict" in state:
        return "lightning", state
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        return "opengait", state
    keys = sorted(map(str, state))[:8] if isinstance(state, dict) else type(state).__name__
    raise CheckpointError(
        f"{path}: a torch file but not a checkpoint of this package or of OpenGait "
        f"(no 'state_dict' or 'model' entry; it holds {keys})"
    )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint of this package (Lightning), read weights-only; an OpenGait file is named
    as such, with what to do instead."""
    kind, state = read_checkpoint_any(path)
    if kind == "opengait":
        raise CheckpointError(
            f"{path}: an OpenGait checkpoint, not one of this package: evaluate it with "
            "task=eval model=opengait_gaitgl (or opengait_gaitgl_large), embed with "
            "task=extract, or start training from it with init_weights=<file>"
        )
    return state


def checkpoint_num_classes(kind: str, state: Mapping[str, Any]) -> int | None:
    """The number of training classes a checkpoint's classifier fixes (None: it fixes none)."""
    if kind == "opengait":
        return opengait_num_classes(state)
    config = (state.get("gaitgl") or {}).get("config") or {}
    stored = (config.get("dataset") or {}).get("num_classes")
    if stored is not None:
        return int(stored)
    weight = state["state_dict"].get("net.head.classifier.fc_bin")
    return None if weight is None else int(weight.shape[-1])


def opengait_model_configs() -> list[str]:
    """The shipped model configs built like OpenGait's GaitGL (``conf/model/opengait_*``)."""
    from gaitgl_lightning import config_dir

    return sorted(p.stem for p in (config_dir() / "model").glob("opengait_*.yaml"))


def fitting_opengait_configs(state: Mapping[str, Any], num_classes: int) -> list[str]:
    """Which ``opengait_*`` model configs an OpenGait checkpoint's tensors fit exactly."""
    from gaitgl_lightning import group_config

    fits = []
    for name in opengait_model_configs():
        cfg = group_config("model", name)
        for head in ("bn", "bnneck"):
            cfg.head = head
            try:
                net = instantiate(cfg, num_classes=num_classes)
                problems, _ = opengait_problems(net, state, "")
            except Exception:  # a config that cannot even be built for this checkpoint
                continue
            if not problems:
                fits.append(name if head == "bn" else f"{name} model.head=bnneck")
    return fits


def load_opengait_weights(
    net: nn.Module, path: str | Path, state: Mapping[str, Any], *, classifier: bool = True
) -> None:
    """Load an OpenGait checkpoint into ``net``; on a mismatch the error names the model
    config that fits the checkpoint (or says that none of the shipped ones does)."""
    problems, _ = opengait_problems(net, state, str(path), classifier=classifier)  # type: ignore[arg-type]
    if problems:
        classes = opengait_num_classes(state) or 1
        fits = fitting_opengait_configs(state, classes)
        hint = (
            f"use model={fits[0]}"
            if fits
            else "none of the shipped opengait_* model configs fits it: write a model config "
            "with its stages"
        )
        log.info("%s: differences from the model config:\n%s", path, "\n".join(problems))
        raise OpenGaitCheckpointError(
            f"{path}: an OpenGait checkpoint that does not fit this model config "
            f"({len(problems)} differences, e.g. {problems[0].strip()}); {hint}"
        )
    load_opengait_state(net, state, str(path), classifier=classifier)  # type: ignore[arg-type]


def load_network(
    path: str | Path, fallback_config: Mapping[str, Any] | DictConfig | None = None
) -> LoadedNetwork:
    """Instantiate ``config.model`` of the checkpoint and load its ``net.*`` weights.

    ``fallback_config`` is used for a checkpoint without a stored config (e.g. written by other
    code, or OpenGait's, whose architecture is the fallback's ``model``); without either, the
    architecture is unknown and this raises.
    """
    kind, state = read_checkpoint_any(path)
    stored = None if kind == "opengait" else (state.get("gaitgl") or {}).get("config")
    if stored is None and fallback_config is None:
        raise CheckpointError(f"{path}: the checkpoint holds no run config (gaitgl.config)")
    source: Any = stored if stored is not None else fallback_config
    config = OmegaConf.create(source)
    if not isinstance(config, DictConfig):
        raise CheckpointError(f"{path}: the stored run config is not a mapping")
    classes = checkpoint_num_classes(kind, state) or int(config.dataset.num_classes)
    net = instantiate(config.model, num_classes=classes)
    if kind == "opengait":
        load_opengait_weights(net, path, state)
        step = int(state.get("iteration", 0))
    else:
        weights = {k[4:]: v for k, v in state["state_dict"].items() if k.startswith("net.")}
        try:
            net.load_state_dict(weights)
        except RuntimeError as err:
            raise CheckpointError(f"{path}: weights do not fit the model config: {err}") from err
        step = int(state.get("global_step", 0))
    net.eval()
    return LoadedNetwork(net=net, config=config, step=step)


def load_initial_weights(net: nn.Module, path: str | Path) -> list[str]:
    """Start training from the weights of a checkpoint (ours or OpenGait's): every tensor that
    fits is loaded; the classifier is left as initialised when the class count differs
    (fine-tuning on another dataset). Returns the names left out."""
    kind, state = read_checkpoint_any(path)
    ours = net.state_dict()
    if kind == "opengait":
        same = opengait_num_classes(state) == _classes_of(ours)
        load_opengait_weights(net, path, state, classifier=same)
        return [] if same else [k for k in ours if k.startswith("head.classifier.")]
    weights = {k[4:]: v for k, v in state["state_dict"].items() if k.startswith("net.")}
    left = [
        k
        for k, v in weights.items()
        if k.startswith("head.classifier.") and k in ours and ours[k].shape != v.shape
    ]
    fitting = {k: v for k, v in weights.items() if k not in left}
    try:
        missing, unexpected = net.load_state_dict(fitting, strict=False)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the model config: {err}") from err
    problems = [k for k in missing if k not in left and k != "mask_draws"] + list(unexpected)
    if problems:
        raise CheckpointError(
            f"{path}: the checkpoint's network differs from the model config "
            f"(e.g. {problems[:4]}); use the model config it was trained with"
        )
    return left


def _classes_of(state: Mapping[str, torch.Tensor]) -> int | None:
    weight = state.get("head.classifier.fc_bin")
    return None if weight is None else int(weight.shape[-1])


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
