"""An ablation's runs as rows, and the statistics its report gives (docs/ablations.md).

A row is one run: its table (the ablation), arm, training seed, steps, rank-1 per condition and
the mean, in percent. Rows come from a sweep dir (every ``metrics.json`` under it, with the
run's recorded config) or from committed CSV files, so that the report on ``docs/results``
regenerates every table from the CSVs alone.

The statistics are those of a paired design: every arm of one seed shares the data, the
sampling order and the initial weights of the layers they have in common, so "A against B" is
the per-seed difference ``d_s = A_s - B_s``: its mean, SE = sd(d) / sqrt(n) and the 95%
interval mean +- t(0.975, n - 1) * SE. A difference is "within noise" when the interval holds 0.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gaitgl_lightning.analysis.probe_views import probe_view_scores
from gaitgl_lightning.analysis.tables import RATIO_FREE, mask_setting
from gaitgl_lightning.sweepjobs import flatten_config

#: The per-run CSV's columns around the condition columns (``NM``, ``BG``, ``CL``, ...).
HEAD = ("table", "arm", "seed", "steps")
TAIL = ("mean", "run", "masks", "setting", "strategy", "ratio")
REQUIRED = ("table", "arm", "seed", "mean")
#: Settings that differ between the jobs of one ablation without being what an arm changes.
NOT_SETTINGS = ("name", "ablation", "logger", "paths", "hydra", "callbacks", "resume_sweep")
#: Settings the mask signature stands for (two arms whose masks draw the same are the same).
MASK_SETTINGS = ("mask", "model.mask")

# Two-sided 95% points of Student's t for 1..30 degrees of freedom (used without scipy).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


class ReportError(ValueError):
    """Input the report cannot use (no runs, a CSV without its columns, an unknown arm)."""


def t_critical(dof: int) -> float:
    """t(0.975, dof): the half-width factor of a 95% interval (scipy when installed)."""
    if dof < 1:
        return math.nan
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, dof))
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        return _T975[dof - 1] if dof <= len(_T975) else 1.96 + 2.4 / dof


@dataclass
class RunRow:
    """One run of an ablation; ``scores`` are rank-1 in percent, ``mean`` included."""

    table: str
    arm: str
    seed: int
    steps: int | None
    scores: dict[str, float]
    run: str = ""
    masks: str = ""
    setting: str = ""
    #: the mask strategy the network drew its masks with ("" for a network without masks)
    strategy: str = ""
    #: its dropping ratio d (None where d does not set the masks: no masks, the fixed partition)
    ratio: float | None = None
    #: rank-1 (%) per condition and probe view, ``"NM/000"`` (view protocols; analysis.probe_views)
    probe_views: dict[str, float] = field(default_factory=dict)

    def as_csv(self, conditions: Sequence[str]) -> dict[str, str]:
        row = {"table": self.table, "arm": self.arm, "seed": str(self.seed)}
        row["steps"] = "" if self.steps is None else str(self.steps)
        for name in (*conditions, "mean"):
            value = self.scores.get(name)
            row[name] = "" if value is None else f"{value:.4f}"
        row.update(run=self.run, masks=self.masks, setting=self.setting, strategy=self.strategy)
        row["ratio"] = "" if self.ratio is None else f"{self.ratio:g}"
        return row


# ------------------------------------------------------------------------------ reading
def conditions_of(rows: Iterable[RunRow]) -> list[str]:
    """The condition columns, in first-seen order (``NM, BG, CL`` for CASIA-B)."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row.scores:
            if key != "mean":
                seen.setdefault(key, None)
    return list(seen)


