"""One data module per dataset: each config builds its own class with only its own options, and
a dataset config saved before the split (the union class, the dataset in ``name``) still opens."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from helpers import compose_config
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gaitgl_lightning.datamodule import (
    CasiaBDataModule,
    Gait3DDataModule,
    GaitDataModule,
    GrewDataModule,
    OuMvlpDataModule,
    SyntheticDataModule,
    data_module_from_config,
)
from gaitgl_lightning.errors import ConfigError

CLASSES = {
    "synthetic": SyntheticDataModule,
    "casia_b": CasiaBDataModule,
    "oumvlp": OuMvlpDataModule,
    "grew": GrewDataModule,
    "gait3d": Gait3DDataModule,
}


def _own_options(cls: type) -> set[str]:
    """Constructor options of ``cls`` beyond the base's."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is GaitDataModule:
            break
        if "__init__" in vars(klass):
            params = inspect.signature(vars(klass)["__init__"]).parameters
            names |= {n for n, p in params.items() if n != "self" and p.kind is not p.VAR_KEYWORD}
    return names


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_each_dataset_config_builds_its_own_module(name: str, tmp_path: Path) -> None:
    cfg = compose_config([f"dataset={name}"], tmp_path)
    module = instantiate(cfg.dataset, _recursive_=False)
    assert type(module) is CLASSES[name] and module.dataset_name == name
    assert module.num_classes == int(cfg.dataset.num_classes)


def test_each_module_holds_only_its_own_options() -> None:
    assert _own_options(SyntheticDataModule) == {"size", "synthetic", "seed"}  # seed: data
    assert _own_options(CasiaBDataModule) == _own_options(OuMvlpDataModule)
    assert _own_options(CasiaBDataModule) == {"source", "layout", "strict"}
    assert _own_options(GrewDataModule) == {"source", "layout", "strict", "distractors", "val_ids"}
    assert _own_options(Gait3DDataModule) == {"source", "layout", "strict"}
    with pytest.raises(TypeError, match="distractors"):
        CasiaBDataModule(store="s", num_classes=1, protocol={}, P=1, K=1, distractors=True)


def test_a_dataset_config_from_before_the_split_still_opens(tmp_path: Path) -> None:
    new = OmegaConf.to_container(compose_config(["dataset=grew"], tmp_path).dataset, resolve=True)
    assert isinstance(new, dict)
    old = {**new, "_target_": "gaitgl_lightning.datamodule.GaitDataModule", "name": "grew"}
    old["val_ids"] = 3
    module = data_module_from_config(old)
    assert type(module) is GrewDataModule and module.val_ids == 3
    assert data_module_from_config(new).store_dir == module.store_dir
    with pytest.raises(ConfigError, match=r"'mygait'.*_target_"):
        data_module_from_config({**old, "name": "mygait"})
