"""What a run shows: the end-of-run results table, one line per Lightning message, no adverts."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from rich.console import Console

from gaitgl_lightning.console import print_run_summary, quiet_lightning


def _cross_view(nm: float, bg: float, cl: float) -> dict:
    return {
        "protocol": "casia_b",
        "variant": "identical views excluded",
        "summary": {"NM/rank1": nm, "BG/rank1": bg, "CL/rank1": cl, "rank1": (nm + bg + cl) / 3},
    }


def _printed(metrics: dict, run_dir: Path, metrics_file: Path | None = None) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    print_run_summary(metrics, run_dir, metrics_file, console=console)
    return console.file.getvalue()  # type: ignore[attr-defined]


def _cells(text: str, row: str) -> list[str]:
    """The numbers of the table row whose label contains ``row``."""
    line = next(line for line in text.splitlines() if row in line and "│" in line)
    return [c.strip() for c in line.split("│")[2:-1]]


def test_train_summary_shows_conditions_mean_baseline_and_files(tmp_path: Path) -> None:
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text("step\n")
    metrics = {
        "final": _cross_view(0.9, 0.8, 0.5),
        "best": {**_cross_view(0.93, 0.87, 0.52), "checkpoint": "/x/step000200.ckpt"},
        "baseline_gei": _cross_view(0.53, 0.42, 0.04),
    }
    text = _printed(metrics, tmp_path, tmp_path / "metrics.json")
    header = next(line for line in text.splitlines() if "NM" in line)
    # Conditions in the protocol's order, then their mean.
    assert header.index("NM") < header.index("BG") < header.index("CL") < header.index("mean")
    assert _cells(text, "final") == ["90.0", "80.0", "50.0", "73.3"]
    assert _cells(text, "best checkpoint ") == ["93.0", "87.0", "52.0", "77.3"]
    assert _cells(text, "GEI") == ["53.0", "42.0", "4.0", "33.0"]
    assert "best checkpoint  /x/step000200.ckpt" in text
    assert f"every number     {tmp_path / 'metrics.json'}" in text
    assert str(tmp_path / "csv" / "metrics.csv") in text


def test_retrieval_summary_keeps_its_metrics_and_names_the_submission(tmp_path: Path) -> None:
    metrics = {
        "eval": {"protocol": "grew", "summary": {"rank1": 0.5, "rank5": 0.7, "mAP": 0.3}},
        "submission": "/runs/x/submission.csv",
        "checkpoint": "/runs/x/best.ckpt",
    }
    text = _printed(metrics, tmp_path)
    header = next(line for line in text.splitlines() if "rank1" in line)
    assert "mean" not in header and header.index("rank1") < header.index("rank5") < header.index(
        "mAP"
    )
    assert _cells(text, "GaitGL") == ["50.0", "70.0", "30.0"]
    assert "submission  /runs/x/submission.csv" in text
    assert "checkpoint  /runs/x/best.ckpt" in text


def test_a_run_without_results_says_so(tmp_path: Path) -> None:
    assert "no evaluation result" in _printed({"final": {}}, tmp_path)


def test_lightning_messages_print_once_without_adverts(monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning  # noqa: F401  (gives the ``lightning`` logger its own console handler)
    from lightning.pytorch.utilities import rank_zero_info

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [handler])  # what Hydra's job logging installs
    quiet_lightning()
    assert logging.getLogger("lightning").handlers == []
    rank_zero_info("GPU available: False, used: False")
    rank_zero_info("💡 Tip: try our cloud")
    rank_zero_info("TPU available: False, using: 0 TPU cores")
    lines = stream.getvalue().splitlines()
    assert lines == ["GPU available: False, used: False"]
