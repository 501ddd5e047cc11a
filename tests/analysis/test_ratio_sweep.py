"""The report's reading of a dropping-ratio sweep (the paper's Fig. 4) and of an ablation's
control from another table, on per-run CSV rows written here and checked against a hand
computation: the per-seed slope over d with its interval, the repeated-measures F test, the
paired difference to table5's network without masks, and the figure against d."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gaitgl_lightning.analysis import ratio_sweep
from gaitgl_lightning.analysis.ablation import RunRow, build_tables, csv_text, read_csv_rows
from gaitgl_lightning.analysis.report import report

# Mean rank-1 of strip_v per seed (rows) and d = 0.1 / 0.2 / 0.3 (columns); every condition is
# the mean here, so the by-condition lines repeat it.
CURVE = {0: (80.0, 79.0, 78.0), 1: (82.0, 80.0, 80.0), 2: (78.0, 78.5, 75.5)}
RATIOS = (0.1, 0.2, 0.3)
CONTROL = {0: 81.0, 1: 82.0, 2: 80.0}  # table5's glcl_nomask per seed


def _row(table: str, arm: str, seed: int, mean: float, strategy: str = "", ratio=None) -> RunRow:
    scores = {"NM": mean, "BG": mean, "CL": mean, "mean": mean}
    return RunRow(table, arm, seed, 750, scores, f"{arm}/seed{seed}", "", arm, strategy, ratio)


def _rows(with_control: bool = True) -> list[RunRow]:
    rows = [
        _row("fig4", f"strip_v_d{d:g}", seed, values[j], "strip_v", d)
        for seed, values in CURVE.items()
        for j, d in enumerate(RATIOS)
    ]
    # Two ratios of another strategy: too few for a curve.
    rows += [_row("fig4", f"part_v_d{d:g}", 0, 77.0, "part_v", d) for d in (0.1, 0.5)]
    if with_control:
        rows += [_row("table5", "glcl_nomask", s, v) for s, v in CONTROL.items()]
    return rows


def _write(folder: Path, rows: list[RunRow]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for table in {r.table for r in rows}:
        (folder / f"{table}.csv").write_text(csv_text([r for r in rows if r.table == table]))
    return folder


def test_strategy_and_ratio_travel_through_the_committed_csv(tmp_path: Path) -> None:
    rows = read_csv_rows(_write(tmp_path, _rows()))
    by_arm = {(r.arm, r.seed): r for r in rows}
    assert (by_arm["strip_v_d0.2", 1].strategy, by_arm["strip_v_d0.2", 1].ratio) == ("strip_v", 0.2)
    control = by_arm["glcl_nomask", 0]
    assert (control.strategy, control.ratio) == ("", None)
    assert "NM" in control.scores and "ratio" not in control.scores  # not read as a condition


def test_the_trend_and_the_f_test_match_a_hand_computation() -> None:
    fig4 = next(t for t in build_tables(_rows()) if t.name == "fig4")
    (curve,) = ratio_sweep.curves(fig4)  # part_v has two ratios: not a curve
    assert curve.strategy == "strip_v" and curve.ratios == list(RATIOS) and curve.seeds == [0, 1, 2]
    # Per-seed slopes, points per 0.1 of d: -1, -1, -1.25 (least squares over three points).
    slope = ratio_sweep.trend(curve)
    sd = math.sqrt(((1 / 12) ** 2 * 2 + (1 / 6) ** 2) / 2)
    half = 4.303 * sd / math.sqrt(3)
    assert (slope.mean, slope.low, slope.high) == pytest.approx(
        (-13 / 12, -13 / 12 - half, -13 / 12 + half), abs=2e-3
    )
    assert "falls with d beyond noise" in ratio_sweep.trend_words(slope)
    # Repeated measures by hand: SS_ratio 43 / 6 on 2 dof, SS_error 8 / 3 on 4; F(2, d2) has
    # the closed-form tail (1 + 2F / d2) ** (-d2 / 2).
    test = ratio_sweep.any_difference(curve)
    assert test is not None and test.dof == (2, 4)
    f = (43 / 6 / 2) / (8 / 3 / 4)
    assert test.f == pytest.approx(f, rel=1e-6)
    assert test.p == pytest.approx((1 + 2 * f / 4) ** -2, rel=1e-6)
    assert "no difference beyond noise" in ratio_sweep.f_words(test)  # p = 0.074


def test_two_strategies_over_the_same_ratios_give_their_gap_averaged_over_d() -> None:
    # part_v is strip_v plus 1 / 2 / 0.5 points at every d of seeds 0 / 1 / 2.
    lift = {0: 1.0, 1: 2.0, 2: 0.5}
    rows = [r for r in _rows() if r.strategy != "part_v"]
    rows += [
        _row("fig4", f"part_v_d{d:g}", seed, values[j] + lift[seed], "part_v", d)
        for seed, values in CURVE.items()
        for j, d in enumerate(RATIOS)
    ]
    fig4 = next(t for t in build_tables(rows) if t.name == "fig4")
    strip, part = ratio_sweep.curves(fig4)
    got = ratio_sweep.gap(part, strip)
    sd = math.sqrt(((1 - 7 / 6) ** 2 + (2 - 7 / 6) ** 2 + (0.5 - 7 / 6) ** 2) / 2)
    half = 4.303 * sd / math.sqrt(3)
    assert (got.mean, got.low, got.high) == pytest.approx(
        (7 / 6, 7 / 6 - half, 7 / 6 + half), abs=2e-3
    )
    (line,) = ratio_sweep.gap_lines(fig4)
    assert line.startswith("strip_v - part_v, averaged over d (n = 3): -1.17 [-3.06, +0.73]")
    assert "points, within noise" in line  # the lift varies too much over three seeds


def test_a_seed_without_every_ratio_is_left_out_of_the_curve() -> None:
    rows = [r for r in _rows() if not (r.seed == 2 and r.ratio == 0.3)]
    fig4 = next(t for t in build_tables(rows) if t.name == "fig4")
    (curve,) = ratio_sweep.curves(fig4)
    assert curve.seeds == [0, 1]
    (line,) = ratio_sweep.lines(fig4)
    assert line.startswith("strip_v over d = 0.1, 0.2, 0.3 (n = 2 seed(s) with every ratio")


def test_the_report_pairs_fig4_with_table5s_control(tmp_path: Path) -> None:
    folder = _write(tmp_path / "results", _rows())
    tables = {t.name: t for t in report(folder, show=False)}
    fig4 = tables["fig4"]  # conf/ablation/fig4.yaml names the reference and the control
    assert fig4.reference == "strip_v_d0.3" and fig4.control_name == "table5/glcl_nomask"
    assert fig4.control is tables["table5"].arm("glcl_nomask")
    diff = fig4.arm("strip_v_d0.1").paired(fig4.control, "mean")  # -1, 0, -2
    assert diff.mean == pytest.approx(sum(CURVE[s][0] - CONTROL[s] for s in CURVE) / 3)
    md = (folder / "report" / "fig4.md").read_text()
    assert "Against the control table5/glcl_nomask" in md
    cells = f"{diff.mean:+.2f} [{diff.low:+.2f}, {diff.high:+.2f}]"
    assert f"| strip_v_d0.1 | table5/glcl_nomask | 3 | {cells} |" in md
    assert "- strip_v_d0.1 - table5/glcl_nomask:" in md
    assert "strip_v over d = 0.1, 0.2, 0.3 (n = 3 seed(s) with every ratio" in md
    summary = (folder / "report" / "fig4-summary.csv").read_text().splitlines()
    assert "control,NM_vs_control,NM_vs_control_ci_low" in summary[0]
    assert (folder / "report" / "fig4-ratio.png").stat().st_size > 0
    assert not (folder / "report" / "table5-ratio.png").exists()  # no curve there


def test_without_the_control_the_report_says_so(tmp_path: Path) -> None:
    folder = _write(tmp_path / "results", _rows(with_control=False))
    (fig4,) = report(folder, draw=False, show=False)
    assert fig4.control is None
    md = (folder / "report" / "fig4.md").read_text()
    assert "no paired difference to the control table5/glcl_nomask: these rows lack it" in md
    assert "Against the control" not in md
    # table5 there (read against its strip_v), but without the control's arm: the same note.
    other = [_row("table5", "strip_v", s, v) for s, v in CONTROL.items()]
    folder = _write(tmp_path / "partial", _rows(with_control=False) + other)
    tables = report(folder, reference="strip_v", draw=False, show=False)
    fig4 = next(t for t in tables if t.name == "fig4")
    assert fig4.control is None
    assert "these rows lack it" in (folder / "report" / "fig4.md").read_text()


def test_a_control_of_each_arms_namesake_pairs_arm_by_arm(tmp_path: Path) -> None:
    """``ablation.control: budget_long/*`` (conf/ablation/averaging_long.yaml): each arm against
    the arm of the same name in budget_long, by seed; an arm budget_long lacks has no control."""
    trained = {"glcl_nomask": (81.0, 82.0, 80.0), "strip_v": (79.0, 80.0, 78.0)}
    averaged = {"glcl_nomask": (81.5, 82.0, 81.0), "strip_v": (80.0, 80.5, 78.0), "new": (1, 2, 3)}
    rows = [_row("budget_long", a, s, v[s]) for a, v in trained.items() for s in range(3)]
    rows += [_row("averaging_long", a, s, v[s]) for a, v in averaged.items() for s in range(3)]
    folder = _write(tmp_path / "results", rows)
    tables = {t.name: t for t in report(folder, draw=False, show=False)}
    study, long = tables["averaging_long"], tables["budget_long"]
    assert study.control is None and study.control_name == "budget_long/*"
    assert study.controls == {a: long.arm(a) for a in trained}
    diff = study.arm("strip_v").paired(study.controls["strip_v"], "mean")
    assert (diff.n, diff.mean) == (3, pytest.approx(0.5))
    md = (folder / "report" / "averaging_long.md").read_text()
    cells = f"{diff.mean:+.2f} [{diff.low:+.2f}, {diff.high:+.2f}]"
    assert f"| strip_v | budget_long/strip_v | 3 | {cells} |" in md
    assert "- strip_v - budget_long/strip_v: +0.50" in md
    assert "| new |" in md and "budget_long/new" not in md
    summary = (folder / "report" / "averaging_long-summary.csv").read_text()
    assert "budget_long/strip_v" in summary and "budget_long/new" not in summary
