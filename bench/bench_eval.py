"""Benchmark: chunked distance + rank-k on an OU-MVLP-sized test set against a per-probe loop.

What it measures (one run, ratios printed at the end):

1. Speed. The package's chunked path (one distance pass: ``iter_distance_chunks``, and from
   each block ``view_nearest_hits``, the OU-MVLP per-view rank-1, and ``first_match_rank``,
   rank-k) against a plain per-probe loop doing the same work (distance of one probe to the whole gallery, per-view argmin, a stable sort for
   the first true match). The gallery is the full OU-MVLP-sized one; both paths are timed on a
   subset of probes and extrapolated to all probes (printed as such), because on a 2-core CPU
   the full 66k x 66k x 8192 product alone is about half an hour. The two are timed in
   alternated rounds (chunked on a share of the probes, then the loop), so that load from
   other processes hits both alike.
2. Memory. Peak resident memory of the chunked path for two chunk sizes, each in a fresh
   subprocess, minus the memory held before evaluation starts (embeddings and the prepared
   gallery): it grows with the chunk, and is far below one probe x gallery matrix.

Embeddings are random (subject centre + noise), generated chunk-wise from a seed and stored
as float16 (half the memory; the distance code computes in float32).

    python bench/bench_eval.py                 # defaults: 5154 subjects x 14 views x 2, 128 x 64
    python bench/bench_eval.py --channels 16 --parts 8 --timed-probes 0   # every probe, fewer dims
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from gaitgl_lightning.evaluation.distance import (
    GalleryCache,
    distance_to_gallery,
    iter_distance_chunks,
)
from gaitgl_lightning.evaluation.ranking import encode_labels, first_match_rank, view_nearest_hits

VIEWS = [f"{v:03d}" for v in (*range(0, 91, 15), *range(180, 271, 15))]  # OU-MVLP's 14 views


@dataclass
class TestSet:
    """Probe (Seq#00) and gallery (Seq#01) embeddings with subject and view columns."""

    probe: torch.Tensor
    probe_subjects: np.ndarray
    probe_views: np.ndarray
    gallery: torch.Tensor
    gallery_subjects: np.ndarray
    gallery_views: np.ndarray


def make_set(args: argparse.Namespace) -> TestSet:
    """An OU-MVLP-shaped test set; about 5 % of (subject, view, sequence) cells are missing."""
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    centres = torch.randn(args.subjects, args.channels, args.parts, generator=gen)

    def part(seq: int) -> tuple[np.ndarray, np.ndarray]:
        subj = np.repeat(np.arange(args.subjects), len(VIEWS))
        view = np.tile(np.arange(len(VIEWS)), args.subjects)
        keep = rng.random(subj.size) > 0.05
        return subj[keep], view[keep]

    def embed(subj: np.ndarray) -> torch.Tensor:
        out = torch.empty(len(subj), args.channels, args.parts, dtype=torch.float16)
        for s in range(0, len(subj), 4096):
            rows = torch.as_tensor(subj[s : s + 4096])
            noise = torch.randn(len(rows), args.channels, args.parts, generator=gen)
            out[s : s + 4096] = (centres[rows] + args.noise * noise).half()
        return out

    gs, gv = part(1)
    by_view = np.argsort(gv, kind="stable")  # gallery grouped by view (order kept inside one)
    gs, gv = gs[by_view], gv[by_view]
    ps, pv = part(0)
    if args.timed_probes > 0:
        pick = np.sort(rng.choice(len(ps), size=min(args.timed_probes, len(ps)), replace=False))
        ps_t, pv_t = ps[pick], pv[pick]
    else:
        ps_t, pv_t = ps, pv
    names = np.asarray(VIEWS)
    ts = TestSet(embed(ps_t), ps_t.astype(str), names[pv_t], embed(gs), gs.astype(str), names[gv])
    ts.total_probes = len(ps)  # type: ignore[attr-defined]
    return ts


def subset(ts: TestSet, rows: slice) -> TestSet:
    """The probes ``rows`` of a test set, with the whole gallery."""
    return TestSet(
        ts.probe[rows],
        ts.probe_subjects[rows],
        ts.probe_views[rows],
        ts.gallery,
        ts.gallery_subjects,
        ts.gallery_views,
    )


def chunked(
    ts: TestSet, chunk: int, distance: str, cache: GalleryCache | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The package path: ONE chunked distance pass; from each [chunk, gallery] block both the
    per-view rank-1 hits (``view_nearest_hits``) and the first-match ranks (rank-k).
    ``cache``: the gallery prepared beforehand (its one-off cost is timed on its own)."""
    pcodes, gcodes = encode_labels(ts.probe_subjects, ts.gallery_subjects)
    vcode = {v: i for i, v in enumerate(VIEWS)}
    gv = np.asarray([vcode[v] for v in ts.gallery_views])
    bounds = np.searchsorted(gv, np.arange(len(VIEWS) + 1))  # the gallery is sorted by view
    hits: list[torch.Tensor] = []
    first: list[torch.Tensor] = []
    blocks = (
        iter_distance_chunks(ts.probe, ts.gallery, distance, chunk)
        if cache is None  # what iter_distance_chunks does once it has prepared the gallery:
        else (
            (s, distance_to_gallery(ts.probe[s : s + chunk], cache))
            for s in range(0, len(ts.probe), chunk)
        )
    )
    for start, d in blocks:
        lab = pcodes[start : start + d.shape[0]]
        hits.append(view_nearest_hits(d, lab, gcodes, bounds))
        first.append(first_match_rank(d, lab, gcodes))
    return torch.cat(hits).numpy(), torch.cat(first).numpy()


def per_probe_loop(
    ts: TestSet, n: int, distance: str, cache: GalleryCache | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Baseline: one probe at a time against the prepared gallery, same outputs as ``chunked``
    (``cache``: the gallery prepared beforehand, so that its cost is not counted per probe)."""
    cache = GalleryCache(ts.gallery, distance) if cache is None else cache
    _, gcodes = np.unique(
        np.concatenate([ts.probe_subjects, ts.gallery_subjects]), return_inverse=True
    )
    pcode = torch.as_tensor(gcodes[: len(ts.probe_subjects)])
    gcode = torch.as_tensor(gcodes[len(ts.probe_subjects) :])
    vcols = [torch.as_tensor(np.flatnonzero(ts.gallery_views == v)) for v in VIEWS]
    hits = np.zeros((n, len(VIEWS)), dtype=bool)
    first = np.zeros(n, dtype=np.int64)
    for i in range(n):
        d = distance_to_gallery(ts.probe[i : i + 1], cache)[0]
        for v, cols in enumerate(vcols):
            hits[i, v] = bool(gcode[cols[d[cols].argmin()]] == pcode[i])
        order = torch.sort(d, stable=True).indices
        where = torch.nonzero(gcode[order] == pcode[i])
        first[i] = int(where[0, 0]) if where.numel() else len(d)
    return hits, first


def _status_mb(key: str) -> float:
    """A ``VmRSS`` / ``VmHWM`` line of /proc/self/status in MiB (Linux), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark, so the peak of the evaluation alone can be read."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(args: argparse.Namespace) -> None:
    """Subprocess body: build the set, reset the peak mark, run the chunked path, print JSON."""
    torch.set_num_threads(args.threads)
    ts = make_set(args)
    exact = _reset_peak()
    before = _status_mb("VmRSS")
    t0 = time.perf_counter()
    chunked(ts, args.chunk, args.distance)
    seconds = time.perf_counter() - t0
    peak = _status_mb("VmHWM")
    print(json.dumps({"before": before, "peak": peak, "seconds": seconds, "exact": exact}))


def main() -> None:
    """Run the speed comparison, then the memory comparison in fresh subprocesses."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--subjects", type=int, default=5154, help="test subjects (OU-MVLP: 5154)")
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--parts", type=int, default=64)
    ap.add_argument(
        "--noise", type=float, default=5.0, help="noise std (5 gives rank-1 ~0.85 at 128 x 64)"
    )
    ap.add_argument("--distance", default="euc_parts")
    ap.add_argument("--chunk", type=int, default=256, help="chunk size of the speed run")
    ap.add_argument("--memory-chunks", type=int, nargs=2, default=(64, 256))
    ap.add_argument("--timed-probes", type=int, default=512, help="0 = every probe")
    ap.add_argument("--loop-probes", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2, help="alternated chunked / loop rounds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args)
        return
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ts = make_set(args)
    total_p = ts.total_probes  # type: ignore[attr-defined]
    n_g = ts.gallery.shape[0]
    print(
        f"test set: {total_p} probes + {n_g} gallery = {total_p + n_g} sequences, {len(VIEWS)} views, "
        f"embeddings {args.channels} x {args.parts} (float16 storage), distance {args.distance}, "
        f"{args.threads} threads; built in {time.perf_counter() - t0:.1f} s"
    )
    n_t = ts.probe.shape[0]
    n_l = min(args.loop_probes, n_t)
    # The gallery is prepared once per evaluation by either path (GalleryCache: float32, part
    # major, norms); it is timed on its own and counted once in each extrapolated total.
    t0 = time.perf_counter()
    cache = GalleryCache(ts.gallery, args.distance)
    t_prep = time.perf_counter() - t0
    # Alternated rounds (load from other processes hits both paths alike): round r times the
    # chunked path on its share of the timed probes, then the loop on the first of them.
    rounds = max(1, min(args.rounds, n_l))
    t_chunk = t_loop = 0.0
    same = True
    firsts: list[np.ndarray] = []
    for r in range(rounds):
        part = subset(ts, slice(r * n_t // rounds, (r + 1) * n_t // rounds))
        t0 = time.perf_counter()
        hits, first = chunked(part, args.chunk, args.distance, cache)
        t_chunk += time.perf_counter() - t0
        n_r = (r + 1) * n_l // rounds - r * n_l // rounds
        t0 = time.perf_counter()
        lhits, lfirst = per_probe_loop(part, n_r, args.distance, cache)
        t_loop += time.perf_counter() - t0
        same &= bool((lhits == hits[:n_r]).all() and (lfirst == first[:n_r]).all())
        firsts.append(first)
    first = np.concatenate(firsts)
    per_c, per_l = t_chunk / n_t, t_loop / n_l
    print(f"gallery prepared once (either path): {t_prep:.1f} s")
    print(
        f"chunked (chunk {args.chunk}): {n_t} probes in {t_chunk:.1f} s = {1e3 * per_c:.2f} ms/probe"
    )
    print(
        f"per-probe loop: {n_l} probes in {t_loop:.1f} s = {1e3 * per_l:.1f} ms/probe "
        f"({rounds} alternated rounds of chunked then loop)"
    )
    tot_c, tot_l = t_prep + per_c * total_p, t_prep + per_l * total_p
    print(
        f"extrapolated to all {total_p} probes, the preparation counted once: chunked "
        f"{tot_c / 60:.1f} min ({'measured' if n_t == total_p else f'timed on {n_t} probes'}), "
        f"loop {tot_l / 60:.1f} min (timed on {n_l} probes); both make one distance pass for "
        "per-view rank-1 and rank-k"
    )
    print(
        f"speed-up: {tot_l / tot_c:.1f}x at this size, {per_l / per_c:.1f}x per probe (goal >= 40x); "
        f"loop and chunked agree: {same}"
    )
    print(
        f"rank-1 of the timed probes (all views, rank-k from first-match ranks): {(first < 1).mean():.3f}"
    )
    full_mb = total_p * n_g * 4 / 2**20
    cache_mb = n_g * args.channels * args.parts * 4 / 2**20
    print(f"a full probe x gallery float32 matrix would be {full_mb:,.0f} MiB")
    print(f"the float32 gallery prepared once for the distance takes {cache_mb:,.0f} MiB (fixed)")
    for chunk in args.memory_chunks:
        cmd = [sys.executable, __file__, "--memory-child", "--chunk", str(chunk)]
        for k in (
            "subjects",
            "channels",
            "parts",
            "noise",
            "distance",
            "timed_probes",
            "threads",
            "seed",
        ):
            cmd += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
        probes = max(4 * chunk, 2048) if args.timed_probes == 0 else min(args.timed_probes, 256)
        cmd[cmd.index("--timed-probes") + 1] = str(probes)
        out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        block = chunk * n_g * 4 / 2**20
        print(
            f"memory, chunk {chunk}: resident {out['before']:,.0f} MiB before evaluation, peak "
            f"{out['peak']:,.0f} MiB during it: evaluation needs {out['peak'] - out['before']:,.0f} "
            f"MiB = prepared gallery {cache_mb:,.0f} + chunk work "
            f"{out['peak'] - out['before'] - cache_mb:,.0f} (one chunk x gallery float32 block = "
            f"{block:,.0f} MiB){'' if out['exact'] else ' [peak since start: no reset available]'}"
        )


if __name__ == "__main__":
    main()
