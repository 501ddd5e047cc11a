"""Speed of the GaitGL package network against a straightforward implementation of the same layers.

The straightforward version (``naive_forward`` below) uses the package network's own weights but
builds everything the obvious way: the complementary mask pair as two separate conv calls, masks
built on the host with Python loops and copied over, the Eq. 5 partition as a Python loop over
parts, the per-part FCs as a permuted matmul, and eval one sequence at a time. Both train steps
use the same loss, so the ratio measures the network.

Run: ``python bench/bench_model.py`` (a few minutes on 2 CPU cores). On a CUDA machine it also
prints seq/s, peak memory and achieved TFLOP/s of a bf16 train step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from model_conf import build_model
from torch.utils.flop_counter import FlopCounterMode

from gaitgl_lightning.data.samplers import EvalShardSampler
from gaitgl_lightning.losses import GaitGLLoss
from gaitgl_lightning.models import GLCL, GaitGL, GeM
from gaitgl_lightning.models.layers import ConvBlock

SLOPE = 0.01


# --------------------------------------------------------------------------- the baseline
def host_masks(strategy: str, ratio: float, n: int, h: int, w: int, rng: np.random.Generator):
    """Masks built per sample on the host with Python loops, then copied to a tensor."""
    out = np.zeros((n, 1, 1, h, w), dtype=np.float32)
    for i in range(n):
        if strategy == "strip_v":
            for c in rng.choice(w, int(ratio * w), replace=False):
                out[i, 0, 0, :, c] = 1.0
        elif strategy == "strip_h":
            for r in rng.choice(h, int(ratio * h), replace=False):
                out[i, 0, 0, r, :] = 1.0
        elif strategy == "part_h":
            k = int(ratio * h)
            r = rng.integers(0, h - k + 1)
            out[i, 0, 0, r : r + k, :] = 1.0
        elif strategy == "part_v":
            k = int(ratio * w)
            c = rng.integers(0, w - k + 1)
            out[i, 0, 0, :, c : c + k] = 1.0
        else:
            for p in rng.choice(h * w, int(ratio * h * w), replace=False):
                out[i, 0, 0, p // w, p % w] = 1.0
    return torch.from_numpy(out)


def naive_glcl(layer: GLCL, x: torch.Tensor, net: GaitGL, rng: np.random.Generator):
    lrelu = F.leaky_relu
    g = lrelu(F.conv3d(x, layer.global_conv3d.conv3d.weight, padding=1), SLOPE)
    wl = layer.local_conv3d.conv3d.weight
    s = net.mask_strategy
    if s.strategy == "part_fixed":
        size = x.shape[3] // (layer.parts or s.parts)
        loc = torch.cat([F.conv3d(c, wl, padding=1) for c in x.split(size, 3)], 3)
        loc = lrelu(loc, SLOPE)
    elif net.training and s.random:
        mp = host_masks(s.strategy, s.ratio, x.shape[0], x.shape[3], x.shape[4], rng).to(x.device)
        loc = lrelu(F.conv3d(x * mp, wl, padding=1), SLOPE) + lrelu(
            F.conv3d(x * (1 - mp), wl, padding=1), SLOPE
        )
    else:
        loc = lrelu(F.conv3d(x, wl, padding=1), SLOPE)
    return torch.cat([g, loc], 3) if layer.out_type == "B" else g + loc


def naive_forward(net: GaitGL, x: torch.Tensor, rng: np.random.Generator):
    """Same function as ``net(x)`` for fixed-length clips (masks differ: drawn on the host)."""
    for si, (spec, block) in enumerate(zip(net.specs, net.stages, strict=True)):
        for layer in block:
            if isinstance(layer, ConvBlock):
                x = F.leaky_relu(F.conv3d(x, layer.conv.conv3d.weight, padding=1), SLOPE)
            else:
                x = naive_glcl(layer, x, net, rng)
        if spec.pool == "lta":
            w = net.ltas[str(si)].conv.conv3d.weight
            pad = (0, w.shape[3] // 2, w.shape[4] // 2)  # (3,3,3) LTA keeps H x W
            x = F.leaky_relu(F.conv3d(x, w, stride=(3, 1, 1), padding=pad), SLOPE)
        elif spec.pool == "sp":
            x = F.max_pool3d(x, (1, 2, 2))
    x = x.max(2).values
    assert isinstance(net.pool, GeM)
    p = net.pool.p
    x = x.clamp(min=1e-6).pow(p).mean(-1).pow(1 / p)
    head = net.head

    def fc(z, w):  # the usual permute + matmul
        return z.permute(2, 0, 1).contiguous().matmul(w).permute(1, 2, 0).contiguous()

    emb = head.bn(fc(x, head.fc.fc_bin))
    return emb, fc(emb, head.classifier.fc_bin)


# --------------------------------------------------------------------------- timing
def timed(fn: Callable[[], object], reps: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``reps`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def compare(a: Callable[[], object], b: Callable[[], object], reps: int) -> tuple[float, float]:
    """Median times of ``a`` and ``b``, run alternately (a, b, a, b, ...) after one warm-up each,
    so that load from other processes on a shared machine hits both alike."""
    a()
    b()
    ta, tb = [], []
    for _ in range(reps):
        for fn, out in ((a, ta), (b, tb)):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def bench_cpu(
    name: str, batch: int, frames: int, eval_seqs: int, bucket: int, reps: int
) -> list[str]:
    torch.manual_seed(0)
    net: GaitGL = build_model(name, 74)  # type: ignore[assignment]
    loss = GaitGLLoss()
    x = torch.rand(batch, 1, frames, *net.input_size)
    labels = torch.arange(batch) // 2
    rng = np.random.default_rng(0)

    def pkg_step() -> None:
        net.zero_grad(set_to_none=True)
        out = net(x)
        loss(out.embeddings, out.logits, labels).total.backward()

    def naive_step() -> None:
        net.zero_grad(set_to_none=True)
        emb, logits = naive_forward(net, x, rng)
        loss(emb, logits, labels).total.backward()

    net.eval()  # sanity: both implementations compute the same function
    with torch.no_grad():
        ref = naive_forward(net, x[:1, :, :9], rng)[0]
        torch.testing.assert_close(net(x[:1, :, :9]).embeddings, ref, rtol=1e-3, atol=1e-4)
    net.train()
    t_pkg, t_naive = compare(pkg_step, naive_step, reps)

    # eval: variable lengths, padded batch (package) vs one sequence at a time (baseline)
    net.eval()
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(frames // 2, frames + 1, (eval_seqs,), generator=g)
    xe = torch.rand(eval_seqs, 1, int(lengths.max()), *net.input_size, generator=g)
    for i, n in enumerate(lengths.tolist()):
        xe[i, :, n:] = 0
    # Length-grouped batches, as the eval loader makes them (padding <= 10% of frames).
    buckets = [torch.tensor(b) for b in EvalShardSampler(lengths.tolist(), bucket)]

    def pkg_eval() -> None:
        with torch.inference_mode():
            for idx in buckets:
                top = int(lengths[idx].max())
                net(xe[idx, :, :top], lengths[idx])

    def naive_eval() -> None:
        with torch.no_grad():
            for i, n in enumerate(lengths.tolist()):
                naive_forward(net, xe[i : i + 1, :, :n], rng)

    e_pkg, e_naive = compare(pkg_eval, naive_eval, reps)
    return [
        f"{name:<16} train step b={batch} T={frames}   package {t_pkg:7.2f} s   "
        f"straightforward {t_naive:7.2f} s   speed-up {t_naive / t_pkg:5.2f}x  (goal >= 1x)",
        f"{name:<16} eval {eval_seqs} seqs T<={frames} b={bucket} batched {e_pkg:7.2f} s   "
        f"one-at-a-time   {e_naive:7.2f} s   speed-up {e_naive / e_pkg:5.2f}x  (goal >= 1x)",
    ]


def bench_gpu(name: str, batch: int, frames: int, reps: int) -> str:
    dev = torch.device("cuda")
    net: GaitGL = build_model(name, 74).to(dev)  # type: ignore[assignment]
    loss = GaitGLLoss()
    x = torch.rand(batch, 1, frames, *net.input_size, device=dev)
    labels = torch.arange(batch, device=dev) // 8
    net.train()

    def step() -> None:
        net.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = net(x)
            total = loss(out.embeddings, out.logits, labels).total
        total.backward()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()

    def synced() -> None:
        step()
        torch.cuda.synchronize()

    t = timed(synced, reps, warmup=2)
    mem = torch.cuda.max_memory_allocated() / 2**30
    return (
        f"{name:<16} GPU bf16 train b={batch} T={frames}: {batch / t:8.1f} seq/s   "
        f"peak {mem:5.2f} GiB   {flops / t / 1e12:6.1f} TFLOP/s"
    )


def main() -> None:
    """Print the comparison table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["gaitgl", "opengait_gaitgl"])
    ap.add_argument("--batch", type=int, default=4, help="train batch (P x K, K = 2)")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--eval-seqs", type=int, default=8)
    ap.add_argument("--eval-bucket", type=int, default=4, help="eval batch (length-bucketed)")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"GaitGL model benchmark (CPU, {args.threads} threads, input 64x44, torch {torch.__version__})"
    )
    for name in args.models:
        for line in bench_cpu(
            name, args.batch, args.frames, args.eval_seqs, args.eval_bucket, args.reps
        ):
            print(line, flush=True)
    if torch.cuda.is_available():
        for name in args.models:
            print(bench_gpu(name, 64, args.frames, reps=5), flush=True)
    else:
        print("(no CUDA device: GPU seq/s, peak memory and TFLOP/s not measured)")


if __name__ == "__main__":
    main()
