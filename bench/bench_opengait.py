"""Side by side with OpenGait itself: the same weights, the same inputs, alternated timings.

Set ``OPENGAIT_ROOT`` to an OpenGait checkout (see ``peer_opengait.py``; nothing of it is
copied here). The benchmark builds OpenGait's CASIA-B GaitGL with OpenGait's code, writes its
weights as an OpenGait checkpoint, loads that into the package's ``opengait_gaitgl`` with
``load_opengait_checkpoint``, checks that the embeddings agree, then times, alternating the two
so that load from other processes hits both alike:

1. a train step: 8 sequences (P2 x K4) x 30 frames, forward + triplet + CE + backward
   (OpenGait: its TripletLoss + CrossEntropyLoss; package: ``GaitGLLoss``), goal >= 1.5x;
2. evaluation of 12 sequences of 30-120 frames: OpenGait one sequence per call (its evaluator
   refuses more), the package one at a time and in length-grouped batches, goal >= 3x.

Without ``OPENGAIT_ROOT`` it says so and stops (the other benchmarks measure the package against
its own straightforward versions). On a CUDA machine it also runs both in bf16 on the GPU:
sequences/s for training and evaluation, peak memory, achieved TFLOP/s against the card's peak.

    OPENGAIT_ROOT=~/src/OpenGait python bench/bench_opengait.py [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from model_conf import build_model
from peer_opengait import (
    ENV,
    PeerError,
    PeerStep,
    build_gaitgl,
    export_state,
    import_peer,
)

from gaitgl_lightning.data.samplers import EvalShardSampler
from gaitgl_lightning.losses import GaitGLLoss
from gaitgl_lightning.models import GaitGL, load_opengait_checkpoint

CLASSES = 74
# Dense bf16 tensor-core peaks (TFLOP/s) of common cards, for the "achieved vs peak" line.
CARD_PEAK_BF16 = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def alternate(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median seconds of each function, run in turn (a, b, c, a, b, c, ...) after one warm-up."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def eval_batches(lengths: list[int], batch: int) -> list[list[int]]:
    """The package's evaluation batches (length-grouped, as the eval loader makes them)."""
    return list(EvalShardSampler(lengths, batch_size=batch))


def padded(seqs: list[torch.Tensor], idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(seqs[i]) for i in idx])
    out = seqs[idx[0]].new_zeros(len(idx), int(lengths.max()), *seqs[idx[0]].shape[1:])
    for j, i in enumerate(idx):
        out[j, : len(seqs[i])] = seqs[i]
    return out, lengths