def _scores(result: Mapping[str, Any]) -> dict[str, float]:
    """Rank-1 in percent per condition (in the protocol's order: NM, BG, CL) and the mean."""
    summary = result["summary"]
    order = list((result.get("options") or {}).get("conditions") or [])
    found = [k.split("/")[0] for k in summary if k.endswith("/rank1") and k.count("/") == 1]
    names = [c for c in order if c in found] + [c for c in found if c not in order]
    scores = {c: 100.0 * float(summary[f"{c}/rank1"]) for c in names}
    scores["mean"] = 100.0 * float(summary["rank1"])
    return scores


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _overrides_label(run_dir: Path) -> str:
    """An arm name for a run outside an ablation: its command-line overrides but the seed."""
    overrides = _load_yaml(run_dir / ".hydra" / "overrides.yaml") or []
    kept = [o for o in overrides if not str(o).lstrip("+").startswith(("seed=", "hydra."))]
    return ",".join(str(o) for o in kept) or "default"


@dataclass
class _Found:
    row: RunRow
    config: dict[str, Any]
    order: tuple[int, str] = (0, "")
    signature: Any = field(default=None)


def _read_run(metrics_file: Path, root: Path) -> _Found | None:
    from gaitgl_lightning.sweepjobs import RESULT_KEY, result_of

    run_dir = metrics_file.parent
    metrics = json.loads(metrics_file.read_text())
    config = _load_yaml(run_dir / ".hydra" / "resolved.yaml") or {}
    task = str(config.get("task", "train"))
    result = result_of(metrics, task) or next(
        (r for k in RESULT_KEY if (r := result_of(metrics, k)) is not None), None
    )
    if result is None:
        return None  # a run without a rank-1 (an interrupted one, a task=extract run)
    ablation = config.get("ablation") or {}
    rel = run_dir.relative_to(root).as_posix() if run_dir != root else run_dir.name
    masks = metrics.get("masks") or {}
    strategy = str(masks.get("strategy") or "")  # what the network drew, not what a group names
    _, ratio = mask_setting(config)
    row = RunRow(
        table=str(ablation.get("name") or root.name),
        arm=str(ablation.get("arm") or _overrides_label(run_dir)),
        seed=int(config.get("seed", 0)),
        steps=metrics.get("steps"),
        scores=_scores(result),
        run=rel,
        masks=str(masks.get("text", "")),
        strategy=strategy,
        ratio=None if not strategy or strategy in RATIO_FREE or math.isnan(ratio) else ratio,
        probe_views=probe_view_scores(result),
    )
    hydra = _load_yaml(run_dir / ".hydra" / "hydra.yaml") or {}
    num = (hydra.get("hydra") or {}).get("job", {}).get("num")
    order = (int(num) if isinstance(num, int) else 0, rel)
    return _Found(row, config, order, masks or None)


def collect_runs(root: str | Path) -> list[RunRow]:
    """Every finished run under ``root`` (a sweep dir, an ablation dir, ``outputs/ablation``),
    in job order; ``setting`` tells arms that run the same thing apart from arms that do not."""
    root = Path(root)
    found = [f for p in sorted(root.rglob("metrics.json")) if (f := _read_run(p, root))]
    found.sort(key=lambda f: f.order)
    _assign_settings(found)
    return [f.row for f in found]


def _is_setting(key: str) -> bool:
    return not any(key == p or key.startswith(f"{p}.") for p in (*NOT_SETTINGS, *MASK_SETTINGS))


def _assign_settings(found: Sequence[_Found]) -> None:
    """``setting``: a hash of what an arm runs (its config without the seed's settings, with the
    masks as the network draws them); two arms with one hash are the same experiment.

    Which settings are the seed's is read off the runs: those that differ between the seeds of
    one arm (``seed`` itself, the sampling seed, paths that name the seed).
    """
    flats = []
    for f in found:
        flat = {k: v for k, v in flatten_config(f.config).items() if _is_setting(k)}
        flats.append({k: str(v).replace(f.row.run, "<run>") for k, v in flat.items()})
    by_arm: dict[tuple[str, str], list[dict[str, str]]] = {}
    for f, flat in zip(found, flats, strict=True):
        by_arm.setdefault((f.row.table, f.row.arm), []).append(flat)
    seeded = {
        key
        for group in by_arm.values()
        for key in set().union(*group)
        if len({g.get(key) for g in group}) > 1
    }
    for f, flat in zip(found, flats, strict=True):
        if not f.config or f.signature is None:
            continue
        kept = {k: v for k, v in flat.items() if k not in seeded}
        payload = json.dumps([f.row.table, kept, f.signature], sort_keys=True, default=str)
        f.row.setting = hashlib.sha1(payload.encode()).hexdigest()[:12]


