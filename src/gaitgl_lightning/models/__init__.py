"""models (see docs/architecture.md): the GaitGL network, its layers, masks and heads."""

from .gaitgl import GaitGL, GaitGLOutput, StageSpec, silhouettes_to_input
from .heads import BNHead, BNNeckHead
from .layers import GLCL, LTA, GeM, SeparateFCs, temporal_max
from .masks import MASK_PATTERNS, STRATEGIES, MaskPattern, MaskStrategy, partition_conv
from .opengait import OpenGaitCheckpointError, load_opengait_checkpoint

__all__ = [
    "GLCL",
    "LTA",
    "MASK_PATTERNS",
    "STRATEGIES",
    "BNHead",
    "BNNeckHead",
    "GaitGL",
    "GaitGLOutput",
    "GeM",
    "MaskPattern",
    "MaskStrategy",
    "OpenGaitCheckpointError",
    "SeparateFCs",
    "StageSpec",
    "load_opengait_checkpoint",
    "partition_conv",
    "silhouettes_to_input",
    "temporal_max",
]
