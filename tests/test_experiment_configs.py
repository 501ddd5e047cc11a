"""Every config group option, experiment and sweep preset composes and instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import compose_config
from hydra.utils import instantiate

from gaitgl_lightning import config_dir

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
SWEEPS = sorted(p.stem for p in (config_dir() / "sweep").glob("*.yaml"))


def test_presets_exist() -> None:
    for name in ("synthetic", "casia_b", "oumvlp", "grew_sgd", "gait3d", "opengait_casia_b"):
        assert name in EXPERIMENTS
    assert {"fig4_part", "fig4_strip_pixel", "table5", "mask_ratio"} <= set(SWEEPS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_instantiates(experiment: str, tmp_path: Path) -> None:
    cfg = compose_config([f"+experiment={experiment}"], tmp_path)
    assert cfg.model.mask == cfg.mask  # the mask group is the single source of the strategy
    with torch.device("meta"):
        net = instantiate(cfg.model, num_classes=int(cfg.dataset.num_classes))
    params = list(net.parameters())
    assert params and all(p.is_meta for p in params)
    loss = instantiate(cfg.loss)
    optimizer = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(2))])
    if cfg.get("scheduler"):
        instantiate(cfg.scheduler)(optimizer)
    datamodule = instantiate(cfg.dataset, _recursive_=False)
    assert datamodule.num_classes == int(cfg.dataset.num_classes)
    assert cfg.trainer.use_distributed_sampler is False
    assert callable(loss)


def test_grew_sgd_is_the_papers_recipe(tmp_path: Path) -> None:
    cfg = compose_config(["+experiment=grew_sgd"], tmp_path)
    assert (cfg.dataset.P, cfg.dataset.K) == (32, 4)
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.lr == 0.1
    assert cfg.trainer.max_steps == 200_000
    assert cfg.mask.strategy == "strip_v"
    assert "WandbLogger" in cfg.logger.wandb._target_


@pytest.mark.parametrize("sweep", SWEEPS)
def test_sweep_presets_set_multirun(sweep: str, tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["+experiment=casia_b", f"+sweep={sweep}"],
            return_hydra_config=True,
        )
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    params = cfg.hydra.sweeper.params
    assert "mask" in params or "mask.ratio" in params


def test_mask_override_reaches_the_model(tmp_path: Path) -> None:
    cfg = compose_config(["mask=part_h", "mask.ratio=0.3"], tmp_path)
    net = instantiate(cfg.model, num_classes=int(cfg.dataset.num_classes))
    assert net.mask_strategy.strategy == "part_h" and net.mask_strategy.ratio == 0.3


def test_deviation_from_the_recipe_is_reported(tmp_path: Path) -> None:
    from gaitgl_lightning.run import recipe_deviations

    assert recipe_deviations(compose_config(["+experiment=casia_b"], tmp_path)) == []
    changed = compose_config(
        ["+experiment=casia_b", "dataset.K=8", "trainer.max_steps=1000"], tmp_path
    )
    assert recipe_deviations(changed) == ["K=8 (recipe 16)", "max_steps=1000 (recipe 80000)"]
