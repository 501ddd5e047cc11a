"""Every config composes through Hydra (config extension included) and instantiates: model and
mask options, experiment presets, the ablations and each of their arms, the debug preset; model
layouts match OpenGait; the data seed and the training seed are apart."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import compose_config, model_config
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import gaitgl_lightning
from gaitgl_lightning import config_dir, group_config
from gaitgl_lightning.models import MASK_PATTERNS, GaitGL, MaskStrategy

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
ABLATIONS = sorted(p.stem for p in (config_dir() / "ablation").glob("*.yaml"))
MODEL_NAMES = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))


def test_the_ablations_exist() -> None:
    paper = {"table5", "fig4", "eval_mode", "table7", "table6"}
    assert paper | {"budget_long", "budget_short", "averaging_long"} == set(ABLATIONS)


def test_the_averaging_study_is_the_long_budget_with_an_average_from_the_lr_step() -> None:
    """averaging_long pairs with budget_long job for job: the same training in every setting,
    the average only added (from the x0.1 step on) and scored."""
    long = _compose_hydra(["+ablation=budget_long", "arm/table5=strip_v"])
    cfg = _compose_hydra(["+ablation=averaging_long", "arm/table5=strip_v"])
    averaging = cfg.callbacks.averaging
    assert averaging.start_step == cfg.scheduler.milestones[0] == 720
    assert (averaging.decay, averaging.evaluate, cfg.eval_weights) == (0.99, "averaged", "averaged")
    assert long.callbacks.get("averaging") is None and long.eval_weights == "trained"
    for key in ("dataset", "optimizer", "scheduler", "model", "loss", "mask", "trainer", "seed"):
        assert cfg[key] == long[key], key
    assert (cfg.threads, cfg.eval_every, cfg.checkpoint_every) == (2, 900, 300)


@pytest.mark.parametrize(("study", "steps"), [("budget_long", 900), ("budget_short", 600)])
def test_the_budget_study_changes_only_the_length_and_the_threads(study: str, steps: int) -> None:
    """The study's budgets are the default one but for the steps (the x0.1 step after 80 % of
    them, as at 600 of 750) and one job on both cores: any other difference would confound
    the noise they are compared on."""
    base = _compose_hydra(["+ablation=table5", "arm/table5=strip_v"])
    cfg = _compose_hydra([f"+ablation={study}", "arm/table5=strip_v"])
    assert cfg.trainer.max_steps == cfg.eval_every == steps
    assert list(cfg.scheduler.milestones) == [steps * 4 // 5]
    assert list(base.scheduler.milestones) == [base.trainer.max_steps * 4 // 5]
    assert (cfg.threads, base.threads) == (2, 1)
    for key in ("dataset", "optimizer", "model", "loss", "mask", "seed"):
        assert cfg[key] == base[key], key


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
    assert loss.triplet_weight + loss.ce_weight > 0


def test_grew_sgd_is_the_papers_recipe(tmp_path: Path) -> None:
    cfg = compose_config(["+experiment=grew_sgd"], tmp_path)
    assert (cfg.dataset.P, cfg.dataset.K) == (32, 4)
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.lr == 0.1
    assert cfg.trainer.max_steps == 200_000
    assert cfg.mask.strategy == "strip_v"
    assert "WandbLogger" in cfg.logger.wandb._target_


def _compose_hydra(overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def _arms(ablation: str) -> list[list[str]]:
    """One override list per job of the ablation's sweep (the first training seed)."""
    params = _compose_hydra([f"+ablation={ablation}"]).hydra.sweeper.params
    axes = [[f"{k}={v}" for v in str(vs).split(",")] for k, vs in params.items() if k != "seed"]
    return [[f"+ablation={ablation}", *combo] for combo in itertools.product(*axes)]


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_ablation_is_a_multirun_over_arm_x_seed_into_fixed_dirs(ablation: str) -> None:
    cfg = _compose_hydra([f"+ablation={ablation}"])
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    params = cfg.hydra.sweeper.params
    assert params.seed == "0,1,2,3,4" and len(params) >= 2
    for key in params:  # a config group or an existing key: a typo would sweep nothing
        assert key in cfg.hydra.runtime.choices or OmegaConf.select(cfg, key) is not None, key
    assert cfg.hydra.sweep.dir.endswith(f"/outputs/ablation/{ablation}")
    assert cfg.hydra.sweep.subdir == f"{cfg.ablation.arm}/seed0"
    assert (cfg.baseline_gei, cfg.eval_best, cfg.resume_sweep) == (False, False, True)
    assert cfg.dataset.seed == 0 and cfg.dataset.sampling_seed == cfg.seed
    assert cfg.logger.wandb.group == f"{ablation}/{cfg.ablation.arm}"
    arms = [_compose_hydra(o).ablation.arm for o in _arms(ablation)]
    assert len(set(arms)) == len(arms) >= 2, arms  # every job of one seed has its own dir
    assert cfg.ablation.reference in arms


