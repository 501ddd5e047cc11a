"""losses (see docs/architecture.md): batch-all triplet + cross-entropy per part."""

from .combined import GaitGLLoss, LossOutput, gather_with_grad
from .cross_entropy import CEStats, part_cross_entropy
from .triplet import TripletStats, batch_all_triplet, part_distances

__all__ = [
    "CEStats",
    "GaitGLLoss",
    "LossOutput",
    "TripletStats",
    "batch_all_triplet",
    "gather_with_grad",
    "part_cross_entropy",
    "part_distances",
]