def read_csv_rows(folder: str | Path) -> list[RunRow]:
    """The rows of every ``*.csv`` directly in ``folder`` (``docs/results/<table>.csv``)."""
    folder = Path(folder)
    rows: list[RunRow] = []
    files = sorted(folder.glob("*.csv"))
    if not files:
        raise ReportError(f"{folder}: no metrics.json below it and no *.csv in it")
    for path in files:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            columns = list(reader.fieldnames or [])
            missing = [c for c in REQUIRED if c not in columns]
            if missing:
                raise ReportError(
                    f"{path}: not a per-run CSV (no column {', '.join(missing)}); give the "
                    "folder of the per-run CSVs (columns table, arm, seed, steps, NM, BG, CL, "
                    "mean, ...)"
                )
            conditions = [c for c in columns if c not in (*HEAD, *TAIL)]
            for n, raw in enumerate(reader, start=2):
                rows.append(_csv_row(raw, conditions, f"{path}:{n}"))
    return rows


def _csv_row(raw: Mapping[str, str], conditions: Sequence[str], where: str) -> RunRow:
    try:
        scores = {c: float(raw[c]) for c in (*conditions, "mean") if raw.get(c) not in ("", None)}
        steps = int(raw["steps"]) if raw.get("steps") else None
        seed = int(raw["seed"])
        ratio = float(raw["ratio"]) if raw.get("ratio") else None
    except ValueError as err:
        raise ReportError(f"{where}: {err}") from None
    return RunRow(
        table=raw["table"],
        arm=raw["arm"],
        seed=seed,
        steps=steps,
        scores=scores,
        run=raw.get("run") or "",
        masks=raw.get("masks") or "",
        setting=raw.get("setting") or "",
        strategy=raw.get("strategy") or "",
        ratio=ratio,
    )


def csv_text(rows: Sequence[RunRow]) -> str:
    """The per-run CSV (one row per run), the form committed under ``docs/results``."""
    import io

    conditions = conditions_of(rows)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*HEAD, *conditions, *TAIL], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row.as_csv(conditions))
    return out.getvalue()


# ------------------------------------------------------------------------------ statistics
@dataclass(frozen=True)
class Spread:
    """mean, sd, n and SE = sd / sqrt(n) of a sample (sd and SE nan for n < 2)."""

    mean: float
    sd: float
    n: int

    @property
    def se(self) -> float:
        return self.sd / math.sqrt(self.n) if self.n >= 2 else math.nan

    @property
    def half_width(self) -> float:
        """Half the 95% interval of the mean: t(0.975, n - 1) * SE."""
        return t_critical(self.n - 1) * self.se

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    @property
    def within_noise(self) -> bool:
        """True when the 95% interval holds 0 (or there is no interval: n < 2)."""
        return not (self.n >= 2 and (self.low > 0 or self.high < 0))

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        n = len(values)
        if n == 0:
            return cls(math.nan, math.nan, 0)
        mean = sum(values) / n
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n >= 2 else math.nan
        return cls(mean, sd, n)


def points(value: float, signed: bool = False) -> str:
    """A number of points as the report words it: two decimals (signed for a difference), "-"
    for none."""
    if math.isnan(value):
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def diff_cell(spread: Spread) -> str:
    """``+d [low, high]``: a paired difference and its 95% interval."""
    if spread.n == 0:
        return "-"
    if spread.n < 2:
        return f"{points(spread.mean, True)} (1 seed)"
    return f"{points(spread.mean, True)} [{points(spread.low, True)}, {points(spread.high, True)}]"


