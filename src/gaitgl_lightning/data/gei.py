"""Gait energy images (GEI): the classic nearest-neighbour baseline.

A GEI is the mean silhouette of a sequence. Matching GEIs by Euclidean distance is the
reference point a learned gait model must clearly beat on the same split.
"""

from __future__ import annotations

import numpy as np
import torch

from gaitgl_lightning.data.datasets import EvalSequences


def gei(frames: np.ndarray) -> np.ndarray:
    """Mean of uint8 [T, H, W] silhouettes, in [0, 1]."""
    return frames.astype(np.float32).mean(axis=0) / 255.0


def gei_embeddings(dataset: EvalSequences) -> torch.Tensor:
    """GEIs of every sequence of ``dataset``, as embeddings [N, H*W, 1] (one 'part')."""
    rows = [gei(dataset[i]["sils"]).ravel() for i in range(len(dataset))]
    return torch.from_numpy(np.stack(rows))[:, :, None]
