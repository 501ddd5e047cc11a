"""Gait3D end to end on a tree built as Gait3D ships, with the official partition form: its
PROBE_SET entries (``<id>-<camid>_<videoid>-<seq>``) pick the probes of every evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from as_shipped import gait3d, tiny_run
from helpers import compose_config, run_cli

from gaitgl_lightning.errors import ConfigError
from gaitgl_lightning.runtime.tasks import evaluate_checkpoint, train


def _check_probe_set(result: dict, partition: Path, probes: int) -> None:
    assert result["options"]["probe_set"] == f"PROBE_SET of {partition} ({probes} entries)"
    assert result["counts"]["num_probes"] == probes
    assert result["counts"]["num_probe_set_entries_not_found"] == 0
    assert {"rank1", "rank5", "mAP", "mINP"} <= set(result["summary"])


def test_gait3d_preset_evaluates_the_official_probes(tmp_path: Path) -> None:
    tree = gait3d(tmp_path / "data", train=6, test=5)
    common = [
        "+experiment=gait3d",
        f"dataset.partition={tree.partition}",
        *tiny_run(tmp_path / "store", num_classes=6),
    ]
    metrics = train(compose_config([*common, f"dataset.source={tree.root}"], tmp_path))
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    _check_probe_set(saved["final"], tree.partition, 5)
    # 5 test ids x 4 sequences: the 5 named probes, the other 15 are the gallery.
    assert saved["final"]["counts"]["num_gallery"] == 15
    assert metrics["final"]["summary"] == saved["final"]["summary"]
    s = saved["final"]["summary"]
    print(f"gait3d: rank-1 {s['rank1']:.3f}, mAP {s['mAP']:.3f} over 5 PROBE_SET probes")
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    out = evaluate_checkpoint(
        compose_config([*common, "task=eval", f"ckpt_path={ckpt}"], tmp_path / "eval")
    )
    _check_probe_set(out["eval"], tree.partition, 5)
    assert out["eval"]["summary"] == saved["final"]["summary"]  # same weights, same probes
    other_model = compose_config(
        [*common, "task=eval", f"ckpt_path={ckpt}", "model.local=none"], tmp_path / "x"
    )
    # another model config: the checkpoint's own (stored) network is evaluated, as in extract
    again = evaluate_checkpoint(other_model)
    assert again["eval"]["summary"] == saved["final"]["summary"]


def test_a_second_probe_set_in_the_config_is_refused(tmp_path: Path) -> None:
    tree = gait3d(tmp_path / "data", train=3, test=2, seqs=2)
    cfg = compose_config(
        [
            "+experiment=gait3d",
            f"dataset.source={tree.root}",
            f"dataset.partition={tree.partition}",
            "+dataset.protocol.probe_set=[0004-camid10_videoid1-seq0]",
            *tiny_run(tmp_path / "store", num_classes=3),
        ],
        tmp_path,
    )
    with pytest.raises(ConfigError, match="two sources"):
        train(cfg)


@pytest.mark.slow
def test_gait3d_under_two_process_ddp(tmp_path: Path) -> None:
    tree = gait3d(tmp_path / "data", train=6, test=5)
    args = [
        "+experiment=gait3d",
        f"dataset.source={tree.root}",
        f"dataset.partition={tree.partition}",
        *tiny_run(tmp_path / "store", num_classes=6),
        "trainer=ddp_cpu",
        "hydra.run.dir=" + str(tmp_path / "run"),
    ]
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    _check_probe_set(saved["final"], tree.partition, 5)