def direction(spread: Spread) -> str:
    """A paired difference in words: within noise, or higher / lower beyond noise (the 95%
    interval excludes 0); one seed gives no interval to judge by."""
    if spread.n < 2:
        return "no interval (one seed)"
    if spread.within_noise:
        return "within noise"
    return "higher beyond noise" if spread.mean > 0 else "lower beyond noise"


@dataclass
class Arm:
    """One arm of a table: its runs by seed; ``same_as`` the arms merged into it (same setting)."""

    name: str
    runs: dict[int, RunRow]
    same_as: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return " = ".join([self.name, *self.same_as])

    def spread(self, column: str) -> Spread:
        return Spread.of([r.scores[column] for r in self.runs.values() if column in r.scores])

    def paired(self, ref: Arm, column: str) -> Spread:
        """The per-seed difference self - ref of a score column over the seeds both have."""
        return Spread.of(self.differences(ref, lambda run: run.scores.get(column)))

    def differences(self, ref: Arm, value: Callable[[RunRow], float | None]) -> list[float]:
        """``value(self's run) - value(ref's run)`` per seed, in seed order, over the seeds
        where both runs have a value: the one pairing every paired statistic uses (a score
        column here, a probe view in ``probe_views.paired_by_view``)."""
        diffs = []
        for seed in sorted(set(self.runs) & set(ref.runs)):
            mine, theirs = value(self.runs[seed]), value(ref.runs[seed])
            if mine is not None and theirs is not None:
                diffs.append(mine - theirs)
        return diffs


@dataclass
class Table:
    """One ablation's arms in run order, its reference arm and its condition columns."""

    name: str
    arms: list[Arm]
    reference: str
    conditions: list[str]
    steps: list[int]
    #: an arm of another table that this one pairs with by seed (``ablation.control``: fig4's
    #: arms against table5's network without masks), when the rows hold that table
    control: Arm | None = None
    #: ``<table>/<arm>`` as the config names it (set even when the rows lack that table)
    control_name: str = ""
    #: each arm's control by arm name: the one ``control`` for every arm, or, for
    #: ``ablation.control: <table>/*``, the arm of the same name in that table
    controls: dict[str, Arm] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return [*self.conditions, "mean"]

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if name == arm.name or name in arm.same_as:
                return arm
        raise ReportError(
            f"table {self.name}: no arm {name!r}; its arms are {[a.name for a in self.arms]}"
        )

    @property
    def ref(self) -> Arm:
        return self.arm(self.reference)

    @property
    def seeds(self) -> list[int]:
        return sorted({s for arm in self.arms for s in arm.runs})


def _ablation_key(table: str, key: str) -> str | None:
    """``ablation.<key>`` of ``conf/ablation/<table>.yaml``, so that CSV rows alone find it."""
    from gaitgl_lightning import config_dir

    path = config_dir() / "ablation" / f"{table}.yaml"
    data = _load_yaml(path) if path.is_file() else None
    value = ((data or {}).get("ablation") or {}).get(key)
    return str(value) if value else None


def default_reference(table: str) -> str | None:
    """The reference arm an ablation config names (``ablation.reference``)."""
    return _ablation_key(table, "reference")


