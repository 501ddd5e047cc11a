"""End to end through the real code paths: Hydra config -> Lightning Trainer -> metrics.json."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from helpers import TINY, compose_config

from gaitgl_lightning import __version__
from gaitgl_lightning.module import NonFiniteLossError
from gaitgl_lightning.runtime.tasks import train


def _metrics_rows(run: Path) -> list[dict[str, str]]:
    (path,) = run.glob("csv/**/metrics.csv")
    return list(csv.DictReader(path.open()))


def test_tiny_training_run(tmp_path: Path) -> None:
    metrics = train(compose_config(TINY, tmp_path))
    run = tmp_path / "run"
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["steps"] == 12 and saved["version"] == __version__
    summary = saved["final"]["summary"]
    assert 0.0 <= summary["rank1"] <= 1.0 and {"NM/rank1", "BG/rank1", "CL/rank1"} <= set(summary)
    assert saved["final"]["protocol"] and saved["final"]["distance"] == "euc_parts"
    assert "rank1" in saved["baseline_gei"]["summary"]
    assert metrics["final"]["summary"] == summary
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["gaitgl"]["version"] == __version__
    assert ckpt["gaitgl"]["config"]["model"]["mask"]["strategy"] == "strip_v"
    assert ckpt["global_step"] == 12
    columns = set(_metrics_rows(run)[0])
    for name in (
        "train/loss",
        "train/triplet",
        "train/ce",
        "train/triplet_nonzero",
        "train/mean_dist",
        "train/lr",
        "train/seq_per_s",
        "val/rank1",
        "val/NM/rank1",
    ):
        assert name in columns, name
    assert [c for c in columns if "lr" in c] == ["train/lr"]  # the learning rate, logged once


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=False)["state_dict"]


def test_resume_continues_the_same_run(tmp_path: Path) -> None:
    common = [
        *TINY,
        "trainer.deterministic=true",
        "eval_every=5",
        "eval_best=false",
        "baseline_gei=false",
    ]
    train(compose_config([*common, "trainer.max_steps=10"], tmp_path / "full"))
    train(compose_config([*common, "trainer.max_steps=5"], tmp_path / "half"))
    half_ckpt = tmp_path / "half" / "run" / "checkpoints" / "last.ckpt"
    train(
        compose_config(
            [*common, "trainer.max_steps=10", f"ckpt_path={half_ckpt}"], tmp_path / "resumed"
        )
    )
    full = _weights(tmp_path / "full" / "run" / "checkpoints" / "last.ckpt")
    resumed = _weights(tmp_path / "resumed" / "run" / "checkpoints" / "last.ckpt")
    assert full.keys() == resumed.keys()
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=1e-6, msg=key)

    def losses(run: Path) -> list[float]:
        return [float(r["train/loss"]) for r in _metrics_rows(run) if r.get("train/loss")]

    # Lightning labels the first logged step of a resumed fit one higher than a fresh fit does,
    # so compare the sequence of per-step losses: steps 6..10 of both runs.
    full_losses, resumed_losses = (
        losses(tmp_path / "full" / "run"),
        losses(tmp_path / "resumed" / "run"),
    )
    assert len(full_losses) == 10 and len(resumed_losses) == 5
    assert resumed_losses == pytest.approx(full_losses[5:], abs=1e-6)


@pytest.mark.slow  # a W&B run
def test_wandb_offline_writes_one_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    train(compose_config([*TINY, "logger=wandb", "trainer.max_steps=4", "eval_every=4"], tmp_path))
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
    import wandb

    assert wandb.run is None  # the job closed its run


def test_non_finite_loss_stops_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gaitgl_lightning.losses import GaitGLLoss

    real = GaitGLLoss.forward
    calls = {"n": 0}

    def poisoned(self, embeddings, logits, labels):  # type: ignore[no-untyped-def]
        out = real(self, embeddings, logits, labels)
        calls["n"] += 1
        if calls["n"] == 8:
            return type(out)(out.total * float("nan"), out.parts)
        return out

    monkeypatch.setattr(GaitGLLoss, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 7"):
        train(compose_config([*TINY, "eval_every=5"], tmp_path))
    kept = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert kept["global_step"] == 5
    assert all(
        torch.isfinite(v).all() for v in kept["state_dict"].values() if v.is_floating_point()
    )
