"""The GPU part of ``make bench`` for ``make gpu-check``: bf16 sequences/s for a training step
and for evaluation, peak memory, achieved TFLOP/s against the card's peak, and the ratio
against OpenGait's network on the same card when ``OPENGAIT_ROOT`` names an OpenGait checkout.

``--cpu``: the dry run (tiny network, CPU, no autocast); its numbers mean nothing.
Each result is one line starting with ``bench:``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from model_conf import build_model

from gaitgl_lightning.losses import GaitGLLoss

PEAK_BF16 = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def _timed(fn: Callable[[], None], reps: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - start) / reps


def measure(name: str, dev: torch.device, batch: int, frames: int, reps: int) -> dict[str, float]:
    """Train-step and evaluation seq/s, peak memory (GiB) and train TFLOP/s of model ``name``."""
    net = build_model(name, 74).to(dev)
    loss = GaitGLLoss()
    x = torch.rand(batch, 1, frames, *net.input_size, device=dev)
    labels = torch.arange(batch, device=dev) // 4
    cuda = dev.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def train_step() -> None:
        net.train()
        net.zero_grad(set_to_none=True)
        with autocast:
            out = net(x)
            total = loss(out.embeddings, out.logits, labels).total
        total.backward()

    def eval_step() -> None:
        net.eval()
        with torch.no_grad(), autocast:
            net(x)

    with FlopCounterMode(display=False) as counter:
        train_step()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t_train = _timed(train_step, reps, sync)
    t_eval = _timed(eval_step, reps, sync)
    mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return {
        "train": batch / t_train,
        "eval": batch / t_eval,
        "mem": mem,
        "tflops": counter.get_total_flops() / t_train / 1e12,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true")
    args = parser.parse_args()
    dev = torch.device("cpu" if args.cpu else "cuda")
    model, batch, frames, reps = ("tiny", 4, 8, 1) if args.cpu else ("gaitgl", 64, 30, 10)
    card = "CPU" if args.cpu else torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_BF16.items() if k in card), None)
    ours = measure(model, dev, batch, frames, reps)
    share = f" = {100 * ours['tflops'] / peak:.1f}% of the card's {peak:.0f}" if peak else ""
    print(
        f"bench: {model} on {card}, b={batch} T={frames}: train {ours['train']:.1f} seq/s, "
        f"eval {ours['eval']:.1f} seq/s, peak {ours['mem']:.2f} GiB, "
        f"{ours['tflops']:.2f} TFLOP/s{share}",
        flush=True,
    )
    if os.environ.get("OPENGAIT_ROOT") and not args.cpu:
        # OpenGait's own network, imported from the checkout, on the same card.
        script = Path(__file__).resolve().parents[1] / "bench" / "bench_opengait.py"
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
        print(done.stdout[-4000:], done.stderr[-2000:])
        for line in done.stdout.splitlines():
            if "GPU" in line and ("goal" in line or "x " in line):
                print(f"bench: OpenGait side by side: {line.strip()}")
    else:
        print("bench: OpenGait ratio not measured (set OPENGAIT_ROOT=<OpenGait checkout>)")


if __name__ == "__main__":
    main()