class Pair:
    """OpenGait's net and the package's net with the same weights, on one device (without
    ``root``: the package's net alone, and the OpenGait entries are left out)."""

    def __init__(self, root: str | None, device: torch.device) -> None:
        torch.manual_seed(0)
        ours: GaitGL = build_model("opengait_gaitgl", CLASSES)  # type: ignore[assignment]
        self.peer = import_peer(root) if root else None
        if self.peer is not None:
            theirs = build_gaitgl(self.peer, [32, 64, 128], CLASSES)
            with tempfile.TemporaryDirectory() as tmp:
                load_opengait_checkpoint(ours, export_state(theirs, Path(tmp) / "gaitgl.pt"))
            self.theirs = theirs.to(device)
            self.step_theirs = PeerStep(self.peer, self.theirs)
        self.ours = ours.to(device)
        self.loss = GaitGLLoss()
        self.device = device

    def agreement(self, x: torch.Tensor) -> float:
        """Largest |difference| of the eval embeddings of one sequence [1, T, H, W]."""
        self.theirs.eval()
        self.ours.eval()
        with torch.no_grad():
            a = self.step_theirs.embed(x)
            b = self.ours(x.unsqueeze(1)).embeddings
        return float((a - b).abs().max())

    def train_fns(
        self, x: torch.Tensor, labels: torch.Tensor, autocast: torch.dtype | None, bf16: bool
    ) -> dict[str, Callable[[], object]]:
        """OpenGait's and the package's step (both under ``autocast`` if given), and with
        ``bf16`` also the package's step under bf16 autocast."""
        dev = self.device.type

        def ctx(dtype: torch.dtype | None) -> torch.autocast:
            return torch.autocast(dev, dtype=dtype or torch.float32, enabled=dtype is not None)

        def theirs() -> None:
            self.theirs.train()
            self.theirs.zero_grad(set_to_none=True)
            with ctx(autocast):
                loss = self.step_theirs.loss(self.step_theirs.forward(x, labels))
            loss.backward()

        def ours(dtype: torch.dtype | None) -> Callable[[], None]:
            def step() -> None:
                self.ours.train()
                self.ours.zero_grad(set_to_none=True)
                with ctx(dtype):
                    out = self.ours(x.unsqueeze(1))
                    loss = self.loss(out.embeddings, out.logits, labels).total
                loss.backward()

            return step

        fns = {"OpenGait": theirs} if self.peer is not None else {}
        fns["package"] = ours(autocast)
        if bf16:
            fns["package bf16"] = ours(torch.bfloat16)
        return fns

    def eval_fns(
        self, seqs: list[torch.Tensor], batch: int, autocast: torch.dtype | None, bf16: bool
    ) -> tuple[dict[str, Callable[[], object]], float]:
        dev = self.device.type
        lengths = [len(s) for s in seqs]
        batches = eval_batches(lengths, batch)
        frames = sum(lengths)
        slots = sum(max(lengths[i] for i in b) * len(b) for b in batches)

        def ctx(dtype: torch.dtype | None) -> torch.autocast:
            return torch.autocast(dev, dtype=dtype or torch.float32, enabled=dtype is not None)

        def theirs() -> list[torch.Tensor]:
            self.theirs.eval()
            with torch.no_grad(), ctx(autocast):
                return [self.step_theirs.embed(s[None]) for s in seqs]

        def ours_single() -> list[torch.Tensor]:
            self.ours.eval()
            with torch.inference_mode(), ctx(autocast):
                return [self.ours(s[None, None]).embeddings for s in seqs]

        def ours_batched(dtype: torch.dtype | None) -> Callable[[], list[torch.Tensor]]:
            def run() -> list[torch.Tensor]:
                self.ours.eval()
                out: list[torch.Tensor] = [torch.empty(0)] * len(seqs)
                with torch.inference_mode(), ctx(dtype):
                    for b in batches:
                        x, n = padded(seqs, b)
                        emb = self.ours(x.unsqueeze(1), n.to(x.device)).embeddings
                        for j, i in enumerate(b):
                            out[i] = emb[j : j + 1]
                return out

            return run

        fns: dict[str, Callable[[], object]] = {}
        if self.peer is not None:
            fns["OpenGait"] = theirs
        fns["one-at-a-time"] = ours_single
        fns["batched"] = ours_batched(autocast)
        if bf16:
            fns["batched bf16"] = ours_batched(torch.bfloat16)
        return fns, 1.0 - frames / slots


def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 arithmetic (AVX512-BF16 or AMX), where oneDNN runs bf16
    convolutions faster than float32; elsewhere bf16 autocast is emulated and slower."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, c, lambda: False)()) for c in checks)


def cpu_report(root: str, args: argparse.Namespace) -> None:
    pair = Pair(root, torch.device("cpu"))
    peer = pair.peer
    bf16 = cpu_has_bf16() and not args.no_bf16
    print(f"OpenGait {peer.commit} from {peer.root}")
    if peer.placeholders:
        print(
            f"  (not installed, replaced by placeholders GaitGL never calls: {peer.placeholders})"
        )
    g = torch.Generator().manual_seed(0)
    diff = pair.agreement(torch.rand(1, 40, 64, 44, generator=g))
    print(f"same weights: eval embeddings differ by at most {diff:.1e} (goal <= 1e-5)")
    x = torch.rand(args.batch, args.frames, 64, 44, generator=g)
    labels = torch.arange(args.batch) // 4
    t = alternate(pair.train_fns(x, labels, None, bf16), args.reps)
    print(
        f"train step, {args.batch} seq x {args.frames} frames, fwd + triplet + CE + bwd "
        f"(median of {args.reps}, alternated): OpenGait {t['OpenGait']:.2f} s"
    )
    for k in [k for k in t if k != "OpenGait"]:
        label = f"{k} {'' if 'bf16' in k else 'float32'}".strip()
        print(
            f"  train {label:<13} {t[k]:6.2f} s -> {t['OpenGait'] / t[k]:.2f}x OpenGait "
            "(goal >= 1.5x)"
        )
    lengths = torch.randint(30, 121, (args.eval_seqs,), generator=g).tolist()
    seqs = [torch.rand(n, 64, 44, generator=g) for n in lengths]
    fns, waste = pair.eval_fns(seqs, args.eval_batch, None, bf16)
    one, many = fns["one-at-a-time"](), fns["batched"]()
    same = max(float((u - v).abs().max()) for u, v in zip(one, many, strict=True))
    t = alternate(fns, args.reps)
    print(
        f"evaluation, {args.eval_seqs} sequences of 30-120 frames: OpenGait one per call "
        f"{t['OpenGait']:.2f} s (padding of the package's batches {100 * waste:.1f}% of frames, "
        f"goal <= 10%; batched and one-at-a-time embeddings differ by {same:.1e})"
    )
    for k in [k for k in t if k != "OpenGait"]:
        label = f"{k} {'' if 'bf16' in k else 'float32'}".strip()
        print(
            f"  eval {label:<21} {t[k]:6.2f} s -> {t['OpenGait'] / t[k]:.2f}x OpenGait (goal >= 3x)"
        )
    print(
        f"  eval batched / one-at-a-time, float32: {t['one-at-a-time'] / t['batched']:.2f}x "
        "(goal >= 1x)"
    )
    if bf16:
        many16 = fns["batched bf16"]()
        rel = max(float((u - v).norm() / v.norm()) for u, v in zip(many16, one, strict=True))
        print(f"  bf16 embeddings vs float32: relative difference {rel:.1e}")


