"""The LTA kernel's spatial extent on the synthetic default: rank-1 over seeds, per reading.

    python scripts/lta_extent_compare.py --out /tmp/lta --seeds 0 1 2

Trains the laptop default (`python -m gaitgl_lightning`, gaitgl_small, 300 steps) once per seed
and reading (``model.lta_spatial`` 1 = the conference (3, 1, 1), 3 = Eq. 1's (3, 3, 3)),
evaluating only at the end (``eval_every=300``, no best-checkpoint re-scoring, no GEI baseline:
the trained weights are the same, the run is cheaper). A run whose ``metrics.json`` already
exists under ``--out`` is read, not rerun. Prints rank-1 per run and mean +- sample std.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path


def rank1(out: Path, spatial: int, seed: int, extra: list[str]) -> dict[str, float] | None:
    """The final evaluation summary of one run (trained here when not there yet)."""
    run = out / f"s{spatial}_seed{seed}"
    metrics = run / "metrics.json"
    if not metrics.is_file():
        cmd = [
            sys.executable,
            "-m",
            "gaitgl_lightning",
            f"seed={seed}",
            f"++model.lta_spatial={spatial}",
            "eval_every=300",
            "eval_best=false",
            "baseline_gei=false",
            f"hydra.run.dir={run}",
            *extra,
        ]
        env = {**os.environ, "WANDB_MODE": "offline"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not metrics.is_file():
            print(f"s{spatial} seed {seed}: run failed ({proc.returncode})", file=sys.stderr)
            return None
    return json.loads(metrics.read_text())["final"]["summary"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--spatial", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override")
    args = parser.parse_args()
    keys = ("rank1", "NM/rank1", "BG/rank1", "CL/rank1")
    print(f"{'LTA kernel':<12} {'seed':>4} " + " ".join(f"{k:>12}" for k in keys))
    for spatial in args.spatial:
        rows = [(s, rank1(args.out, spatial, s, args.override)) for s in args.seeds]
        done = [(s, r) for s, r in rows if r is not None]
        kernel = f"(3,{spatial},{spatial})"
        for seed, r in done:
            print(f"{kernel:<12} {seed:>4} " + " ".join(f"{100 * r[k]:12.2f}" for k in keys))
        if len(done) >= 2:
            cells = []
            for k in keys:
                values = [100 * r[k] for _, r in done]
                cells.append(f"{statistics.mean(values):.2f}+-{statistics.stdev(values):.2f}")
            print(f"{kernel:<12} {'mean':>4} " + " ".join(f"{c:>12}" for c in cells), end="")
            print(f"   (n={len(done)}, mean +- sample std)")


if __name__ == "__main__":
    main()
