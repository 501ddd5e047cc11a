"""Every model / mask config instantiates; parameter counts and layer shapes match OpenGait."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gaitgl_lightning.models import GaitGL, MaskStrategy

CONF = Path(__file__).resolve().parents[2] / "conf"


def load_conf(group: str, name: str) -> DictConfig:
    """Load ``conf/<group>/<name>.yaml``; a file that extends another (``defaults:``) is
    composed by Hydra as a run would, with the group's own (uninterpolated) ``mask`` node."""
    cfg = OmegaConf.load(CONF / group / f"{name}.yaml")
    assert isinstance(cfg, DictConfig)
    if "defaults" in cfg:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            full = compose("train", overrides=[f"{group}={name}"])
        node = OmegaConf.to_container(full[group], resolve=True)
        cfg = OmegaConf.create(node)
        assert isinstance(cfg, DictConfig)
    return cfg


MODEL_NAMES = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
MASK_NAMES = ["none", "part_h", "part_v", "strip_h", "strip_v", "pixel", "part_fixed"]


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_config_instantiates(name: str) -> None:
    with torch.device("meta"):
        net = instantiate(load_conf("model", name), num_classes=7)
    assert isinstance(net, GaitGL)
    x = torch.empty(2, 1, 30, *net.input_size, device="meta")
    out = net.eval()(x)
    assert out.embeddings.shape[0] == 2 and out.embeddings.shape[2] == net.parts
    assert out.logits.shape == (2, 7, net.parts)


def test_required_configs_exist() -> None:
    conf_dir = CONF
    for name in [
        "gaitgl",
        "gaitgl_large",
        "gaitgl_small",
        "tiny",
        "opengait_gaitgl",
        "opengait_gaitgl_large",
    ]:
        assert (conf_dir / "model" / f"{name}.yaml").is_file(), name
    assert sorted(p.stem for p in (conf_dir / "mask").glob("*.yaml")) == sorted(MASK_NAMES)


@pytest.mark.parametrize("mask", MASK_NAMES)
def test_mask_group_overrides_model_mask(mask: str) -> None:
    cfg = load_conf("model", "tiny")
    cfg.mask = load_conf("mask", mask)
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(["mask.ratio=0.3"]))
    net = instantiate(cfg, num_classes=3)
    assert isinstance(net.mask_strategy, MaskStrategy)
    assert net.mask_strategy.strategy == mask
    assert net.mask_strategy.ratio == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("name", "classes", "total", "backbone"),
    [
        ("opengait_gaitgl", 74, 3_096_673, 2_490_209),
        ("opengait_gaitgl_large", 5_153, 95_620_449, 11_193_185),
    ],
)
def test_opengait_parameter_counts(name: str, classes: int, total: int, backbone: int) -> None:
    with torch.device("meta"):
        net = instantiate(load_conf("model", name), num_classes=classes)
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


def test_opengait_shallow_layer_table() -> None:
    with torch.device("meta"):
        net = instantiate(load_conf("model", "opengait_gaitgl"), num_classes=74)
    s = _trace(net, 30)
    assert s["stages.0.0"] == (1, 32, 30, 64, 44)  # conv3d
    assert s["stages.1.0"] == (1, 64, 10, 64, 44)  # GLConvA0 after LTA
    assert s["stages.2.0"] == (1, 128, 10, 32, 22)  # GLConvA1 after MaxPool0
    assert s["stages.2.1"] == (1, 128, 10, 64, 22)  # GLConvB2 doubles H
    assert s["embeddings"] == (1, 128, 64)
    assert s["logits"] == (1, 74, 64)


def test_opengait_deep_layer_table() -> None:
    with torch.device("meta"):
        net = instantiate(load_conf("model", "opengait_gaitgl_large"), num_classes=11)
    s = _trace(net, 30)
    assert s["stages.0.1"] == (1, 32, 30, 64, 44)
    assert s["stages.1.1"] == (1, 64, 10, 64, 44)
    assert s["stages.2.1"] == (1, 128, 10, 32, 22)
    assert s["stages.3.0"] == (1, 256, 10, 32, 22)
    assert s["stages.3.1"] == (1, 256, 10, 64, 22)
    assert s["embeddings"] == (1, 256, 64)
    assert s["logits"] == (1, 11, 64)


def test_journal_layout_shapes() -> None:
    with torch.device("meta"):
        net = instantiate(load_conf("model", "gaitgl"), num_classes=74)
    s = _trace(net, 30)
    assert s["stages.0.0"] == (1, 64, 30, 64, 44)
    assert s["stages.1.0"] == (1, 128, 10, 64, 44)
    assert s["stages.2.1"] == (1, 128, 10, 64, 22)
    assert s["embeddings"] == (1, 128, 64)


@pytest.mark.parametrize(
    ("name", "total", "shapes"),
    [
        # No pooling before stage 3: stages 1-3 at 64x44, stage 4 at 32x22 -> 64 parts.
        ("gaitgl_large", 242_086_273, [(30, 64, 44), (30, 64, 44), (10, 64, 44), (10, 32, 22)]),
        # Stage-1 SP: stages 2-3 at 32x22, stage 4 at 16x11 -> 32 parts.
        ("gaitgl_large_sp1", 149_270_913, [(30, 64, 44), (30, 32, 22), (10, 32, 22), (10, 16, 11)]),
    ],
)
def test_four_stage_readings(name: str, total: int, shapes: list[tuple[int, ...]]) -> None:
    """Both 4-stage readings compose (sp1 extends gaitgl_large) with the documented sizes:
    the 64/128/256/512-channel backbone is the same, the head follows the part count."""
    with torch.device("meta"):
        net = instantiate(load_conf("model", name), num_classes=5153)
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