def gpu_report(root: str | None, args: argparse.Namespace, dev: torch.device) -> None:
    """bf16 train and eval on ``dev`` (CUDA; ``--smoke-cpu`` runs the same code on the CPU at a
    tiny size to check it): seq/s, peak memory, TFLOP/s against the card's peak, vs OpenGait."""
    from torch.utils.flop_counter import FlopCounterMode

    cuda = dev.type == "cuda"
    name = torch.cuda.get_device_name(dev) if cuda else "CPU (smoke run)"
    peak = next((v for k, v in CARD_PEAK_BF16.items() if k in name), None)
    batch, frames = args.gpu_batch, args.frames
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, frames, 64, 44, generator=g).to(dev)
    labels = (torch.arange(batch) % max(2, batch // 8)).to(dev)  # P x K, K = 8 at batch 64
    pair = Pair(root, dev)
    fns = pair.train_fns(x, labels, torch.bfloat16, False)

    def synced(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> None:
            fn()
            if cuda:
                torch.cuda.synchronize()

        return run

    # FLOPs counted once, on the package's step: both nets do the same convolutions and matmuls
    # (OpenGait's loss all-gathers, which a dispatch mode such as the counter cannot trace).
    with FlopCounterMode(display=False) as counter:
        fns["package"]()
    counts = dict.fromkeys(fns, counter.get_total_flops())
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = alternate({k: synced(fn) for k, fn in fns.items()}, args.reps)
    mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    print(f"{name}, bf16 autocast, opengait_gaitgl (CASIA-B net), batch {batch} x {frames}:")
    for k in fns:
        tf = counts[k] / t[k] / 1e12
        of_peak = f" = {100 * tf / peak:.1f}% of the card's {peak:.0f}" if peak else ""
        print(f"  {k:<9} train {batch / t[k]:8.1f} seq/s   {tf:7.2f} TFLOP/s{of_peak}")
    print(f"  peak memory (train, all runs) {mem:.2f} GiB")
    if "OpenGait" in t:
        print(
            f"  train ratio package / OpenGait, same card: {t['OpenGait'] / t['package']:.2f}x "
            "(goal >= 1.5x)"
        )
    seqs = [torch.rand(n, 64, 44, generator=g).to(dev) for n in args.gpu_eval_lengths]
    efns, waste = pair.eval_fns(seqs, args.gpu_eval_batch, torch.bfloat16, False)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    et = alternate({k: synced(fn) for k, fn in efns.items()}, args.reps)
    mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    for k, v in et.items():
        print(f"  {k:<13} eval {len(seqs) / v:8.1f} seq/s")
    print(f"  peak memory (eval) {mem:.2f} GiB; padding {100 * waste:.1f}% of frames")
    if "OpenGait" in et:
        print(
            f"  eval ratio batched / OpenGait one per call, same card: "
            f"{et['OpenGait'] / et['batched']:.2f}x (goal >= 3x)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--eval-seqs", type=int, default=12)
    ap.add_argument("--eval-batch", type=int, default=4)
    ap.add_argument("--gpu-batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-bf16", action="store_true", help="skip the CPU bf16-autocast runs")
    ap.add_argument("--gpu-eval-batch", type=int, default=16)
    ap.add_argument("--gpu-eval-lengths", type=int, nargs="+", default=list(range(30, 121, 2)) * 4)
    ap.add_argument("--smoke-cpu", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = os.environ.get(ENV)
    if args.smoke_cpu:
        gpu_report(root, args, torch.device("cpu"))
        return
    print(f"side by side with OpenGait (CPU, {args.threads} threads, torch {torch.__version__})")
    if not root:
        print(
            f"  {ENV} not set: skipped (set it to an OpenGait checkout to compare on the same "
            "weights; the other benchmarks use the package's own baselines)"
        )
    else:
        try:
            cpu_report(root, args)
        except PeerError as exc:
            print(f"  {exc}")
            root = None
    if torch.cuda.is_available():
        gpu_report(root, args, torch.device("cuda"))
    else:
        print("  (no CUDA device: GPU seq/s, peak memory, TFLOP/s and the GPU ratio not measured)")


if __name__ == "__main__":
    main()
