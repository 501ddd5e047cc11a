"""Parameters and FLOPs of model configs, per sequence (the numbers in docs/model.md).

    python scripts/model_cost.py                       # the 4-stage readings and the CASIA-B net
    python scripts/model_cost.py gaitgl opengait_gaitgl_large --classes 5153 --frames 30

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add is 2 FLOPs)
for one sequence, on the meta device (shapes only, so even the 1 TFLOP net costs nothing).
``eval`` is the inference forward (the mask pair's local conv runs once on the unmasked map);
``train`` is the training forward (the pair runs two local convs). Backward is about 2x forward.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.flop_counter import FlopCounterMode

from gaitgl_lightning.models import GLCL

CONF = Path(__file__).resolve().parents[1] / "conf"
DEFAULT_MODELS = ["gaitgl_large", "gaitgl_large_sp1", "gaitgl", "opengait_gaitgl_large"]


def build(name: str, classes: int, lta_spatial: int | None) -> torch.nn.Module:
    """Compose ``model=<name>`` as a run would (config extension included), on meta."""
    overrides = [f"model={name}"]
    if lta_spatial is not None:
        overrides.append(f"++model.lta_spatial={lta_spatial}")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with torch.device("meta"):
        return instantiate(cfg.model, num_classes=classes)


def flops(net: torch.nn.Module, frames: int) -> tuple[int, int]:
    """(eval, train) FLOPs of one forward of a single sequence.

    Counted in eval mode (the training forward draws masks, which needs real tensors); the
    training forward runs each mask layer's local conv twice (Mp and Mq), so it adds the
    local convs' FLOPs once more.
    """
    x = torch.empty(1, 1, frames, *net.input_size, device="meta")  # type: ignore[misc]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net.eval()(x)
    total = int(counter.get_total_flops())
    masked = {
        f"{name}.local_conv3d"
        for name, m in net.named_modules()
        if isinstance(m, GLCL) and m.local == "mask" and net.mask_strategy.random  # type: ignore[attr-defined]
    }
    local = sum(
        sum(ops.values())
        for name, ops in counter.get_flop_counts().items()
        if name.split(".", 1)[-1] in masked
    )
    return total, total + int(local)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=DEFAULT_MODELS)
    parser.add_argument("--classes", type=int, default=5153, help="OU-MVLP 5153, GREW 20000")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--lta-spatial", type=int, default=None, help="override lta_spatial")
    args = parser.parse_args()
    print(
        f"{'model':<24} {'parts':>5} {'params':>13} {'backbone':>12} {'classifier':>12} "
        f"{'eval GFLOP':>11} {'train GFLOP':>12}   ({args.frames} frames, {args.classes} classes)"
    )
    for name in args.models:
        net = build(name, args.classes, args.lta_spatial)
        total = sum(p.numel() for p in net.parameters())
        backbone = sum(
            p.numel() for n, p in net.named_parameters() if n.startswith(("stages", "ltas"))
        )
        classifier = sum(
            p.numel() for n, p in net.named_parameters() if n.startswith("head.classifier")
        )
        ev, tr = flops(net, args.frames)
        print(
            f"{name:<24} {net.parts:>5} {total:>13,} {backbone:>12,} {classifier:>12,} "  # type: ignore[attr-defined]
            f"{ev / 1e9:>11.1f} {tr / 1e9:>12.1f}"
        )


if __name__ == "__main__":
    main()
