"""SGD lr 0.1 on the real-width presets: a short run of ``scripts/sgd_side_by_side.py``.

The presets ``grew_sgd``, ``oumvlp`` and ``gait3d`` as shipped (network, mask, loss, optimiser,
schedule, no clipping) train on the CPU proxy (16 x 12 input, 9 frames, P x K = 4 x 2) and stay
finite. Before the overflow-safe GeM the backbone's output passed ~8.6e5 at step 4 and GeM's
``x ** 6.5`` overflowed float32: the loss was NaN at step 5 (docs/model.md). With an OpenGait
checkout in ``OPENGAIT_ROOT`` the second test also runs OpenGait's own network next to ours.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli_env

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "sgd_side_by_side.py"
STEPS = 5  # the NaN came at step 5


def side_by_side(tmp_path: Path, *args: str, opengait: str | None = None) -> dict[str, dict]:
    out = tmp_path / "trajectories.json"
    env = cli_env(tmp_path, GAITGL_DATA_DIR=str(tmp_path / "data"))
    env.pop("OPENGAIT_ROOT", None)
    if opengait:
        env["OPENGAIT_ROOT"] = opengait
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", str(STEPS), "--json", str(out), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=1700,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, dict] = json.loads(out.read_text())
    return result


def finite(rows: list[dict[str, float]]) -> bool:
    return len(rows) == STEPS and all(math.isfinite(v) for r in rows for v in r.values())


#: The headline preset in the slow tier (CI); all three with ``-m extended`` (minutes each).
PRESETS = [
    "grew_sgd",
    pytest.param("oumvlp", marks=pytest.mark.extended),
    pytest.param("gait3d", marks=pytest.mark.extended),
]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 5 steps of the 56 M-parameter net; minutes on a busy 2-core CPU
@pytest.mark.parametrize("preset", PRESETS)
def test_presets_as_shipped_stay_finite_under_sgd_lr_01(tmp_path: Path, preset: str) -> None:
    runs = side_by_side(tmp_path, "--models", "--presets", preset)
    assert set(runs) == {f"+experiment={preset}"}
    for name, run in runs.items():
        assert "SGD lr 0.1" in run["note"] and "clip none" in run["note"], name
        assert finite(run["rows"]), (name, run["rows"])
    # the proxy is the one that failed: the backbone output still grows far past x**6.5's range
    if preset == "grew_sgd":
        assert max(r["act"] for r in runs["+experiment=grew_sgd"]["rows"]) > 1e6


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not os.environ.get("OPENGAIT_ROOT"), reason="needs an OpenGait checkout")
def test_opengait_network_and_ours_side_by_side(tmp_path: Path) -> None:
    runs = side_by_side(tmp_path, opengait=os.environ["OPENGAIT_ROOT"])
    theirs, same = runs["OpenGait"], runs["opengait_gaitgl_large"]
    assert same["note"] == "OpenGait's initial weights"
    # The same weights, data and optimiser: the first steps agree (later ones drift apart by
    # float rounding, amplified by lr 0.1).
    for a, b in zip(theirs["rows"][:2], same["rows"][:2], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3)
    assert finite(runs["gaitgl_large_sp1"]["rows"])
