"""Embeddings of a few test subjects from a checkpoint, and their 2-D t-SNE map (Fig. 5).

The paper draws 10 test identities x 20 sequences for a global-only, a local-only and a GLCL
model. The same seed picks the same sequences for every checkpoint of one dataset, so the panels
of several models show the same points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from gaitgl_lightning.analysis.runs import RunInfo
from gaitgl_lightning.analysis.tables import model_kind, table5_row
from gaitgl_lightning.data.datasets import EvalSequences, collate
from gaitgl_lightning.data.meta import SequenceMeta
from gaitgl_lightning.data.store import StoreError
from gaitgl_lightning.datamodule import data_module_from_config
from gaitgl_lightning.models import silhouettes_to_input
from gaitgl_lightning.runtime.checkpoints import load_network


@dataclass
class EmbeddingSet:
    """Flattened embeddings [n, C * parts] with the metadata of each row."""

    embeddings: np.ndarray
    subjects: np.ndarray
    types: np.ndarray
    views: np.ndarray
    checkpoint: str
    step: int


def choose_sequences(
    meta: SequenceMeta, subjects: int = 10, per_subject: int = 20, seed: int = 0
) -> np.ndarray:
    """Rows of ``meta``: ``subjects`` random subjects, up to ``per_subject`` random sequences
    each (fewer where a subject has fewer), sorted. Seeded, independent of any model."""
    rng = np.random.default_rng(seed)
    ids = np.unique(meta.subjects)
    chosen = rng.choice(ids, size=min(subjects, len(ids)), replace=False)
    rows: list[np.ndarray] = []
    for subject in sorted(chosen):
        own = np.flatnonzero(meta.subjects == subject)
        rows.append(rng.choice(own, size=min(per_subject, len(own)), replace=False))
    return np.sort(np.concatenate(rows))


@torch.no_grad()
def embed_sequences(
    net: torch.nn.Module, dataset: EvalSequences, rows: np.ndarray, batch_size: int = 16
) -> np.ndarray:
    """Embeddings of ``dataset[rows]``, flattened to [n, C * parts], in the order of ``rows``.

    Whole sequences are zero-padded in batches with their lengths, which the network treats
    exactly as one sequence at a time."""
    net.eval()
    subset = torch.utils.data.Subset(dataset, rows.tolist())
    out = []
    for batch in DataLoader(subset, batch_size=batch_size, collate_fn=collate):
        x = silhouettes_to_input(batch["sils"])
        out.append(net(x, batch["lengths"]).embeddings.flatten(1).float().cpu())
    return torch.cat(out).numpy()


def checkpoint_embeddings(
    checkpoint: str | Path,
    subjects: int = 10,
    per_subject: int = 20,
    seed: int = 0,
    store: str | Path | None = None,
) -> EmbeddingSet:
    """Embed test sequences of the checkpoint's own dataset with its network.

    ``store`` overrides the dataset store path saved in the checkpoint (a moved data dir).
    """
    loaded = load_network(checkpoint)
    dataset_cfg = loaded.config.dataset
    if store is not None:
        dataset_cfg.store = str(store)
    datamodule = data_module_from_config(dataset_cfg)
    try:
        datamodule.setup("validate")
    except (FileNotFoundError, StoreError) as err:
        raise FileNotFoundError(
            f"{checkpoint}: its dataset store {dataset_cfg.store} cannot be opened ({err}); "
            "pass store=<the prepared store dir>"
        ) from err
    rows = choose_sequences(datamodule.eval_meta, subjects, per_subject, seed)
    meta = datamodule.eval_meta.select(rows)
    return EmbeddingSet(
        embeddings=embed_sequences(loaded.net, datamodule.eval_dataset, rows),
        subjects=meta.subjects,
        types=meta.types,
        views=meta.views,
        checkpoint=str(checkpoint),
        step=loaded.step,
    )


def class_compactness(x: np.ndarray, subjects: np.ndarray) -> float:
    """Mean within-subject over mean between-subject Euclidean distance of the rows of ``x``.

    The number behind Fig. 5's reading ("the intra-class distance is too large"): lower means
    tighter subject clusters relative to their separation, in the embedding space itself rather
    than in the t-SNE map, whose distances are not faithful."""
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(subjects)
    dist = np.sqrt(np.maximum(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1), 0.0))
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(x), dtype=bool)
    within, between = dist[same & off_diagonal], dist[~same]
    if not len(within) or not len(between):
        raise ValueError("class_compactness needs two or more subjects with two or more rows")
    return float(within.mean() / between.mean())


def tsne_2d(x: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE of the rows of ``x`` (perplexity capped for small sets, PCA initialisation)."""
    try:
        from sklearn.manifold import TSNE
    except ImportError as err:  # pragma: no cover - part of the notebooks extra
        raise ImportError(
            "t-SNE needs scikit-learn: pip install 'gaitgl_lightning[notebooks]'"
        ) from err
    n = len(x)
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {n}")
    tsne = TSNE(
        n_components=2,
        perplexity=min(perplexity, (n - 1) / 3.0),
        init="pca",
        random_state=seed,
    )
    return np.asarray(tsne.fit_transform(np.asarray(x, dtype=np.float32)))


def checkpoints_by_model(runs: Sequence[RunInfo], which: str = "last") -> dict[str, Path]:
    """One checkpoint per model kind found in ``runs``, ordered global only, local only, GLCL.

    Among several runs of a kind, the paper's final choice (strip-level V) is preferred for
    GLCL, then the first run by path."""
    found: dict[str, Path] = {}
    preferred = sorted(runs, key=lambda r: (table5_row(r)[0] != "strip-level (V)", str(r.path)))
    for run in preferred:
        kind = model_kind(run)
        ckpt = run.checkpoint(which)
        if kind not in found and ckpt is not None:
            found[kind] = ckpt
    order = ("global only", "local only", "GLCL")
    return {k: found[k] for k in order if k in found}
