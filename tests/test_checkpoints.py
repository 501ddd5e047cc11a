"""Checkpoints: OpenGait's ``.pt`` wherever a checkpoint is accepted (task=eval with only the
test split on disk, task=extract, init_weights), and load errors that name the file and say
what it is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from as_shipped import casia_b, opengait_gaitgl_checkpoint, tiny_run
from helpers import assert_one_line_error, compose_config, run_cli
from hydra.utils import instantiate
from omegaconf import DictConfig

from gaitgl_lightning.errors import CheckpointError
from gaitgl_lightning.runtime.checkpoints import (
    load_initial_weights,
    read_checkpoint,
    read_checkpoint_any,
)
from gaitgl_lightning.runtime.tasks import evaluate_checkpoint, extract, train

OPENGAIT_EVAL = [
    "trainer=cpu",
    # The OpenGait presets train in 16-mixed, which Lightning turns into bf16 on a CPU: a bf16
    # conv3d on a CPU without bf16 instructions took this test from seconds to 209 s in CI.
    "trainer.precision=32-true",
    "logger=csv",
    "dataset.num_workers=0",
    "dataset.prepare_workers=1",
    "callbacks.progress=null",
    "trainer.enable_progress_bar=false",
]


def test_task_eval_takes_an_opengait_checkpoint_with_only_the_test_split(tmp_path: Path) -> None:
    # Only three test subjects (075-077) on disk: no training identity at all.
    raw = casia_b(tmp_path / "data", [75, 76, 77], views=("000", "090"))
    pt = opengait_gaitgl_checkpoint(tmp_path / "GaitGL-80000.pt", classes=74)
    common = [
        "+experiment=opengait_casia_b",
        *OPENGAIT_EVAL,
        f"dataset.source={raw}",
        f"dataset.store={tmp_path / 'store'}",
    ]
    out = evaluate_checkpoint(compose_config([*common, "task=eval", f"ckpt_path={pt}"], tmp_path))
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["format"] == "opengait" and saved["eval"]["protocol"] == "casia_b"
    assert 0.0 <= saved["eval"]["summary"]["rank1"] <= 1.0
    assert out["eval"]["counts"]["num_probes"] == 3 * 4 * 2  # NM#05-06, BG#01, CL#01 x 2 views
    # The wrong architecture: one line naming the file and the model config it needs.
    proc = run_cli(
        [*common, "task=eval", f"ckpt_path={pt}", "model=opengait_gaitgl_large"], tmp_path / "w"
    )
    line = assert_one_line_error(proc, str(pt), "use model=opengait_gaitgl")
    assert "use model=opengait_gaitgl " in line  # not opengait_gaitgl_large

    # task=extract embeds a folder with the same checkpoint.
    probe = raw / "075" / "nm-05"
    cfg = compose_config(
        [*common, "task=extract", f"ckpt_path={pt}", f"extract.input={probe}"], tmp_path / "x"
    )
    result = extract(cfg)
    assert np.load(result["file"])["embeddings"].shape[:2] == (2, 128)


def _fine_tune_config(tmp_path: Path, pt: Path) -> DictConfig:
    raw = casia_b(tmp_path / "data", [1, 2, 3, 75, 76])
    return compose_config(
        [
            "+experiment=opengait_casia_b",
            *tiny_run(tmp_path / "store", num_classes=3, height=64, steps=2),
            "model=opengait_gaitgl",
            "model.input_size=[64,44]",
            "dataset.partition=casia_b",
            f"dataset.source={raw}",
            "trainer.precision=32",
            f"init_weights={pt}",
        ],
        tmp_path,
    )


def test_init_weights_from_an_opengait_checkpoint(tmp_path: Path) -> None:
    pt = opengait_gaitgl_checkpoint(tmp_path / "GaitGL-80000.pt", classes=74)
    cfg = _fine_tune_config(tmp_path, pt)
    net = instantiate(cfg.model, num_classes=3)
    left = load_initial_weights(net, pt)
    assert left == ["head.classifier.fc_bin"]  # 74 classes there, 3 here
    state = torch.load(pt, weights_only=True)["model"]
    assert torch.equal(net.state_dict()["head.fc.fc_bin"], state["module.Head0.fc_bin"])


@pytest.mark.slow
def test_fine_tuning_run_from_an_opengait_checkpoint(tmp_path: Path) -> None:
    pt = opengait_gaitgl_checkpoint(tmp_path / "GaitGL-80000.pt", classes=74)
    metrics = train(_fine_tune_config(tmp_path, pt))
    assert metrics["steps"] == 2 and "rank1" in metrics["final"]["summary"]


def test_checkpoint_errors_name_the_file_and_what_it_is(tmp_path: Path) -> None:
    good = tmp_path / "good.ckpt"
    net = torch.nn.Linear(64, 64)
    torch.save({"state_dict": net.state_dict(), "global_step": 2, "epoch": 0}, good)
    assert read_checkpoint_any(good)[0] == "lightning"

    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    foreign = tmp_path / "notes.ckpt"
    foreign.write_text("not a checkpoint at all")
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hook": Path("x")}, evil)  # an object, not a tensor
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    opengait = opengait_gaitgl_checkpoint(tmp_path / "GaitGL-80000.pt", classes=74)
    cases = {
        cut: "truncated checkpoint",
        foreign: "not a torch checkpoint",
        evil: "holds pathlib.*weights-only loader refuses",
        other: "not a checkpoint of this package or of OpenGait",
        empty: "empty file",
        opengait: "an OpenGait checkpoint.*model=opengait_gaitgl",
        tmp_path / "missing.ckpt": "no checkpoint file here",
    }
    for path, what in cases.items():
        with pytest.raises(CheckpointError, match=what) as err:
            read_checkpoint(path)
        assert str(path) in str(err.value)
    for fraction in (0.1, 0.5, 0.97):  # cut anywhere: still named as truncated
        cut.write_bytes(good.read_bytes()[: int(good.stat().st_size * fraction)])
        with pytest.raises(CheckpointError, match="truncated checkpoint"):
            read_checkpoint(cut)
    # Resuming from an OpenGait file is refused with the same message, before Lightning reads it.
    resume = compose_config([*_tiny_synthetic(), f"ckpt_path={opengait}"], tmp_path / "r")
    with pytest.raises(CheckpointError, match="init_weights"):
        train(resume)


def _tiny_synthetic() -> list[str]:
    from helpers import TINY

    return list(TINY)


def test_task_eval_keeps_the_composed_test_time_mask_settings() -> None:
    """task=eval takes the trained network from the checkpoint, but the test-time local branch
    (mask.eval_mode / eval_pairs) is the one asked for now: the eval_mode ablation evaluates one
    checkpoint with `none` and with `mean` (before this, both ran the stored `none`)."""
    from omegaconf import OmegaConf

    from gaitgl_lightning.runtime.tasks import _use_stored_model

    trained = {"channels": [4, 8, 8], "mask": {"strategy": "strip_v", "eval_mode": "none"}}
    state = {"gaitgl": {"config": {"model": trained}}}
    cfg = OmegaConf.create(
        {"model": {"channels": [4, 8, 8], "mask": {"strategy": "strip_v", "eval_mode": "mean"}}}
    )
    _use_stored_model(cfg, "x.ckpt", state)
    assert cfg.model.mask.eval_mode == "mean"
    other = OmegaConf.create(
        {"model": {"channels": [2, 2, 2], "mask": {"strategy": "strip_v", "eval_mode": "mean"}}}
    )
    _use_stored_model(other, "x.ckpt", state)  # another network: the stored one is used
    assert list(other.model.channels) == [4, 8, 8] and other.model.mask.eval_mode == "mean"
    assert trained["mask"]["eval_mode"] == "none"  # the checkpoint's own record is untouched
