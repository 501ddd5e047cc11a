"""The ablation report: per arm mean +- SE over seeds, paired differences with 95% CIs.

    python -m gaitgl_lightning.analysis.report outputs/ablation/table5      # a sweep dir
    python -m gaitgl_lightning.analysis.report outputs/ablation             # every ablation
    python -m gaitgl_lightning.analysis.report docs/results                 # the committed CSVs
    python -m gaitgl_lightning.analysis.report outputs/ablation/table5 --ref strip_v

On a sweep dir it reads every run's ``metrics.json`` and writes the per-run CSV
``<dir>/runs.csv`` (the form committed as ``docs/results/<table>.csv``); on a folder of CSVs it
reads those alone. Per table it prints a rich table, says in words which differences are within
noise, prints the noise floor, and writes ``<table>.md``, ``<table>-summary.csv`` and
``<table>.png`` into ``<dir>/report`` (``--out``). How to read it: docs/ablations.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from gaitgl_lightning.analysis import probe_views, ratio_sweep
from gaitgl_lightning.analysis.ablation import (
    Arm,
    ReportError,
    RunRow,
    Spread,
    Table,
    build_tables,
    collect_runs,
    csv_text,
    diff_cell,
    direction,
    noise_floor,
    points,
    read_csv_rows,
)
from gaitgl_lightning.fileio import atomic_path, atomic_write_text

RUNS_CSV = "runs.csv"


# ------------------------------------------------------------------------------ loading
def load_rows(path: Path) -> tuple[list[RunRow], bool]:
    """The rows under ``path`` and whether they came from runs (True) or from CSV files."""
    if not path.is_dir():
        raise ReportError(f"{path}: no such folder (give a sweep dir or a folder of CSVs)")
    if any(path.rglob("metrics.json")):
        rows = collect_runs(path)
        if not rows:
            raise ReportError(f"{path}: no finished run (metrics.json with a rank-1) below it")
        return rows, True
    rows = read_csv_rows(path)
    probe_views.attach(rows, path)
    return rows, False


# ------------------------------------------------------------------------------ wording
def arm_cell(spread: Spread) -> str:
    """``mean ± SE`` (the mean alone for one seed)."""
    if spread.n == 0:
        return "-"
    return points(spread.mean) if spread.n < 2 else f"{spread.mean:.2f} ± {spread.se:.2f}"


def verdicts(table: Table, against: Mapping[str, Arm] | None = None) -> list[str]:
    """One sentence per arm against the reference (or, per arm name, ``against``: the table's
    controls), in words: within noise or not, and where."""
    lines = []
    for arm in table.arms:
        ref = table.ref if against is None else against.get(arm.name)
        if ref is None or arm is ref:
            continue
        name = ref.label if against is None else control_label(table, ref)
        mean = arm.paired(ref, "mean")
        if mean.n == 0:
            lines.append(f"{arm.label}: no seed in common with {name}, no paired difference.")
            continue
        head = f"{arm.label} - {name}: {diff_cell(mean)} points (n = {mean.n})"
        if mean.n < 2:
            lines.append(f"{head}: one paired seed, no interval; run more seeds.")
            continue
        if mean.within_noise:
            verdict = "within noise (the 95% CI contains 0)"
        else:
            side = "above" if mean.mean > 0 else "below"
            verdict = f"{side} {name} beyond noise (the 95% CI excludes 0)"
        by_condition = ", ".join(f"{c} {direction(arm.paired(ref, c))}" for c in table.conditions)
        lines.append(f"{head}: {verdict}" + (f"; {by_condition}." if by_condition else "."))
    return lines


def control_label(table: Table, control: Arm) -> str:
    """``<table>/<arm>`` of a control (another table's arm)."""
    return f"{table.control_name.partition('/')[0]}/{control.label}"


def notes(table: Table) -> list[str]:
    """Merged duplicate arms and arms that miss seeds the others have."""
    out = []
    for arm in table.arms:
        if arm.same_as:
            masks = next(iter(arm.runs.values())).masks
            out.append(
                f"{', '.join(arm.same_as)} run exactly what {arm.name} runs (the same settings "
                f"and the same masks: {masks or 'see metrics.json'}): shown once, as {arm.label}."
            )
    if table.control_name and not table.controls:
        out.append(
            f"no paired difference to the control {table.control_name}: these rows lack it "
            "(run the report on a folder that holds both tables, e.g. docs/results)."
        )
    seeds = table.seeds
    for arm in table.arms:
        missing = sorted(set(seeds) - set(arm.runs))
        if missing:
            out.append(f"{arm.label} lacks seed(s) {', '.join(map(str, missing))}.")
    return out


def noise_lines(table: Table) -> list[str]:
    """The noise floor: seed-to-seed sd of mean rank-1 per arm, sd of paired differences."""
    floor = noise_floor(table)
    arm_sd = ", ".join(f"{k} {points(v)}" for k, v in floor["arm_sd"].items())
    lines = [f"seed-to-seed sd of mean rank-1: {arm_sd}"]
    if floor["pair_sd"]:
        ref = table.ref.name
        to_ref = ", ".join(
            f"{_other(k, ref)} {points(v)}" for k, v in floor["pair_sd"].items() if _other(k, ref)
        )
        lines.append(
            f"sd of the paired difference of mean rank-1: median {points(floor['pair_sd_median'])}, "
            f"largest {points(floor['pair_sd_max'])} over {len(floor['pair_sd'])} pairs of arms"
            + (f"; against {ref}: {to_ref}" if to_ref else "")
        )
    return lines + [
        f"where the seed sd comes from: {x}" for x in probe_views.lines(table.arms, table.ref)
    ]


def _other(pair: str, ref: str) -> str:
    """The arm paired with ``ref`` in a ``"a - b"`` key, or "" when ``ref`` is not in it."""
    a, _, b = pair.partition(" - ")
    return b if a == ref else a if b == ref else ""


def describe(table: Table) -> str:
    """The line above a table: seeds, steps, reference."""
    seeds = table.seeds
    span = f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else seeds
    steps = ", ".join(map(str, table.steps)) or "?"
    return (
        f"{table.name}: {len(seeds)} training seed(s) ({span}), {steps} steps, reference "
        f"{table.ref.label}. Cells: rank-1 (%) mean ± SE over seeds; Δ: the paired difference "
        "to the reference, mean [95% CI, t with n - 1 dof]."
    )


# ------------------------------------------------------------------------------ outputs
def _rows(table: Table) -> list[list[str]]:
    ref = table.ref
    body = []
    for arm in table.arms:
        cells = [arm.label, str(len(arm.runs))]
        cells += [arm_cell(arm.spread(c)) for c in table.columns]
        if arm is ref:
            cells += ["(reference)"] + [""] * len(table.conditions)
        else:
            cells += [diff_cell(arm.paired(ref, c)) for c in ("mean", *table.conditions)]
        body.append(cells)
    return body


def _control_rows(table: Table) -> list[list[str]]:
    """Per arm with a control: the control, the seeds they share, the paired differences."""
    rows = []
    for arm in table.arms:
        control = table.controls.get(arm.name)
        if control is None:
            continue
        cells = [arm.label, control_label(table, control), str(arm.paired(control, "mean").n)]
        rows.append(
            cells + [diff_cell(arm.paired(control, c)) for c in ("mean", *table.conditions)]
        )
    return rows


def _control_header(table: Table) -> list[str]:
    return ["arm", "control", "n", "Δ mean", *(f"Δ {c}" for c in table.conditions)]


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def control_section(table: Table) -> list[str]:
    """Markdown lines: the paired differences of every arm to its control, in a table and in
    words; nothing when the rows lack the control."""
    if not table.controls:
        return []
    lines = [
        "",
        f"Against the control {table.control_name} (paired by seed: Δ = arm - control, mean "
        "[95% CI]):",
        "",
        *_md_table(_control_header(table), _control_rows(table)),
        "",
    ]
    return lines + [f"- {line}" for line in verdicts(table, table.controls)]


#: The per-view CSV's columns: one row per arm x probe view, the paired difference to the
#: reference over the seeds both arms have scored at that view.
VIEW_COLUMNS = ("table", "arm", "reference", "condition", "probe_view", "n", "diff", "ci_low",
                "ci_high", "within_noise")  # fmt: skip


def views_csv(table: Table) -> str:
    """Every arm's paired difference to the reference per probe view, with its 95% interval;
    the header alone when no run has probe-view scores."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(VIEW_COLUMNS)
    ref = table.ref
    for arm in table.arms:
        if arm is ref:
            continue
        for unit, d in probe_views.paired_by_view(arm, ref).items():
            condition, _, view = unit.partition("/")
            judged = str(d.within_noise).lower() if d.n >= 2 else ""
            cells = [_fmt(x) for x in (d.mean, d.low, d.high)]
            writer.writerow([table.name, arm.name, ref.name, condition, view, d.n, *cells, judged])
    return out.getvalue()


def view_section(table: Table) -> list[str]:
    """Markdown lines: per condition, the reference's rank-1 at each probe view and every other
    arm's paired difference to it (``*``: the 95% interval excludes 0); nothing without views."""
    ref = table.ref
    others = [a for a in table.arms if a is not ref]
    views = probe_views.views_by_condition(table.arms, table.conditions)
    if not views or not others:
        return []
    by_arm = {a.name: probe_views.paired_by_view(a, ref) for a in others}
    tests = sum(d.n >= 2 for v in by_arm.values() for d in v.values())
    lines = [
        "",
        f"By probe view: {ref.label}'s rank-1 (mean over seeds), then each arm's paired "
        "difference to it (mean over seeds; `*` where the 95% interval excludes 0). Each cell is "
        f"its own test: of these {tests} intervals, about one in twenty excludes 0 by chance "
        "alone; they are in the `-views.csv` file. A cell of one seed has no interval.",
    ]
    for condition, names in views.items():
        units = [f"{condition}/{v}" for v in names]
        ref_means = [
            Spread.of([r.probe_views[u] for r in ref.runs.values() if u in r.probe_views])
            for u in units
        ]
        rows = [[f"{ref.label} (rank-1)", *(_fmt_mean(m) for m in ref_means)]]
        rows += [[a.label, *(_view_cell(by_arm[a.name].get(u)) for u in units)] for a in others]
        lines += ["", *_md_table([condition, *names], rows)]
    return lines


def _fmt_mean(spread: Spread) -> str:
    return f"{spread.mean:.1f}" if spread.n else "-"


def _view_cell(spread: Spread | None) -> str:
    if spread is None or spread.n == 0:
        return "-"
    mark = "*" if spread.n >= 2 and not spread.within_noise else ""
    return f"{spread.mean:+.1f}{mark}"


def _header(table: Table) -> list[str]:
    return ["arm", "n", *table.columns, "Δ mean", *(f"Δ {c}" for c in table.conditions)]


def markdown(table: Table) -> str:
    """The table as Markdown, with the verdicts, notes and noise floor below it."""
    lines = [f"### {table.name}", "", describe(table), ""]
    lines += _md_table(_header(table), _rows(table))
    lines.append("")
    lines += [f"- {line}" for line in (*verdicts(table), *notes(table), *noise_lines(table))]
    lines += control_section(table)
    lines += view_section(table)
    curve_lines = ratio_sweep.lines(table)
    if curve_lines:
        lines += ["", "Against the dropping ratio d (per strategy):", ""]
        lines += [f"- {line}" for line in curve_lines]
    return "\n".join(lines) + "\n"


def summary_csv(table: Table) -> str:
    """Per arm: n, mean and SE per column, paired difference with its interval and verdict."""
    ref = table.ref
    fields = ["table", "arm", "same_as", "n", "reference"]
    for c in table.columns:
        fields += [c, f"{c}_se", f"{c}_diff", f"{c}_ci_low", f"{c}_ci_high", f"{c}_within_noise"]
    if table.controls:
        fields += ["control", *(f"{c}_vs_control{s}" for c in table.columns for s in _VS)]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for arm in table.arms:
        row: dict[str, object] = {
            "table": table.name,
            "arm": arm.name,
            "same_as": " ".join(arm.same_as),
            "n": len(arm.runs),
            "reference": ref.name,
        }
        for c in table.columns:
            spread, diff = arm.spread(c), arm.paired(ref, c)
            row[c], row[f"{c}_se"] = _fmt(spread.mean), _fmt(spread.se)
            if arm is not ref:
                row[f"{c}_diff"], row[f"{c}_ci_low"] = _fmt(diff.mean), _fmt(diff.low)
                row[f"{c}_ci_high"] = _fmt(diff.high)
                row[f"{c}_within_noise"] = str(diff.within_noise).lower() if diff.n >= 2 else ""
        control = table.controls.get(arm.name)
        if control is not None:
            row["control"] = control_label(table, control)
            for c in table.columns:
                diff = arm.paired(control, c)
                for suffix, value in zip(_VS, (diff.mean, diff.low, diff.high), strict=True):
                    row[f"{c}_vs_control{suffix}"] = _fmt(value)
        writer.writerow(row)
    return out.getvalue()


#: Suffixes of the summary CSV's columns against the control: difference, 95% CI low, high.
_VS = ("", "_ci_low", "_ci_high")


def _fmt(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.4f}"


def plot(table: Table, path: Path) -> Path:
    """Two panels: mean rank-1 ± SE per arm, and the paired difference to the reference with
    its 95% CI (the zero line is "no effect"; a bar that crosses it is within noise)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms: list[Arm] = table.arms
    ref = table.ref
    x = list(range(len(arms)))
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8.0, 1.1 * len(arms) + 4), 4.2))
    for c, marker in zip(table.columns, ("o", "s", "^", "D", "v", "P"), strict=False):
        spreads = [a.spread(c) for a in arms]
        left.errorbar(
            x,
            [s.mean for s in spreads],
            yerr=[0 if math.isnan(s.se) else s.se for s in spreads],
            marker=marker,
            capsize=3,
            linestyle="none",
            label=c,
        )
    left.set_ylabel("rank-1 (%), mean ± SE over seeds")
    left.legend(fontsize=8)
    others = [(i, a) for i, a in enumerate(arms) if a is not ref]
    diffs = [a.paired(ref, "mean") for _, a in others]
    right.axhline(0.0, color="grey", linewidth=1)
    right.errorbar(
        [i for i, _ in others],
        [d.mean for d in diffs],
        yerr=[0 if math.isnan(d.half_width) else d.half_width for d in diffs],
        marker="o",
        capsize=4,
        linestyle="none",
        color="black",
    )
    right.set_ylabel(f"mean rank-1 − {ref.label} (points, 95% CI)")
    for ax in (left, right):
        ax.set_xticks(x, [a.label for a in arms], rotation=35, ha="right", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{table.name}: {len(table.seeds)} seed(s), paired by seed")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def print_table(table: Table) -> None:
    """The rich table on screen, then the verdicts, notes and noise floor."""
    from rich.console import Console
    from rich.table import Table as RichTable

    console = Console()
    if not console.is_terminal:  # a log file or a pipe: no wrapping inside the cells
        console = Console(width=max(120, 14 * len(_header(table))))
    shown = RichTable(title=describe(table), title_justify="left")
    for i, name in enumerate(_header(table)):
        shown.add_column(name, justify="left" if i == 0 else "right")
    for row in _rows(table):
        shown.add_row(*row)
    console.print(shown)
    for line in (*verdicts(table), *notes(table)):
        console.print(f"  {line}", highlight=False)
    for line in noise_lines(table):
        console.print(f"  noise floor: {line}", highlight=False)
    if table.controls:
        for line in verdicts(table, table.controls):
            console.print(f"  against the control: {line}", highlight=False)
    for line in ratio_sweep.lines(table):
        console.print(f"  against d: {line}", highlight=False)


def write_outputs(table: Table, out: Path, draw: bool = True) -> list[Path]:
    """``<table>.md``, ``<table>-summary.csv``, ``<table>-views.csv`` (runs with probe-view
    scores), and (``draw``) ``<table>.png`` under ``out``, and ``<table>-ratio.png`` for a table
    that sweeps the dropping ratio."""
    files = [out / f"{table.name}.md", out / f"{table.name}-summary.csv"]
    atomic_write_text(files[0], markdown(table))
    atomic_write_text(files[1], summary_csv(table))
    views = views_csv(table)
    if views.count("\n") > 1:  # more than the header
        files.append(out / f"{table.name}-views.csv")
        atomic_write_text(files[-1], views)
    if draw:
        files.append(plot(table, out / f"{table.name}.png"))
        curve = ratio_sweep.plot(table, out / f"{table.name}-ratio.png")
        files += [curve] if curve else []
    return files


def report(
    path: str | Path,
    reference: str | None = None,
    out: str | Path | None = None,
    draw: bool = True,
    show: bool = True,
) -> list[Table]:
    """Read ``path``, write the per-run CSV (from runs) and every table's files; return them."""
    path = Path(path)
    rows, from_runs = load_rows(path)
    if from_runs:
        atomic_write_text(path / RUNS_CSV, csv_text(rows))
        if any(r.probe_views for r in rows):
            atomic_write_text(path / probe_views.FOLDER / RUNS_CSV, probe_views.csv_text(rows))
    tables = build_tables(rows, reference)
    target = Path(out) if out is not None else path / "report"
    for table in tables:
        files = write_outputs(table, target, draw)
        if show:
            print_table(table)
            print(f"  files: {', '.join(str(f) for f in files)}")
    if show and from_runs:
        print(f"per-run CSV: {path / RUNS_CSV} (rank-1 per probe view: {probe_views.FOLDER}/)")
    return tables


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gaitgl_lightning.analysis.report",
        description="Per-arm mean ± SE and paired differences with 95 % CIs of an ablation.",
    )
    parser.add_argument("path", type=Path, help="a sweep dir, or a folder of per-run CSVs")
    parser.add_argument("--ref", help="the reference arm (default: the ablation's own)")
    parser.add_argument("--out", type=Path, help="where the tables go (default: <path>/report)")
    parser.add_argument("--no-plot", action="store_true", help="skip the figure")
    args = parser.parse_args(argv)
    try:
        report(args.path, args.ref, args.out, draw=not args.no_plot)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
