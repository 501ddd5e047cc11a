"""Every paper preset end to end at tiny widths on CPU, from a tree in the layout the dataset
ships in: prepare, train, periodic evaluation, final evaluation, outputs. (GREW: test_grew.py;
Gait3D: test_gait3d.py.) The README's dataset commands are the ones run here."""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from as_shipped import casia_b, casia_b_pkl, oumvlp, tiny_run
from helpers import compose_config

from gaitgl_lightning import config_dir
from gaitgl_lightning.runtime.tasks import prepare, train

README = Path(__file__).resolve().parents[1] / "README.md"

#: The README's "Your data" commands; ``/data/<X>`` is replaced by a tree built as X ships.
COMMANDS = {
    "casia_b": "python -m gaitgl_lightning +experiment=casia_b dataset.source=/data/CASIA-B",
    "casia_b_prepare": (
        "python -m gaitgl_lightning task=prepare dataset=casia_b dataset.source=/data/CASIA-B"
    ),
    "opengait_casia_b": (
        "python -m gaitgl_lightning +experiment=opengait_casia_b dataset.source=/data/CASIA-B-pkl"
    ),
    "oumvlp": "python -m gaitgl_lightning +experiment=oumvlp dataset.source=/data/OUMVLP",
    "opengait_oumvlp": (
        "python -m gaitgl_lightning +experiment=opengait_oumvlp dataset.source=/data/OUMVLP"
    ),
    "grew_sgd": "python -m gaitgl_lightning +experiment=grew_sgd dataset.source=/data/GREW",
    "opengait_grew": (
        "python -m gaitgl_lightning +experiment=opengait_grew dataset.source=/data/GREW-pkl "
        "dataset.partition=/data/GREW.json"
    ),
    "gait3d": (
        "python -m gaitgl_lightning +experiment=gait3d dataset.source=/data/Gait3D "
        "dataset.partition=/data/Gait3D.json"
    ),
}

#: Shipped partitions, few subjects on disk (a partial download): CASIA-B 3 train + 2 test ids,
#: OU-MVLP 4 odd (train) + 4 even (test) ids.
TREES: dict[str, tuple[Callable[[Path], Path], int]] = {
    "casia_b": (lambda root: casia_b(root, [1, 2, 3, 75, 76]), 3),
    "opengait_casia_b": (lambda root: casia_b_pkl(root, [1, 2, 3, 75, 76], height=16), 3),
    "oumvlp": (lambda root: oumvlp(root, list(range(1, 9))), 4),
    "opengait_oumvlp": (lambda root: oumvlp(root, list(range(1, 9))), 4),
}


def _overrides(command: str, data: Path) -> list[str]:
    args = command.split()[3:]
    return [a.replace("/data", str(data)) for a in args]


def test_readme_dataset_commands_are_the_tested_ones() -> None:
    text = README.read_text()
    block = text.split("## Your data", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [ln.strip() for ln in block.splitlines() if ln.strip().startswith("python -m")]
    joined = [re.sub(r"\s+", " ", ln) for ln in lines]
    assert sorted(joined) == sorted(COMMANDS.values())
    experiments = {p.stem for p in (config_dir() / "experiment").glob("*.yaml")}
    presets = {"casia_b", "oumvlp", "grew_sgd", "gait3d"} | {
        e for e in experiments if e.startswith("opengait_")
    }
    assert presets <= set(COMMANDS)  # every paper / OpenGait preset has its command


@pytest.mark.parametrize("preset", sorted(TREES))
def test_preset_end_to_end(preset: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    build, classes = TREES[preset]
    data = tmp_path / "data"
    build(data)
    tiny = tiny_run(tmp_path / "store", num_classes=classes)
    args = _overrides(COMMANDS[preset], data)
    if preset == "casia_b":  # the README prepares CASIA-B first
        info = prepare(
            compose_config([*_overrides(COMMANDS["casia_b_prepare"], data), *tiny], tmp_path / "p")
        )
        assert info["train_ids"] == 3 and info["sequences"] == 5 * 8 * 2
    with caplog.at_level(logging.WARNING, logger="gaitgl_lightning"):
        metrics = train(compose_config([*args, *tiny], tmp_path))
    assert "a partial download?" in caplog.text  # said, and the run went on
    run = tmp_path / "run"
    saved = json.loads((run / "metrics.json").read_text())
    final = saved["final"]
    assert saved["steps"] == 6 and 0.0 <= final["summary"]["rank1"] <= 1.0
    assert final["protocol"] == ("casia_b" if "casia" in preset else "oumvlp")
    assert metrics["final"]["summary"] == final["summary"]
    (log,) = run.glob("csv/**/metrics.csv")
    steps = {r["step"] for r in csv.DictReader(log.open()) if r.get("val/rank1")}
    assert len(steps) >= 2  # the periodic evaluation and the final one
    assert (run / "checkpoints" / "last.ckpt").is_file() and "checkpoint" in saved["best"]
    print(
        f"{preset}: rank-1 {final['summary']['rank1']:.3f} over {final['counts']['num_probes']} probes"
    )
