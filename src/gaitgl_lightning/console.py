"""What a run shows on the terminal: one line per log message, a progress bar in steps, and the
results at the end.

Why a module of its own: Lightning, Hydra and rich each print something by default, and what a
user sees at the end of ``train`` / ``eval`` is the package's job (the numbers, the baseline
beside them, the best checkpoint and where the files are), not Lightning's.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from lightning.pytorch.callbacks import RichProgressBar

#: Lightning messages that say nothing the user can act on: product adverts, accelerators this
#: package never uses (the GPU line stays), and a default Lightning takes for our own checkpoints.
_NOISE = ("💡 Tip:", "TPU available:", "HPU available:", "`weights_only` was not set")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_NOISE)


def quiet_lightning() -> None:
    """One line per Lightning message, no adverts, no deprecation warnings from inside Lightning.

    ``import lightning`` gives its ``lightning`` logger a console handler of its own *and* lets
    records propagate, so under Hydra (which configures the root logger) every message printed
    twice. When the root logger has a handler, Lightning's own is removed and Hydra's prints.
    Deprecation warnings raised inside Lightning's code (its use of torch APIs) are for
    Lightning's developers; ours still show.
    """
    root = logging.getLogger()
    package = logging.getLogger("lightning")
    if root.hasHandlers() and package.handlers:
        for handler in list(package.handlers):
            package.removeHandler(handler)
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning.pytorch.trainer.connectors.checkpoint_connector",
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=r"lightning(\.|$)")


class StepProgressBar(RichProgressBar):
    """Rich progress in training steps of ``max_steps`` (the loader is infinite: there are no
    epochs to count), with the loss, sequences per second and the last evaluation's rank-1."""

    #: logged metric -> (label, format) shown next to the bar.
    SHOWN: ClassVar[dict[str, tuple[str, str]]] = {
        "train/loss": ("loss", "{:.3f}"),
        "train/seq_per_s": ("seq/s", "{:.1f}"),
        "val/rank1": ("rank-1", "{:.1%}"),
    }

    @property
    def total_train_batches(self) -> int | float:
        max_steps = self.trainer.max_steps
        return max_steps if max_steps and max_steps > 0 else super().total_train_batches

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        # The bar's label: "step", not Lightning's "Epoch 0" (the loader is infinite). Set on
        # the task Lightning has just made (the label method is private: not overridden).
        if self.progress is not None and self.train_progress_bar_id is not None:
            self.progress.update(self.train_progress_bar_id, description="step")
        self._update(self.train_progress_bar_id, trainer.global_step)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self._update(self.train_progress_bar_id, trainer.global_step)

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        shown: dict[str, Any] = {}
        for key, (label, fmt) in self.SHOWN.items():
            value = trainer.callback_metrics.get(key)
            if value is not None:
                shown[label] = fmt.format(float(value))
        return shown


# --------------------------------------------------------------------------------- results
def _summary(entry: Any) -> dict[str, float]:
    if not isinstance(entry, Mapping):
        return {}
    return {str(k): float(v) for k, v in (entry.get("summary") or {}).items()}


def _column_label(key: str) -> str:
    """``NM/rank1`` -> ``NM``; ``rank1`` -> ``mean rank-1`` when conditions precede it."""
    return key.removesuffix("/rank1")


def results_table(metrics: Mapping[str, Any]) -> Any:
    """The run's results as one rich table: a row per result (final, best checkpoint, task=eval,
    GEI baseline), a column per summary metric (rank-1 per condition and their mean, or the
    retrieval metrics), in percent. None when the run holds no result to show."""
    from rich.table import Table

    rows = {
        "GaitGL, final": _summary(metrics.get("final")),
        "GaitGL, best checkpoint": _summary(metrics.get("best")),
        "GaitGL": _summary(metrics.get("eval")),
        "GEI baseline (same split)": _summary(metrics.get("baseline_gei")),
    }
    rows = {name: row for name, row in rows.items() if row}
    if not rows:
        return None
    keys: list[str] = []
    for row in rows.values():
        keys.extend(k for k in row if k not in keys)
    per_condition = any(k.endswith("/rank1") for k in keys)
    if per_condition:  # conditions first, their mean last: the order a paper's table reads
        keys.sort(key=lambda k: k == "rank1")
    first: Any = metrics.get("final") or metrics.get("eval") or {}
    title = "results"
    if isinstance(first, Mapping) and first.get("protocol"):
        title = f"{first['protocol']} protocol ({first.get('variant', '')}), %"
    table = Table(title=title)
    table.add_column("")
    for key in keys:
        label = "mean rank-1" if key == "rank1" and per_condition else _column_label(key)
        table.add_column(label, justify="right", style="bold" if key == "rank1" else None)
    for name, row in rows.items():
        table.add_row(name, *(_cell(row, k) for k in keys))
    return table


def _cell(row: Mapping[str, float], key: str) -> str:
    """Accuracies in percent; GREW's distance statistics (``dist_*``, hidden labels) as they are."""
    if key not in row:
        return "-"
    return f"{row[key]:.4g}" if key.startswith("dist_") else f"{100 * row[key]:.1f}"


def _submissions(metrics: Mapping[str, Any]) -> list[str]:
    """Submission files a run wrote (``submission`` at the top or in a result entry)."""
    found = [metrics.get("submission")]
    found += [v.get("submission") for v in metrics.values() if isinstance(v, Mapping)]
    return list(dict.fromkeys(str(p) for p in found if isinstance(p, str) and p))


def print_run_summary(
    metrics: Mapping[str, Any], run_dir: Path, metrics_file: Path | None, console: Any = None
) -> None:
    """Print what the run measured and where its files are (the end of ``train`` / ``eval``)."""
    from rich.console import Console

    console = console or Console()
    console.print()
    table = results_table(metrics)
    if table is not None:
        console.print(table)
    else:
        console.print("no evaluation result (see the log above)")
    lines: list[tuple[str, str]] = []
    for path in _submissions(metrics):
        lines.append(("submission", path))
    best = (metrics.get("best") or {}).get("checkpoint") if metrics.get("best") else None
    if best:
        lines.append(("best checkpoint", str(best)))
    if metrics.get("checkpoint"):
        lines.append(("checkpoint", str(metrics["checkpoint"])))
    lines.append(("run dir", str(run_dir)))
    if metrics_file is not None:
        lines.append(("every number", str(metrics_file)))
    csv = run_dir / "csv" / "metrics.csv"
    if csv.is_file():
        lines.append(("curves", f"{csv} (make notebooks)"))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        console.print(f"{key:<{width}}  {value}", markup=False, highlight=False, soft_wrap=True)
