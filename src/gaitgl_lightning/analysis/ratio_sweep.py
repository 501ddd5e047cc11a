"""The dropping-ratio sweep of an ablation (the paper's Fig. 4), read as a curve over d.

The paper reads its Fig. 4 as "the accuracy curve of a mask strategy with different dropping
ratios is stable". Two paired statistics test that on an ablation's runs, per mask strategy,
over the seeds that have every ratio of the strategy (so every seed's curve has the same points):

- the **trend**: the least-squares slope of rank-1 against d, fitted per seed, as points per 0.1
  of d, with the 95% interval of its mean over seeds (a monotone change: rises or falls with d);
- **any difference** among the ratios: the repeated-measures F test (ratio x seed, the ratio x
  seed interaction as the error), which also sees a curve that peaks or dips in the middle;
- and, for two strategies over the same ratios, their **gap** averaged over d, paired by seed.

Neither proves a flat curve: "within noise" says no change larger than the interval was seen;
the interval says how large a change could still hide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gaitgl_lightning.analysis.ablation import Arm, Spread, Table, diff_cell, direction, points
from gaitgl_lightning.analysis.plots import CONDITION_COLOURS, agg_pyplot
from gaitgl_lightning.evaluation.report import save_figure

#: The fewest distinct ratios a strategy needs to be read as a curve.
MIN_RATIOS = 3
#: The slope is given per this much of d (0.1: one step of the paper's grid).
SLOPE_UNIT = 0.1


@dataclass(frozen=True)
class Curve:
    """One strategy's arms in order of d."""

    strategy: str
    points: tuple[tuple[float, Arm], ...]

    @property
    def ratios(self) -> list[float]:
        return [d for d, _ in self.points]

    @property
    def seeds(self) -> list[int]:
        """The seeds that have every ratio (the paired design of the curve)."""
        common = set.intersection(*(set(arm.runs) for _, arm in self.points))
        return sorted(common)

    def values(self, column: str) -> list[list[float]]:
        """``[seed][ratio]`` scores of ``column`` over :attr:`seeds`."""
        return [[arm.runs[s].scores[column] for _, arm in self.points] for s in self.seeds]


@dataclass(frozen=True)
class FTest:
    """A repeated-measures F test: F, its two degrees of freedom and p (NaN without scipy)."""

    f: float
    dof: tuple[int, int]
    p: float


def curves(table: Table) -> list[Curve]:
    """The strategies of ``table`` whose arms each run one ratio, with >= MIN_RATIOS ratios."""
    by_strategy: dict[str, dict[float, Arm]] = {}
    for arm in table.arms:
        rows = list(arm.runs.values())
        strategies = {r.strategy for r in rows}
        ratios = {r.ratio for r in rows}
        if len(strategies) != 1 or len(ratios) != 1 or None in ratios or "" in strategies:
            continue
        (ratio,) = ratios
        assert ratio is not None
        by_strategy.setdefault(strategies.pop(), {}).setdefault(ratio, arm)
    return [
        Curve(name, tuple(sorted(arms.items(), key=lambda p: p[0])))
        for name, arms in by_strategy.items()
        if len(arms) >= MIN_RATIOS
    ]


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def trend(curve: Curve, column: str = "mean") -> Spread:
    """The per-seed least-squares slope of ``column`` against d, in points per SLOPE_UNIT."""
    return Spread.of([_slope(curve.ratios, ys) * SLOPE_UNIT for ys in curve.values(column)])


def any_difference(curve: Curve, column: str = "mean") -> FTest | None:
    """Repeated-measures one-way F test over the ratios (None with fewer than 2 seeds)."""
    data = curve.values(column)
    n, k = len(data), len(curve.points)
    if n < 2:
        return None
    grand = sum(map(sum, data)) / (n * k)
    ratio_means = [sum(row[j] for row in data) / n for j in range(k)]
    seed_means = [sum(row) / k for row in data]
    ss_ratio = n * sum((m - grand) ** 2 for m in ratio_means)
    ss_error = sum(
        (data[i][j] - ratio_means[j] - seed_means[i] + grand) ** 2
        for i in range(n)
        for j in range(k)
    )
    dof = (k - 1, (k - 1) * (n - 1))
    if ss_error == 0:
        return FTest(math.inf if ss_ratio else math.nan, dof, 0.0 if ss_ratio else math.nan)
    f = (ss_ratio / dof[0]) / (ss_error / dof[1])
    return FTest(f, dof, _f_sf(f, *dof))


def _f_sf(f: float, d1: int, d2: int) -> float:
    try:
        from scipy.stats import f as f_dist
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        return math.nan
    return float(f_dist.sf(f, d1, d2))


def gap(first: Curve, second: Curve, column: str = "mean") -> Spread:
    """``first - second`` averaged over their ratios, per seed that has every ratio of both:
    which strategy is higher across the sweep, in one comparison instead of one per ratio.
    Both must sweep the same ratios."""
    if first.ratios != second.ratios:
        raise ValueError(f"{first.strategy} and {second.strategy} sweep other ratios")
    seeds = sorted(set(first.seeds) & set(second.seeds))

    def level(curve: Curve, seed: int) -> float:
        return sum(arm.runs[seed].scores[column] for _, arm in curve.points) / len(curve.points)

    return Spread.of([level(first, s) - level(second, s) for s in seeds])


