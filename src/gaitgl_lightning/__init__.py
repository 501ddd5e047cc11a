"""GaitGL (Lin et al., journal version) as a PyTorch Lightning + Hydra experiment package.

The sub-packages are layered: ``models``, ``losses``, ``data`` and ``evaluation`` are plain
torch / numpy and know nothing of Lightning or Hydra; ``module`` and ``datamodule`` glue them;
``runtime`` holds the run lifecycle (tasks, checkpoints, the evaluation callback, signals,
failures); ``cli`` is the only Hydra entry point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__version__ = "0.1.0"

from gaitgl_lightning import resolvers as _resolvers

_resolvers.register()

__all__ = ["__version__", "config_dir", "group_config"]


def config_dir() -> Path:
    """Return the directory that holds the Hydra configs.

    A wheel ships ``conf/`` inside the package; an editable install or a checkout reads the
    repository's top-level ``conf/``. Looking in both lets ``python -m gaitgl_lightning`` work
    from either without the user passing ``--config-dir``.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"gaitgl_lightning: no Hydra config directory found (looked in {here / 'conf'} and "
        f"{here.parents[1] / 'conf'}); reinstall the package or run from a checkout."
    )


def group_config(group: str, name: str) -> Any:
    """``conf/<group>/<name>.yaml`` with its config extension applied (``defaults: [<base>,
    _self_]`` entries of the same group merged in order, as Hydra composes them), for code that
    needs one option outside a composed run (e.g. every ``opengait_*`` model for a checkpoint).
    """
    from omegaconf import DictConfig, OmegaConf

    path = config_dir() / group / f"{name}.yaml"
    node = OmegaConf.load(path)
    if not isinstance(node, DictConfig):
        raise ValueError(f"{path}: not a mapping config")
    defaults = node.pop("defaults", None)
    if not defaults:
        return node
    merged: Any = OmegaConf.create()
    # A mapping entry chooses an option of another group (`override /mask@...: part_fixed`):
    # it adds nothing to this group's node.
    defaults = [entry for entry in defaults if isinstance(entry, str)]
    for entry in defaults:
        part = node if entry == "_self_" else group_config(group, str(entry))
        merged = OmegaConf.merge(merged, part)
    if "_self_" not in defaults:
        merged = OmegaConf.merge(merged, node)
    return merged
