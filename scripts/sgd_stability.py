"""Stability check of the large-dataset recipe: SGD lr 0.1 on the REAL-width 4-stage network.

Trains the 4-stage net (64/128/256/512 channels, no normalisation in the backbone) with the
GREW recipe's optimiser and loss (SGD lr 0.1, momentum 0.9, weight decay 5e-4, label
smoothing 0.1) on the generated synthetic gait set, once without and once with the linear
warm-up, through the real command line, and prints the loss / gradient-norm / lr trajectory
and whether the loss stayed finite and fell. CPU default: reduced input (16x12, 9-frame clips),
P x K = 4 x 2, 30 steps. On a GPU, the recipe's size:

    python scripts/sgd_stability.py --device gpu --height 64 --input 64 44 --frames 30 \\
        --pk 32 4 --steps 500 --warmups 0 100
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run(args: argparse.Namespace, warmup: int, out: Path) -> list[dict[str, float]]:
    """One training run through ``python -m gaitgl_lightning``; its logged train rows."""
    h, w = args.input
    overrides = [
        f"model={args.model}",
        f"model.input_size=[{h},{w}]",
        f"dataset.size={args.size}",
        f"dataset.height={args.height}",
        f"dataset.frames={args.frames}",
        f"dataset.P={args.pk[0]}",
        f"dataset.K={args.pk[1]}",
        "dataset.num_workers=0",
        "loss=gaitgl_ls",
        "optimizer=sgd",
        f"optimizer.lr={args.lr}",
        "scheduler=warmup_multistep",
        f"scheduler.warmup_steps={warmup}",
        "scheduler.milestones=[1000000000]",
        "trainer=cpu" if args.device == "cpu" else "trainer=gpu",
        f"trainer.max_steps={args.steps}",
        "trainer.log_every_n_steps=1",
        f"eval_every={args.steps}",
        "eval_best=false",
        "baseline_gei=false",
        f"seed={args.seed}",
        f"hydra.run.dir={out}",
        *args.override,
    ]
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, "-m", "gaitgl_lightning", *overrides],
        env=env,
        capture_output=True,
        text=True,
    )
    rows = []
    for path in out.glob("csv/**/metrics.csv"):
        for r in csv.DictReader(path.open()):
            if r.get("train/loss"):
                rows.append({k: float(v) for k, v in r.items() if v not in ("", None)})
    if proc.returncode != 0:
        lines = (proc.stderr + proc.stdout).strip().splitlines()
        errors = [line for line in lines if line.startswith("error:")] or lines[-3:]
        print(f"  run with warmup={warmup} exited {proc.returncode}: " + " | ".join(errors))
    return sorted(rows, key=lambda r: r["step"])


def verdict(rows: list[dict[str, float]], steps: int) -> str:
    """finite / fell, as read from the logged loss."""
    losses = [r["train/loss"] for r in rows]
    if len(losses) < steps or not all(math.isfinite(v) for v in losses):
        return f"NOT finite or stopped early ({len(losses)} of {steps} steps logged)"
    k = max(1, len(losses) // 5)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    return f"finite; mean loss of first {k} steps {first:.3f} -> last {k} {last:.3f} " + (
        "(fell)" if last < first else "(did NOT fall)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gaitgl_large_sp1_stem", help="the presets' net")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--size", default="tiny", help="synthetic set size (tiny / default)")
    parser.add_argument("--height", type=int, default=16, help="synthetic frame height")
    parser.add_argument("--input", type=int, nargs=2, default=[16, 12], help="model input H W")
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--pk", type=int, nargs=2, default=[4, 2])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmups", type=int, nargs="+", default=[0, 10], help="one run each")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="keep the run dirs here")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="sgd_stability_"))
    results = {}
    for warmup in args.warmups:
        results[warmup] = run(args, warmup, root / f"warmup{warmup}")
    print(
        f"{args.model}, input {args.input[0]}x{args.input[1]}, {args.frames} frames, "
        f"P x K {args.pk[0]} x {args.pk[1]}, SGD lr {args.lr}, {args.device} "
        f"{' '.join(args.override)}; runs in {root}"
    )
    head = "step" + "".join(f" | loss w{w:<4} grad_norm     lr      " for w in results)
    print(head)
    for step in range(args.steps):
        cells = []
        for rows in results.values():
            r = next((x for x in rows if int(x["step"]) == step), None)
            cells.append(
                f" | {r['train/loss']:9.4f} {r.get('train/grad_norm', float('nan')):9.3g} "
                f"{r['train/lr']:9.3g}"
                if r
                else " |" + " " * 29
            )
        print(f"{step:4d}" + "".join(cells))
    for warmup, rows in results.items():
        print(f"warmup {warmup:>4}: {verdict(rows, args.steps)}")


if __name__ == "__main__":
    main()
