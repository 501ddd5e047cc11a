"""Import an OpenGait GaitGL checkpoint (``.pt`` with the state dict under ``model``).

OpenGait names its modules ``conv3d`` (stem), ``LTA``, ``GLConvA0`` / ``GLConvA1`` /
``GLConvB2`` (each a GLConv or a Sequential of them, with ``global_conv3d`` / ``local_conv3d``),
``HPP.p``, ``Head0.fc_bin``, ``Bn`` and ``Head1.fc_bin`` (or ``BNNecks``).  The GLConv layers
are matched to ours in network order, so any stage list with the same layers in the same order
and the same shapes loads; anything else gives a readable diff.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from typing import Any

import torch

from gaitgl_lightning.errors import CheckpointError

from .gaitgl import GaitGL
from .heads import BNHead
from .layers import GLCL, ConvBlock

_GL_KEY = re.compile(r"^(GLConv[AB](\d+))(?:\.(\d+))?\.(global|local)_conv3d\.conv3d\.weight$")
_STEM_KEY = re.compile(r"^conv3d\.(\d+)\.conv3d\.weight$")


class OpenGaitCheckpointError(CheckpointError):
    """The checkpoint does not fit the network; the message lists every difference."""


def _their_glconv_prefixes(keys: list[str]) -> list[str]:
    found: dict[tuple[int, int], str] = {}
    for k in keys:
        m = _GL_KEY.match(k)
        if m:
            block, num, sub = m.group(1), int(m.group(2)), m.group(3)
            prefix = block if sub is None else f"{block}.{sub}"
            found[(num, int(sub or 0))] = prefix
    return [found[k] for k in sorted(found)]


def opengait_key_map(net: GaitGL, their_keys: list[str]) -> dict[str, str]:
    """Map each of ``net``'s state-dict keys to the OpenGait key it loads from."""
    mapping: dict[str, str] = {}
    stems = sorted(int(m.group(1)) for k in their_keys if (m := _STEM_KEY.match(k)))
    theirs_gl = _their_glconv_prefixes(their_keys)
    stem_i = gl_i = 0
    for si, block in enumerate(net.stages):
        assert isinstance(block, torch.nn.ModuleList)
        for li, layer in enumerate(block):
            ours = f"stages.{si}.{li}"
            if isinstance(layer, ConvBlock):
                idx = stems[stem_i] if stem_i < len(stems) else 2 * stem_i
                mapping[f"{ours}.conv.conv3d.weight"] = f"conv3d.{idx}.conv3d.weight"
                stem_i += 1
            elif isinstance(layer, GLCL):
                prefix = theirs_gl[gl_i] if gl_i < len(theirs_gl) else f"GLConv?{gl_i}"
                for branch in ("global", "local"):
                    if getattr(layer, f"{branch}_conv3d") is not None:
                        mapping[f"{ours}.{branch}_conv3d.conv3d.weight"] = (
                            f"{prefix}.{branch}_conv3d.conv3d.weight"
                        )
                gl_i += 1
    for i, name in enumerate(net.ltas):
        mapping[f"ltas.{name}.conv.conv3d.weight"] = (
            f"LTA.{i}.conv3d.weight" if i else "LTA.0.conv3d.weight"
        )
    if hasattr(net.pool, "p"):
        mapping["pool.p"] = "HPP.p"
    mapping["head.fc.fc_bin"] = "Head0.fc_bin"
    bn_prefix = "Bn" if isinstance(net.head, BNHead) else "BNNecks.bn1d"
    for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        mapping[f"head.bn.{key}"] = f"{bn_prefix}.{key}"
    if getattr(net.head, "classifier", None) is not None:
        mapping["head.classifier.fc_bin"] = (
            "Head1.fc_bin" if isinstance(net.head, BNHead) else "BNNecks.fc_bin"
        )
    return mapping


def load_opengait_checkpoint(
    net: GaitGL, path: str | os.PathLike[str], *, classifier: bool = True
) -> None:
    """Load OpenGait GaitGL weights from ``path`` into ``net`` (e.g. ``opengait_gaitgl``).

    Why a mapping and not ``load_state_dict``: our modules are built from a stage list, so the
    names differ; the shapes and the order do not.  Mismatches raise ``OpenGaitCheckpointError``
    naming the file and listing missing, unexpected and mis-shaped tensors. The file is read
    with torch's weights-only loader.
    """
    path = os.fspath(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # a truncated or non-torch file
        raise OpenGaitCheckpointError(f"{path}: not a readable torch checkpoint ({exc})") from exc
    load_opengait_state(net, ckpt, path, classifier=classifier)


def opengait_problems(
    net: GaitGL, ckpt: Any, name: str, *, classifier: bool = True
) -> tuple[list[str], OrderedDict[str, torch.Tensor]]:
    """The differences between ``net`` and an OpenGait checkpoint dict, and the mapped state.

    ``classifier=False`` leaves the classification layer out (fine-tuning on other classes).
    """
    state = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise OpenGaitCheckpointError(
            f"{name}: expected a dict with the state dict under 'model' (OpenGait layout)"
        )
    state = {k.removeprefix("module."): v for k, v in state.items()}
    mapping = opengait_key_map(net, list(state))
    if not classifier:
        mapping = {k: v for k, v in mapping.items() if not k.startswith("head.classifier.")}
        state = {k: v for k, v in state.items() if k not in _CLASSIFIER_KEYS}
    ours = net.state_dict()
    problems: list[str] = []
    new_state: OrderedDict[str, torch.Tensor] = OrderedDict()
    used: set[str] = set()
    for key, theirs in mapping.items():
        if key not in ours:
            continue
        if theirs not in state:
            problems.append(
                f"  missing in checkpoint: {theirs} (for {key}, shape {tuple(ours[key].shape)})"
            )
            continue
        used.add(theirs)
        src = state[theirs]
        if tuple(src.shape) != tuple(ours[key].shape):
            problems.append(
                f"  shape mismatch: {theirs} is {tuple(src.shape)}, network's {key} needs "
                f"{tuple(ours[key].shape)}"
            )
            continue
        new_state[key] = src
    skip = ("mask_draws",) if classifier else ("mask_draws", "head.classifier.")
    unmapped = [k for k in ours if k not in mapping and not k.startswith(skip)]
    problems += [f"  network tensor with no checkpoint counterpart: {k}" for k in unmapped]
    problems += [
        f"  unexpected in checkpoint: {k} {tuple(state[k].shape)}" for k in state if k not in used
    ]
    return problems, new_state


_CLASSIFIER_KEYS = ("Head1.fc_bin", "BNNecks.fc_bin")


def opengait_num_classes(ckpt: Any) -> int | None:
    """The class count an OpenGait checkpoint's classifier fixes (None without one)."""
    state = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        return None
    for key in _CLASSIFIER_KEYS:
        for k in (key, f"module.{key}"):
            if k in state and getattr(state[k], "ndim", 0) == 3:
                return int(state[k].shape[-1])
    return None


def load_opengait_state(net: GaitGL, ckpt: Any, name: str, *, classifier: bool = True) -> None:
    """``load_opengait_checkpoint`` for a checkpoint dict already read (``name`` for messages)."""
    problems, new_state = opengait_problems(net, ckpt, name, classifier=classifier)
    if problems:
        raise OpenGaitCheckpointError(
            f"{name}: the checkpoint does not fit this network ({len(problems)} differences):\n"
            + "\n".join(problems)
        )
    net.load_state_dict(new_state, strict=False)