def _attach_controls(tables: Sequence[Table]) -> None:
    """Give each table the arm its config names as ``ablation.control`` (``table5/glcl_nomask``)
    when these rows hold it. Why across tables: an ablation that sweeps one mask setting has no
    arm without masks of its own, and the one it would add is another table's arm run from the
    same budget, data and training seeds, so it pairs by seed as the table's own arms do.

    ``<table>/*`` pairs each arm with the arm of the same name in that table: a study that
    changes one thing for every arm (weight averaging) against the same arms without it."""
    by_name = {t.name: t for t in tables}
    for table in tables:
        name = _ablation_key(table.name, "control")
        if not name:
            continue
        other, _, arm = name.partition("/")
        if not arm:
            raise ReportError(
                f"conf/ablation/{table.name}.yaml: ablation.control is {name!r}; give it as "
                "<table>/<arm>, e.g. table5/glcl_nomask, or <table>/* (each arm's namesake)"
            )
        table.control_name = name
        if other not in by_name:
            continue  # that table is not in these rows: the report notes it
        if arm == "*":
            table.controls = {
                a.name: c for a in table.arms if (c := _namesake(by_name[other], a)) is not None
            }
            continue
        # That table without the arm leaves the control unset; the report notes it.
        with contextlib.suppress(ReportError):
            table.control = by_name[other].arm(arm)
            table.controls = {a.name: table.control for a in table.arms}


def _namesake(table: Table, arm: Arm) -> Arm | None:
    try:
        return table.arm(arm.name)
    except ReportError:
        return None


def build_tables(rows: Sequence[RunRow], reference: str | None = None) -> list[Table]:
    """Group rows into tables and arms (run order kept); arms with one ``setting`` merge into
    the first (a flagged duplicate, not a second point). ``reference`` overrides the default in
    every table that has that arm (a folder such as docs/results holds tables with other arms);
    a reference that no table has is an error.

    A seed that appears twice for one arm (two runs of one job) is an error: the report would
    otherwise pick one silently.
    """
    tables: dict[str, dict[str, Arm]] = {}
    for row in rows:
        arms = tables.setdefault(row.table, {})
        arm = arms.setdefault(row.arm, Arm(row.arm, {}))
        if row.seed in arm.runs:
            raise ReportError(
                f"table {row.table}, arm {row.arm}: two runs of seed {row.seed} "
                f"({arm.runs[row.seed].run or '?'} and {row.run or '?'}); keep one"
            )
        arm.runs[row.seed] = row
    out = []
    for name, arms in tables.items():
        merged = _merge_same_settings(list(arms.values()))
        table_rows = [r for a in arms.values() for r in a.runs.values()]
        own = reference if reference in arms else None
        ref = own or default_reference(name) or merged[0].name
        table = Table(
            name,
            merged,
            ref,
            conditions_of(table_rows),
            sorted({r.steps for r in table_rows if r.steps is not None}),
        )
        table.ref  # noqa: B018 - names the arms when the reference is not one of them
        out.append(table)
    _attach_controls(out)
    if reference and all(t.reference != reference for t in out):
        arms_of = "; ".join(f"{t.name}: {[a.name for a in t.arms]}" for t in out)
        raise ReportError(f"no table has an arm {reference!r}; the arms are {arms_of}")
    return out


def _merge_same_settings(arms: list[Arm]) -> list[Arm]:
    kept: list[Arm] = []
    by_setting: dict[str, Arm] = {}
    for arm in arms:
        settings = {r.setting for r in arm.runs.values()}
        key = settings.pop() if len(settings) == 1 else ""
        if key and key in by_setting:
            by_setting[key].same_as.append(arm.name)
            continue
        if key:
            by_setting[key] = arm
        kept.append(arm)
    return kept


def noise_floor(table: Table) -> dict[str, Any]:
    """The seed-to-seed sd of mean rank-1 per arm, and the sd of the paired difference of mean
    rank-1 for every pair of arms (median and largest), the figures that size an ablation."""
    per_arm = {arm.label: arm.spread("mean").sd for arm in table.arms}
    pairs = {}
    for i, a in enumerate(table.arms):
        for b in table.arms[i + 1 :]:
            sd = a.paired(b, "mean").sd
            if not math.isnan(sd):
                pairs[f"{a.name} - {b.name}"] = sd
    values = sorted(pairs.values())
    return {
        "arm_sd": per_arm,
        "pair_sd": pairs,
        "pair_sd_median": statistics.median(values) if values else math.nan,
        "pair_sd_max": values[-1] if values else math.nan,
    }