@pytest.mark.parametrize(
    "overrides", [o for a in ABLATIONS for o in _arms(a)], ids=lambda o: " ".join(o[1:])
)
def test_every_ablation_arm_instantiates(overrides: list[str]) -> None:
    cfg = _compose_hydra(overrides)
    with torch.device("meta"):
        net = instantiate(cfg.model, num_classes=int(cfg.dataset.num_classes))
    assert net.mask_strategy.strategy == cfg.mask.strategy
    assert cfg.task in ("train", "eval")


def test_data_seed_and_training_seed_are_apart(tmp_path: Path) -> None:
    default = compose_config([], tmp_path)
    other = compose_config(["seed=3"], tmp_path)
    # The default run (seed 0) reads the store it always read: data seed 0.
    assert default.dataset.store.endswith("/data/synthetic-default-h32-seed0")
    assert other.dataset.store == default.dataset.store and other.dataset.seed == 0
    assert (default.dataset.sampling_seed, other.dataset.sampling_seed) == (0, 3)
    data = compose_config(["dataset.seed=2"], tmp_path)
    assert data.dataset.store.endswith("-seed2") and data.dataset.sampling_seed == 0
    for name in ("casia_b", "oumvlp", "grew", "gait3d"):
        cfg = compose_config([f"dataset={name}", "seed=5"], tmp_path)
        assert cfg.dataset.sampling_seed == 5


def test_deviation_from_the_recipe_is_reported(tmp_path: Path) -> None:
    from gaitgl_lightning.runtime.tasks import recipe_deviations

    assert recipe_deviations(compose_config(["+experiment=casia_b"], tmp_path)) == []
    changed = compose_config(
        ["+experiment=casia_b", "dataset.K=8", "trainer.max_steps=1000"], tmp_path
    )
    assert recipe_deviations(changed) == ["K=8 (recipe 16)", "max_steps=1000 (recipe 80000)"]


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_config_instantiates(name: str) -> None:
    with torch.device("meta"):
        net = instantiate(model_config(name), num_classes=7)
    assert isinstance(net, GaitGL)
    x = torch.empty(2, 1, 30, *net.input_size, device="meta")
    out = net.eval()(x)
    assert out.embeddings.shape[0] == 2 and out.embeddings.shape[2] == net.parts
    assert out.logits.shape == (2, 7, net.parts)


def _leaves(node: dict[str, Any], prefix: str = "") -> Iterator[tuple[list[str], Any]]:
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:  # a list is one value: Hydra replaces lists, it does not merge them
            yield f"{prefix}{key}".split("."), value


_MISSING = object()


def repeated_values(group: str, name: str) -> list[str]:
    """The keys of ``conf/<group>/<name>.yaml`` that restate their parent's value (compared
    as written, interpolations unresolved)."""
    node = OmegaConf.load(config_dir() / group / f"{name}.yaml")
    assert isinstance(node, DictConfig)
    entries = node.pop("defaults", None) or []
    parents = [e for e in entries if isinstance(e, str) and e != "_self_"]
    if not parents:
        return []
    merged: Any = OmegaConf.create()
    for entry in parents:
        merged = OmegaConf.merge(merged, group_config(group, entry))
    parent = OmegaConf.to_container(merged, resolve=False)
    own = OmegaConf.to_container(node, resolve=False)
    assert isinstance(parent, dict) and isinstance(own, dict)
    repeated = []
    for path, value in _leaves(own):
        theirs: Any = parent
        for key in path:
            theirs = theirs.get(key, _MISSING) if isinstance(theirs, dict) else _MISSING
        if theirs is not _MISSING and theirs == value:
            repeated.append(f"{'.'.join(path)}: {value!r}")
    return repeated