def trend_words(spread: Spread) -> str:
    """``+0.31 [-0.52, +1.14] points per 0.1 of d: ...`` in words."""
    if spread.n < 2:
        return f"{points(spread.mean, True)} points per {SLOPE_UNIT:g} of d (1 seed, no interval)"
    cell = diff_cell(spread)
    if spread.within_noise:
        verdict = "no trend beyond noise"
    else:
        verdict = "rises with d beyond noise" if spread.mean > 0 else "falls with d beyond noise"
    return f"{cell} points per {SLOPE_UNIT:g} of d, {verdict}"


def f_words(test: FTest | None) -> str:
    if test is None:
        return "no test (one seed)"
    head = f"F({test.dof[0]}, {test.dof[1]}) = {test.f:.2f}"
    if math.isnan(test.p):
        return f"{head}, p not computed (needs scipy)"
    verdict = "the ratios differ beyond noise" if test.p < 0.05 else "no difference beyond noise"
    return f"{head}, p = {test.p:.3f}: {verdict}"


def lines(table: Table) -> list[str]:
    """Per strategy: its range of d, the seeds read, the trend and the F test, for the mean and
    per condition (the trend only)."""
    out = []
    for curve in curves(table):
        seeds = curve.seeds
        ds = ", ".join(f"{d:g}" for d in curve.ratios)
        head = f"{curve.strategy} over d = {ds}"
        if not seeds:
            out.append(f"{head}: no seed has every ratio yet; no curve to test.")
            continue
        means = [sum(col) / len(col) for col in zip(*curve.values("mean"), strict=True)]
        by_condition = "; ".join(f"{c} {trend_words(trend(curve, c))}" for c in table.conditions)
        out.append(
            f"{head} (n = {len(seeds)} seed(s) with every ratio; means "
            f"{min(means):.2f}-{max(means):.2f}): trend {trend_words(trend(curve))}; "
            f"{f_words(any_difference(curve))}"
            + (f". By condition: {by_condition}." if by_condition else ".")
        )
    return out + gap_lines(table)


def gap_lines(table: Table) -> list[str]:
    """Per pair of strategies that sweep the same ratios: their gap averaged over d, in words."""
    found = [c for c in curves(table) if c.seeds]
    out = []
    for i, first in enumerate(found):
        for second in found[i + 1 :]:
            if first.ratios != second.ratios:
                continue
            mean = gap(first, second)
            if mean.n == 0:
                continue
            by_condition = "; ".join(
                f"{c} {diff_cell(gap(first, second, c))}" for c in table.conditions
            )
            out.append(
                f"{first.strategy} - {second.strategy}, averaged over d (n = {mean.n}): "
                f"{diff_cell(mean)} points, {direction(mean)}"
                + (f". By condition: {by_condition}." if by_condition else ".")
            )
    return out


def control_level(table: Table, curve: Curve, column: str) -> float:
    """The control's mean of ``column`` over the curve's seeds (NaN without a control, or when
    the control lacks one of them)."""
    control = table.control
    if control is None or not set(curve.seeds) <= set(control.runs):
        return math.nan
    return Spread.of([control.runs[s].scores[column] for s in curve.seeds]).mean


def plot(table: Table, path: Path) -> Path | None:
    """The paper's Fig. 4 from ``table``: a panel per strategy, NM / BG / CL and their mean
    against d, mean ± SE over the seeds that have every ratio (so that each point stands for
    the same seeds); the control, where the table has one, as dashed lines at its mean over
    those seeds. None when no strategy has a complete seed yet."""
    found = [c for c in curves(table) if c.seeds]
    if not found:
        return None
    plt = agg_pyplot()
    fig, axes = plt.subplots(
        1, len(found), figsize=(4.4 * len(found), 3.9), squeeze=False, sharey=True
    )
    for ax, curve in zip(axes[0], found, strict=True):
        for column in table.columns:
            spreads = [Spread.of(list(v)) for v in zip(*curve.values(column), strict=True)]
            colour = CONDITION_COLOURS.get(column)
            ax.errorbar(
                curve.ratios,
                [s.mean for s in spreads],
                yerr=[0.0 if math.isnan(s.se) else s.se for s in spreads],
                marker="o",
                capsize=3,
                color=colour,
                linewidth=2.2 if column == "mean" else 1.4,
                label=column,
            )
            level = control_level(table, curve, column)
            if not math.isnan(level):
                ax.axhline(level, color=colour, linestyle="--", linewidth=1)
        ax.set(title=f"{curve.strategy} ({len(curve.seeds)} seed(s))", xlabel="dropping ratio d")
        ax.set_xticks(curve.ratios)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("rank-1 (%), mean ± SE over seeds")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    control = f"; dashed: {table.control_name}" if table.control is not None else ""
    fig.suptitle(f"{table.name}: rank-1 against the dropping ratio d{control}", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return save_figure(fig, path)
