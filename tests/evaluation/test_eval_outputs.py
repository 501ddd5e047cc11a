"""GREW submission file, JSON, rich tables and figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_bruteforce import make_casia

from gaitgl_lightning.data.meta import SequenceMeta
from gaitgl_lightning.evaluation import evaluate, write_grew_submission
from gaitgl_lightning.evaluation.distance import pairwise_distance
from gaitgl_lightning.evaluation.report import (
    plot_rank_curve,
    print_report,
    save_json,
    write_report,
)


def _grew_test_set(seed: int = 12) -> tuple[torch.Tensor, SequenceMeta]:
    """30 gallery subjects (types 01/02) and 5 probes whose video id sits in the view column."""
    g = torch.Generator().manual_seed(seed)
    subs, types, views = [], [], []
    for s in range(30):
        for t in ("01", "02"):
            subs.append(f"{s:05d}")
            types.append(t)
            views.append("00")
    for p in range(5):
        subs.append("probe")
        types.append("03")
        views.append(f"vid{p:03d}")
    return torch.randn(len(subs), 4, 2, generator=g), SequenceMeta.from_lists(subs, types, views)


def test_grew_submission_format_and_order(tmp_path: Path) -> None:
    emb, meta = _grew_test_set()
    path = write_grew_submission(emb, tmp_path / "sub" / "grew.csv", meta)
    lines = path.read_text().splitlines()
    assert lines[0] == "videoId," + ",".join(f"rank{k}" for k in range(1, 21))
    assert len(lines) == 6
    assert not [p for p in path.parent.iterdir() if p.name != "grew.csv"]  # no temp file left
    dist = pairwise_distance(emb[60:], emb[:60])
    for p, line in enumerate(lines[1:]):
        cells = line.split(",")
        assert cells[0] == f"vid{p:03d}" and len(cells) == 21
        order = sorted(range(60), key=lambda j: (float(dist[p, j]), j))[:20]
        assert cells[1:] == [str(int(meta.subjects[j])) for j in order]


def test_grew_submission_from_result_equals_from_embeddings(tmp_path: Path) -> None:
    emb, meta = make_casia(subjects=12, views=("000",), seed=13)
    vid = SequenceMeta(meta.subjects, meta.types, np.asarray([f"v{i}" for i in range(len(meta))]))
    gall = ["nm-01", "nm-02"]
    res = evaluate("grew", emb, vid, gallery_types=gall)
    a = write_grew_submission(res, tmp_path / "a.csv", vid)
    b = write_grew_submission(emb, tmp_path / "b.csv", vid, gallery_types=gall)
    assert a.read_text() == b.read_text()
    with pytest.raises(ValueError, match="kept no ranking"):
        write_grew_submission(evaluate("generic", emb, vid), tmp_path / "c.csv", vid)
    # A gallery under 20 sequences: the ranks that exist (and a warning), not an error.
    small = vid.select(np.flatnonzero(~np.isin(vid.types, gall) | (vid.subjects < "080")))
    d = write_grew_submission(emb[: len(small)], tmp_path / "d.csv", small, gallery_types=gall)
    header = d.read_text().splitlines()[0].split(",")
    assert 1 < len(header) < 21 and header[-1] == f"rank{len(header) - 1}"


def test_json_table_and_figures(tmp_path: Path) -> None:
    from rich.console import Console

    emb, meta = make_casia(subjects=3, views=("000", "090", "180"), seed=14)
    res = evaluate("casia_b", emb, meta)
    console = Console(record=True, width=160)
    print_report(res, console)
    text = console.export_text()
    assert "variant: identical views excluded | distance: euc_parts" in text
    assert "NM: rank-1 (%)" in text and "CL/rank1" in text
    paths = write_report(res, tmp_path)
    loaded = json.loads(paths["json"].read_text())
    assert loaded["summary"]["rank1"] == pytest.approx(res.rank1)
    assert loaded["view_tables"]["NM"]["acc"][0][1] == pytest.approx(
        res.view_tables["NM"].acc[0, 1]
    )
    assert loaded["other_variants"]["identical views included"]["rank1"] >= 0
    assert paths["heatmap"].stat().st_size > 1000
    gen = evaluate("generic", emb, meta)
    gen2 = evaluate("generic", emb, meta, distance="euc_flat")
    curve = plot_rank_curve([gen, gen2], tmp_path / "curve.png")
    assert curve.stat().st_size > 1000
    assert save_json(gen, tmp_path / "g.json").exists()


@pytest.mark.parametrize("protocol", ["casia_b", "generic"])
def test_result_round_trips_through_json(protocol: str) -> None:
    """A run's metrics.json entry rebuilds the result, so figures can be drawn after the run."""
    from gaitgl_lightning.evaluation import EvalResult

    emb, meta = make_casia(subjects=3, views=("000", "090", "180"), seed=15)
    res = evaluate(protocol, emb, meta)
    back = EvalResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert back.to_dict() == res.to_dict()
    for name, table in res.view_tables.items():
        np.testing.assert_array_equal(back.view_tables[name].acc, table.acc)  # NaN where no probe
    with pytest.raises(ValueError, match="not an evaluation result"):
        EvalResult.from_dict({"protocol": "casia_b"})