#: Every config that extends another option of its group (`defaults: [<parent>, _self_]`).
EXTENDING = sorted(
    (p.parent.name, p.stem)
    for p in config_dir().glob("*/*.yaml")
    if any(
        isinstance(e, str) and (p.parent / f"{e}.yaml").is_file()
        for e in (OmegaConf.load(p).get("defaults") or [])
    )
)


@pytest.mark.parametrize(("group", "name"), EXTENDING, ids=["/".join(e) for e in EXTENDING])
def test_every_extending_config_states_only_its_difference(group: str, name: str) -> None:
    assert repeated_values(group, name) == [], f"{group}/{name} restates its parent's values"


def test_the_difference_check_catches_a_restated_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The check must be able to fail: a copy of tiny.yaml that restates one value of gaitgl.yaml.
    model = tmp_path / "model"
    model.mkdir()
    for name in ("gaitgl", "tiny"):
        (model / f"{name}.yaml").write_text((config_dir() / "model" / f"{name}.yaml").read_text())
    with (model / "tiny.yaml").open("a") as f:
        f.write("pooling: gem\nlocal: none\n")
    monkeypatch.setattr(sys.modules[__name__], "config_dir", lambda: tmp_path)
    monkeypatch.setattr(gaitgl_lightning, "config_dir", lambda: tmp_path)
    assert repeated_values("model", "tiny") == ["pooling: 'gem'"]


def test_every_model_file_but_the_base_extends_another() -> None:
    for name in MODEL_NAMES:
        text = (config_dir() / "model" / f"{name}.yaml").read_text()
        assert (name == "gaitgl") != ("\ndefaults:" in text), name
        assert "\nmask:" not in text, name  # train.yaml sets model.mask from the mask group


def test_mask_configs_are_the_registry() -> None:
    assert sorted(p.stem for p in (config_dir() / "mask").glob("*.yaml")) == sorted(MASK_PATTERNS)


@pytest.mark.parametrize("mask", sorted(MASK_PATTERNS))
def test_mask_group_overrides_model_mask(mask: str) -> None:
    net = instantiate(model_config("tiny", f"mask={mask}", "mask.ratio=0.3"), num_classes=3)
    assert isinstance(net.mask_strategy, MaskStrategy)
    assert net.mask_strategy.strategy == mask
    assert net.mask_strategy.ratio == pytest.approx(0.3)


def test_debug_preset_is_a_tiny_run(tmp_path: Path) -> None:
    cfg = compose_config(["debug=tiny", "trainer.max_steps=5"], tmp_path)
    assert cfg.dataset.size == "tiny" and list(cfg.model.input_size) == [16, 12]
    assert cfg.trainer.max_steps == 5 and cfg.eval_every == 6  # later overrides still apply
    assert cfg.callbacks.progress is None


@pytest.mark.parametrize(
    ("name", "classes", "total", "backbone"),
    [
        ("opengait_gaitgl", 74, 3_096_673, 2_490_209),
        ("opengait_gaitgl_large", 5_153, 95_620_449, 11_193_185),
    ],
)
def test_opengait_parameter_counts(name: str, classes: int, total: int, backbone: int) -> None:
    with torch.device("meta"):
        net = instantiate(model_config(name), num_classes=classes)
    assert _count(net) == total
    head_extra = _count(net.head.classifier) + _count(net.head.bn)
    assert _count(net) - head_extra == backbone


