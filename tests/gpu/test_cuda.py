"""What only a CUDA device can check (``pytest -m gpu``; ``make gpu-check`` runs them): every
tensor the module and the metric create on the device, the bf16 autocast paths, padded-batch
evaluation against one-at-a-time on the GPU, and the failure sharing on NCCL. Skipped without
CUDA (NCCL sharing: without two GPUs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import TINY, TINY_STAGES, cli_env, compose_config, run_python

from gaitgl_lightning.models import GaitGL, MaskStrategy
from gaitgl_lightning.runtime.evaluation import Evaluation
from gaitgl_lightning.runtime.tasks import build_datamodule, build_module, build_trainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
SIZE = (16, 12)
STAGES = TINY_STAGES
GPU_RUN = [
    *TINY,
    "trainer=gpu",
    "trainer.max_steps=4",
    "eval_every=4",
    "eval_best=false",
    "baseline_gei=false",
    "logger=csv",
]


def test_every_tensor_of_module_and_metric_is_on_the_device(tmp_path: Path) -> None:
    cfg = compose_config(GPU_RUN, tmp_path)
    module, datamodule = build_module(cfg), build_datamodule(cfg)
    trainer = build_trainer(cfg)
    trainer.fit(module, datamodule=datamodule)
    assert all(p.device.type == "cuda" for p in module.parameters())
    assert all(b.device.type == "cuda" for b in module.buffers())
    evaluation = Evaluation.of(trainer)
    metric = evaluation.metric
    assert metric is not None and metric.device.type == "cuda"
    metric.update(torch.zeros(2, 8, 4, device="cuda"), torch.arange(2, device="cuda"))
    assert all(t.device.type == "cuda" for t in metric.embeddings)  # type: ignore[attr-defined]
    assert evaluation.evaluated_at == 4 and evaluation.last_result is not None


@pytest.mark.parametrize("mask", ["strip_v", "pixel", "part_h"])
def test_bf16_autocast_forward_and_backward_are_finite(mask: str) -> None:
    torch.manual_seed(0)
    net = GaitGL(5, STAGES, mask=MaskStrategy(mask, 0.3), input_size=SIZE).cuda().train()
    x = torch.rand(4, 1, 10, *SIZE, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = net(x)
    loss = out.logits.float().logsumexp(1).mean() + out.embeddings.float().pow(2).mean()
    loss.backward()
    assert torch.isfinite(out.embeddings).all() and torch.isfinite(out.logits).all()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_padded_batch_evaluation_equals_one_at_a_time_on_the_gpu() -> None:
    torch.manual_seed(0)
    net = GaitGL(5, STAGES, mask=MaskStrategy("strip_v", 0.3), input_size=SIZE).cuda()
    with torch.no_grad():
        net.train()(torch.rand(6, 1, 12, *SIZE, device="cuda") * 2)
    net.eval()
    lengths = [11, 7, 3, 5]
    x = torch.rand(len(lengths), 1, max(lengths), *SIZE, device="cuda")
    for i, n in enumerate(lengths):
        x[i, :, n:] = 0
    with torch.no_grad():
        batch = net(x, torch.tensor(lengths, device="cuda"))
        for i, n in enumerate(lengths):
            one = net(x[i : i + 1, :, :n])
            torch.testing.assert_close(batch.embeddings[i], one.embeddings[0], rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL sharing needs two GPUs")
def test_a_failure_on_one_nccl_rank_ends_both(tmp_path: Path) -> None:
    script = Path(__file__).parents[1] / "ddp_fault.py"
    env = cli_env(tmp_path, GAITGL_TEST_FAULT="train_forward_rank1")
    args = [
        *TINY,
        "eval_best=false",
        "baseline_gei=false",
        "trainer=ddp",
        "trainer.devices=2",
        "eval_every=4",
        "trainer.max_steps=8",
    ]
    proc = run_python([str(script), *args], tmp_path, env, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "rank 1 failed in training step 2: RuntimeError: injected out of memory" in output


def test_the_weight_average_lives_on_the_device_and_is_scored(tmp_path: Path) -> None:
    """``averaging=ema`` on CUDA: the average is kept on the network's device, updated there
    (the foreach lerp) and swapped in for the evaluation; the checkpoint holds it."""
    from gaitgl_lightning.runtime.averaging import CHECKPOINT_KEY, AveragedWeights

    cfg = compose_config([*GPU_RUN, "averaging=ema", "callbacks.averaging.start_step=2"], tmp_path)
    module, datamodule = build_module(cfg), build_datamodule(cfg)
    trainer = build_trainer(cfg)
    trainer.fit(module, datamodule=datamodule)
    (averaging,) = [c for c in trainer.callbacks if isinstance(c, AveragedWeights)]  # type: ignore[attr-defined]
    assert averaging.average is not None and averaging.updated_at == 4
    assert all(p.device.type == "cuda" for p in averaging.average.module.parameters())
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    stored = torch.load(tmp_path / "last.ckpt", weights_only=True)[CHECKPOINT_KEY]
    assert stored["n_averaged"] == 2
    assert Evaluation.of(trainer).last_result is not None
