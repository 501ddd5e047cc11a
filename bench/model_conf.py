"""The model configs as a run composes them (config extension applied), for the benchmarks."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from torch import nn

from gaitgl_lightning import config_dir


def build_model(name: str, num_classes: int, *overrides: str) -> nn.Module:
    """``model=<name>`` composed from ``train.yaml`` (as the CLI does) and instantiated."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}", *overrides])
    return instantiate(cfg.model, num_classes=num_classes)
