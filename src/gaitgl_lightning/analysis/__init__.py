"""Read what runs logged and draw it: the helpers behind ``notebooks/``.

Loaders work from a run's own files (``metrics.json``, the CSV logger's ``metrics.csv``, the
Hydra config) or from a W&B run folder alone, offline, with no account. Plots save images
through the evaluation report code. This package needs pandas and scikit-learn (the
``notebooks`` extra); the rest of gaitgl_lightning does not import it.
"""

from __future__ import annotations

from gaitgl_lightning.analysis.embeddings import (
    EmbeddingSet,
    checkpoint_embeddings,
    checkpoints_by_model,
    choose_sequences,
    class_compactness,
    tsne_2d,
)
from gaitgl_lightning.analysis.history import load_history, read_csv_history, read_wandb_history
from gaitgl_lightning.analysis.plots import (
    plot_embeddings_2d,
    plot_eval_curves,
    plot_ratio_sweep,
    plot_runs_metric,
    plot_training_curves,
)
from gaitgl_lightning.analysis.runs import (
    RunInfo,
    find_runs,
    latest_run,
    load_run,
    run_labels,
    runs_table,
    varying_settings,
)
from gaitgl_lightning.analysis.tables import PAPER_TABLE5, mask_strategy_table, model_kind
from gaitgl_lightning.analysis.wandb_offline import WandbOfflineRun, load_wandb_run

__all__ = [
    "PAPER_TABLE5",
    "EmbeddingSet",
    "RunInfo",
    "WandbOfflineRun",
    "checkpoint_embeddings",
    "checkpoints_by_model",
    "choose_sequences",
    "class_compactness",
    "find_runs",
    "latest_run",
    "load_history",
    "load_run",
    "load_wandb_run",
    "mask_strategy_table",
    "model_kind",
    "plot_embeddings_2d",
    "plot_eval_curves",
    "plot_ratio_sweep",
    "plot_runs_metric",
    "plot_training_curves",
    "read_csv_history",
    "read_wandb_history",
    "run_labels",
    "runs_table",
    "tsne_2d",
    "varying_settings",
]
