"""The ablation report's statistics against a hand computation, on per-run CSV rows written here:
per-arm mean +- SE, paired differences with a t-based 95% interval, the words for "within
noise", merged duplicate arms, the noise floor, and one-line errors for bad input."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from gaitgl_lightning.analysis.ablation import (
    Arm,
    RunRow,
    Table,
    build_tables,
    read_csv_rows,
    t_critical,
)
from gaitgl_lightning.analysis.probe_views import seed_noise
from gaitgl_lightning.analysis.report import main, report, verdicts

HEADER = "table,arm,seed,steps,NM,BG,CL,mean,run,masks,setting\n"
# mean rank-1 per seed: ref 80 / 82 / 84; near: differences 1, 2, 0.5; far: 2.5, 3.5, 2.5.
ROWS = {
    "ref": [(90, 80, 70, 80), (92, 82, 72, 82), (94, 84, 74, 84)],
    "near": [(91, 81, 71, 81), (93, 84, 75, 84), (94, 85, 74.5, 84.5)],
    "far": [(90, 80, 77.5, 82.5), (92, 82, 82.5, 85.5), (94, 84, 81.5, 86.5)],
}


def _write(folder: Path, rows: dict = ROWS, settings: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [HEADER]
    for seed in range(3):
        for arm, values in rows.items():
            nm, bg, cl, mean = values[seed]
            setting = (settings or {}).get(arm, arm)
            lines.append(
                f"demo,{arm},{seed},100,{nm},{bg},{cl},{mean},{arm}/seed{seed},,{setting}\n"
            )
    (folder / "demo.csv").write_text("".join(lines))
    return folder


def _hand_ci(diffs: list[float]) -> tuple[float, float, float]:
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = 4.303 * sd / math.sqrt(n)  # t(0.975, 2) from a printed table
    return mean, mean - half, mean + half


def test_paired_intervals_match_a_hand_computation(tmp_path: Path) -> None:
    (table,) = build_tables(read_csv_rows(_write(tmp_path)), reference="ref")
    assert t_critical(2) == pytest.approx(4.303, abs=1e-3)
    assert t_critical(4) == pytest.approx(2.776, abs=1e-3)
    ref = table.ref
    for arm, diffs in (("near", [1.0, 2.0, 0.5]), ("far", [2.5, 3.5, 2.5])):
        got = table.arm(arm).paired(ref, "mean")
        mean, low, high = _hand_ci(diffs)
        assert (got.mean, got.low, got.high) == pytest.approx((mean, low, high), abs=2e-3)
    near = table.arm("near").spread("mean")
    assert near.mean == pytest.approx(249.5 / 3)
    assert near.se == pytest.approx(
        math.sqrt(sum((v - 249.5 / 3) ** 2 for v in (81, 84, 84.5)) / 2) / math.sqrt(3)
    )
    # By condition: near's NM differences are 1, 1, 0 -> interval [-0.77, 2.10].
    nm = table.arm("near").paired(ref, "NM")
    assert (nm.low, nm.high) == pytest.approx(_hand_ci([1.0, 1.0, 0.0])[1:], abs=2e-3)


def test_the_report_says_which_differences_are_within_noise(tmp_path: Path) -> None:
    (table,) = report(_write(tmp_path / "results"), reference="ref", show=False)
    near, far = verdicts(table)
    assert near.startswith("near - ref: +1.17 [-0.73, +3.06]") and "within noise" in near
    assert "the 95% CI contains 0" in near
    assert far.startswith("far - ref: +2.83 [+1.40, +4.27]")
    assert "above ref beyond noise (the 95% CI excludes 0)" in far
    assert "CL higher beyond noise" in far and "NM within noise" in far  # far differs in CL alone
    md = (tmp_path / "results" / "report" / "demo.md").read_text()
    assert "| near | 3 | 92.67 ± 0.88 |" in md
    assert "seed-to-seed sd of mean rank-1: ref 2.00" in md
    assert (tmp_path / "results" / "report" / "demo.png").stat().st_size > 0
    summary = (tmp_path / "results" / "report" / "demo-summary.csv").read_text().splitlines()
    assert summary[0].startswith("table,arm,same_as,n,reference,NM,NM_se,NM_diff,NM_ci_low")
    assert summary[2].startswith("demo,near,,3,ref,")


def test_arms_with_one_setting_are_one_point(tmp_path: Path) -> None:
    folder = _write(tmp_path, settings={"near": "same", "far": "same"})
    (table,) = build_tables(read_csv_rows(folder), reference="ref")
    assert [a.label for a in table.arms] == ["ref", "near = far"]


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "other.csv" in err and "\n" not in err
    assert main([str(_write(tmp_path / "ok")), "--ref", "nope", "--no-plot"]) == 2
    assert "no table has an arm 'nope'" in capsys.readouterr().err


def test_ref_applies_to_the_tables_that_have_that_arm(tmp_path: Path) -> None:
    """A results folder holds several tables; ``--ref far`` re-references the one with a
    ``far`` arm and leaves the others on their own reference instead of failing on them."""
    folder = _write(tmp_path)
    other = (folder / "demo.csv").read_text().replace("demo,", "other,").replace(",far,", ",ref2,")
    (folder / "other.csv").write_text(other)
    demo, other_table = build_tables(read_csv_rows(folder), reference="far")
    assert (demo.name, demo.reference) == ("demo", "far")
    assert other_table.name == "other" and other_table.reference != "far"


def _views_table(rows: list[list[float]]) -> Table:
    """One arm whose seed ``i`` scores ``rows[i]`` on the probe views ``NM/000``, ``NM/018``..."""
    runs = {
        seed: RunRow("demo", "a", seed, 1, {"mean": sum(r) / len(r)},
                     probe_views={f"NM/{18 * j:03d}": v for j, v in enumerate(r)})
        for seed, r in enumerate(rows)
    }  # fmt: skip
    return Table("demo", [Arm("a", runs)], "a", ["NM"], [1])


def test_the_seed_sd_splits_into_network_and_test_set() -> None:
    # Every view moves with the seed: all of the spread is the network's.
    together = seed_noise(_views_table([[70, 80, 90], [72, 82, 92], [74, 84, 94]]).ref)
    assert together is not None
    assert (together.total, together.network, together.test_set) == pytest.approx((2, 2, 0))
    # Equal seed means, views scattered: none of it is the network's.
    scattered = seed_noise(_views_table([[70, 80, 90], [74, 78, 88], [66, 82, 92]]).ref)
    assert scattered is not None and scattered.total == pytest.approx(0) and scattered.network == 0
    # By hand: the residuals of [[1, 2, 6], [3, 4, 2]] are -1, -1, 2 / 1, 1, -2; MS_res = 12 / 2,
    # the test-set part sqrt(6 / 3); the seed means are equal (network part clipped at 0).
    mixed = seed_noise(_views_table([[1, 2, 6], [3, 4, 2]]).ref)
    assert mixed is not None and mixed.total == pytest.approx(0.0) and mixed.network == 0
    assert mixed.test_set == pytest.approx(math.sqrt(2)) and mixed.unit_residual == pytest.approx(
        math.sqrt(6)
    )
    assert mixed.with_units(4) == pytest.approx(math.sqrt(0.5))


def test_the_probe_view_split_reads_back_from_the_committed_csvs(tmp_path: Path) -> None:
    folder = _write(tmp_path / "results")
    (folder / "probe_views").mkdir()
    lines = ["table,arm,seed,condition,probe_view,rank1"]
    for seed in range(3):
        for arm, shift in (("ref", 0.0), ("near", 1.0)):
            lines += [f"demo,{arm},{seed},NM,{v},{70 + 10 * i + 2 * seed + shift * (i == 1)}"
                      for i, v in enumerate(("000", "090", "180"))]  # fmt: skip
    (folder / "probe_views" / "demo.csv").write_text("\n".join(lines) + "\n")
    (table,) = report(folder, reference="ref", draw=False, show=False)
    assert table.arm("near").runs[2].probe_views == {"NM/000": 74.0, "NM/090": 85.0, "NM/180": 94}
    md = (folder / "report" / "demo.md").read_text()
    assert "where the seed sd comes from: ref: sd over seeds 2.00 = network 2.00" in md
    assert "near - ref: sd over seeds 0.00 = network 0.00" in md
    split = [line for line in md.splitlines() if "where the seed sd" in line]
    assert len(split) == 3 and not any("far" in line for line in split)  # no views, no split
    assert "| near | +0.0 | +1.0* | +0.0 |" in md  # +1 at 090 on every seed: beyond noise


def test_a_bad_probe_view_csv_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _write(tmp_path / "results")
    (folder / "probe_views").mkdir()
    bad = folder / "probe_views" / "demo.csv"
    bad.write_text("table,arm,seed\ndemo,ref,0\n")
    assert main([str(folder), "--no-plot"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "demo.csv" in err and "probe_view" in err
    assert "\n" not in err
    bad.write_text("table,arm,seed,condition,probe_view,rank1\ndemo,ref,zero,NM,000,70\n")
    assert main([str(folder), "--no-plot"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "demo.csv:2" in err and "\n" not in err


def test_the_per_view_differences_match_a_hand_computation(tmp_path: Path) -> None:
    folder = _write(tmp_path / "results")
    (folder / "probe_views").mkdir()
    near_090 = [1.0, 2.0, 0.5]  # near - ref at NM/090 per seed; 0 at the other two views
    lines = ["table,arm,seed,condition,probe_view,rank1"]
    for seed in range(3):
        for i, view in enumerate(("000", "090", "180")):
            base = 70 + 10 * i + 2 * seed
            lines.append(f"demo,ref,{seed},NM,{view},{base}")
            lines.append(f"demo,near,{seed},NM,{view},{base + near_090[seed] * (i == 1)}")
    (folder / "probe_views" / "demo.csv").write_text("\n".join(lines) + "\n")
    report(folder, reference="ref", draw=False, show=False)

    mean, low, high = _hand_ci(near_090)
    rows = list(csv.DictReader((folder / "report" / "demo-views.csv").open()))
    assert [(r["arm"], r["probe_view"]) for r in rows] == [
        ("near", v) for v in ("000", "090", "180")
    ]
    at_090 = rows[1]
    assert (at_090["reference"], at_090["condition"], at_090["n"]) == ("ref", "NM", "3")
    got = [float(at_090[k]) for k in ("diff", "ci_low", "ci_high")]
    assert got == pytest.approx([mean, low, high], abs=1e-3)
    assert at_090["within_noise"] == ("true" if low < 0 < high else "false")
    assert rows[0]["diff"] == "0.0000" and rows[0]["within_noise"] == "true"

    md = (folder / "report" / "demo.md").read_text()
    assert "| NM | 000 | 090 | 180 |" in md
    assert "| ref (rank-1) | 72.0 | 82.0 | 92.0 |" in md  # seeds 0-2 at 70 / 80 / 90 + 2 * seed
    star = "*" if not low < 0 < high else ""
    assert f"| near | +0.0 | {mean:+.1f}{star} | +0.0 |" in md
    assert not any(r["arm"] == "far" for r in rows)  # far has no probe-view scores