def _trace(net: GaitGL, frames: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for n, m in net.named_modules():
        if n.count(".") == 2 and n.startswith("stages."):
            m.register_forward_hook(lambda _m, _i, o, n=n: shapes.__setitem__(n, tuple(o.shape)))
    x = torch.empty(1, 1, frames, 64, 44, device="meta")
    out = net.eval()(x)
    shapes["embeddings"] = tuple(out.embeddings.shape)
    shapes["logits"] = tuple(out.logits.shape)
    return shapes


@pytest.mark.parametrize(
    ("name", "classes", "layers"),
    [
        (  # OpenGait's shallow net: conv3d, GLConvA0 after LTA, GLConvA1 after MaxPool0,
            # GLConvB2 doubles H
            "opengait_gaitgl",
            74,
            {
                "stages.0.0": (1, 32, 30, 64, 44),
                "stages.1.0": (1, 64, 10, 64, 44),
                "stages.2.0": (1, 128, 10, 32, 22),
                "stages.2.1": (1, 128, 10, 64, 22),
                "embeddings": (1, 128, 64),
                "logits": (1, 74, 64),
            },
        ),
        (
            "opengait_gaitgl_large",
            11,
            {
                "stages.0.1": (1, 32, 30, 64, 44),
                "stages.1.1": (1, 64, 10, 64, 44),
                "stages.2.1": (1, 128, 10, 32, 22),
                "stages.3.0": (1, 256, 10, 32, 22),
                "stages.3.1": (1, 256, 10, 64, 22),
                "embeddings": (1, 256, 64),
                "logits": (1, 11, 64),
            },
        ),
        (
            "gaitgl",
            74,
            {
                "stages.0.0": (1, 64, 30, 64, 44),
                "stages.1.0": (1, 128, 10, 64, 44),
                "stages.2.1": (1, 128, 10, 64, 22),
                "embeddings": (1, 128, 64),
            },
        ),
    ],
)
def test_layer_table(name: str, classes: int, layers: dict[str, tuple[int, ...]]) -> None:
    """Each layer's output shape: OpenGait's two nets as OpenGait builds them, and the journal
    CASIA-B layout."""
    with torch.device("meta"):
        net = instantiate(model_config(name), num_classes=classes)
    shapes = _trace(net, 30)
    assert {k: shapes[k] for k in layers} == layers


@pytest.mark.parametrize(
    ("name", "total", "shapes"),
    [
        # No pooling before stage 3: stages 1-3 at 64x44, stage 4 at 32x22 -> 64 parts.
        ("gaitgl_large", 242_479_489, [(30, 64, 44), (30, 64, 44), (10, 64, 44), (10, 32, 22)]),
        # Stage-1 SP: stages 2-3 at 32x22, stage 4 at 16x11 -> 32 parts.
        ("gaitgl_large_sp1", 149_664_129, [(30, 64, 44), (30, 32, 22), (10, 32, 22), (10, 16, 11)]),
    ],
)
def test_four_stage_readings(name: str, total: int, shapes: list[tuple[int, ...]]) -> None:
    """Both 4-stage readings compose (sp1 extends gaitgl_large) with the documented sizes:
    the 64/128/256/512-channel backbone is the same, the head follows the part count."""
    with torch.device("meta"):
        net = instantiate(model_config(name), num_classes=5153)
    assert _count(net) == total
    s = _trace(net, 30)
    got = [s["stages.0.1"], s["stages.1.1"], s["stages.2.1"], s["stages.3.0"]]
    assert [g[1] for g in got] == [64, 128, 256, 512]
    assert [g[2:] for g in got] == shapes  # (T, H, W) out of each stage, before its pooling
    assert s["embeddings"] == (1, 512, 2 * shapes[3][1])


def test_bad_stage_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"stages\[1\].*pool"):
        GaitGL(3, [{"channels": 4}, {"channels": 4, "pool": "avg"}], input_size=(16, 12))
    with pytest.raises(ValueError, match=r"stages\[0\]: unknown keys \['chanels'\]"):
        GaitGL(3, [{"chanels": 4}], input_size=(16, 12))
    net = GaitGL(3, [{"channels": 4}], input_size=(16, 12))
    with pytest.raises(ValueError, match="input_size"):
        net(torch.zeros(1, 1, 3, 8, 8))
    with pytest.raises(ValueError, match="float x with 1 channel"):
        net(torch.zeros(1, 1, 3, 16, 12, dtype=torch.uint8))
    with pytest.raises(ValueError, match="lengths must lie"):
        net(torch.zeros(2, 1, 3, 16, 12), torch.tensor([3, 4]))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_group_config_extends_as_hydra_composes(name: str) -> None:
    # What code outside a composed run reads (checkpoint.fitting_opengait_configs) is what a
    # run composes, the mask node aside (a run sets it from the mask group).
    composed = OmegaConf.to_container(model_config(name), resolve=True)
    assert isinstance(composed, dict)
    composed.pop("mask")
    assert OmegaConf.to_container(group_config("model", name)) == composed
