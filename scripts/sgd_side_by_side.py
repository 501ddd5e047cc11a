"""SGD lr 0.1 on OpenGait's own GaitGL and on ours, side by side, on the same proxy.

Every network sees the same batches (the generated synthetic set through the package's data
module), the same optimiser (the config's ``optimizer``, default the GREW recipe's SGD lr 0.1,
momentum 0.9, weight decay 5e-4) and the same loss (triplet margin 0.2 + CE, label smoothing
0.1: ``loss=gaitgl_ls`` for ours, OpenGait's TripletLoss + CrossEntropyLoss with
``label_smooth`` for theirs, as its GREW config has it). Per step it prints the loss, the
gradient norm (before the step), the largest activation handed to GeM, and whether both are
finite; a network stops at its first non-finite step.

Networks (``--models``): each a package model config, built from the same composed config.
With ``OPENGAIT_ROOT`` set (an OpenGait checkout, imported as ``bench/bench_opengait.py`` does,
nothing copied) OpenGait's GREW GaitGL (the deep conference net, channels 32/64/128/256) runs
first, and every package model whose layers correspond to it (``opengait_gaitgl_large``, through
the package's OpenGait checkpoint importer) starts from its weights; the others keep their own
seeded init. At a reduced input OpenGait's head is rebuilt with its own ``SeparateFCs`` class for
the number of rows the input gives (its code hard-wires 64 = a 64-row input), as ours does.

    OPENGAIT_ROOT=<checkout> python scripts/sgd_side_by_side.py --steps 30

CPU default: the proxy of ``scripts/sgd_stability.py`` (16 x 12 input, 9 frames, P x K = 4 x 2).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from torch import nn

from gaitgl_lightning.models import silhouettes_to_input
from gaitgl_lightning.models.opengait import OpenGaitCheckpointError, load_opengait_state
from gaitgl_lightning.runtime.tasks import build_datamodule, build_module

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from peer_opengait import ENV, PeerStep, build_gaitgl, import_peer  # noqa: E402

OPENGAIT = "OpenGait"


@dataclass
class Row:
    """One step of one network."""

    loss: float
    grad_norm: float
    act: float  # largest activation into GeM

    @property
    def finite(self) -> bool:
        return all(math.isfinite(v) for v in (self.loss, self.grad_norm, self.act))


@dataclass
class Trajectory:
    name: str
    note: str
    rows: list[Row] = field(default_factory=list)


def proxy_overrides(args: argparse.Namespace, model: str) -> list[str]:
    h, w = args.input
    return [
        f"model={model}",
        f"model.input_size=[{h},{w}]",
        f"dataset.size={args.size}",
        f"dataset.height={args.height or h}",
        f"dataset.frames={args.frames}",
        f"dataset.P={args.pk[0]}",
        f"dataset.K={args.pk[1]}",
        "dataset.num_workers=0",
        f"loss={args.loss}",
        "optimizer=sgd",
        f"optimizer.lr={args.lr}",
        "scheduler=none",
        f"seed={args.seed}",
        *args.override,
    ]


def preset_overrides(args: argparse.Namespace, preset: str) -> list[str]:
    """A preset as shipped (network, mask, loss, optimiser, schedule, clipping), at the proxy's
    input size; the data are the proxy's, whatever dataset the preset names."""
    h, w = args.input
    return [f"+experiment={preset}", f"model.input_size=[{h},{w}]", f"seed={args.seed}"]


def compose_cfg(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def draw_batches(cfg: DictConfig, steps: int) -> list[dict[str, torch.Tensor]]:
    """The first ``steps`` training batches of the data module (every network gets these)."""
    torch.manual_seed(int(cfg.seed))
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    out: list[dict[str, torch.Tensor]] = []
    while len(out) < steps:
        for batch in dm.train_dataloader():
            out.append({k: v for k, v in batch.items() if isinstance(v, torch.Tensor)})
            if len(out) == steps:
                break
    return out


def opengait_net(peer: Any, classes: int, parts: int) -> nn.Module:
    """OpenGait's GREW GaitGL, its head sized for ``parts`` rows (64 at a 64-row input)."""
    net = build_gaitgl(peer, [32, 64, 128, 256], classes, dataset_name="GREW")
    if parts != 64:
        net.HPP.bin_num = [parts]
        net.Head0 = type(net.Head0)(parts, 256, 256)
        net.Head1 = type(net.Head1)(parts, 256, classes)
    return net


def train(
    name: str,
    step_fn: Any,
    params: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    batches: list[dict[str, torch.Tensor]],
    act: dict[str, float],
    clip: float,
    note: str,
    scheduler: Any = None,
) -> Trajectory:
    """Plain SGD steps (the scheduler, if any, stepped per iteration as the module does);
    stop at the first non-finite loss / gradient norm / activation."""
    traj = Trajectory(name, note)
    for i, batch in enumerate(batches):
        optimizer.zero_grad(set_to_none=True)
        loss = step_fn(batch)
        loss.backward()
        grads = [p.grad for p in params if p.grad is not None]
        norm = float(torch.nn.utils.get_total_norm(grads))
        row = Row(float(loss.detach()), norm, act["max"])
        traj.rows.append(row)
        print(
            f"{name:>22} step {i + 1:4d}: loss {row.loss:9.4f}  grad norm {row.grad_norm:10.4g}"
            f"  max into GeM {row.act:10.4g}",
            flush=True,
        )
        if not row.finite:
            break
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return traj


def hook_max(module: nn.Module, store: dict[str, float]) -> None:
    """Record the largest value of the tensor ``module`` (the GeM pooling) receives."""

    def pre(_m: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        store["max"] = float(inputs[0].detach().abs().max())

    module.register_forward_pre_hook(pre)


def run_all(args: argparse.Namespace) -> list[Trajectory]:
    torch.set_num_threads(args.threads)
    cfgs = {m: compose_cfg(proxy_overrides(args, m)) for m in args.models}
    first = compose_cfg(proxy_overrides(args, "opengait_gaitgl_large"))  # data, optimiser
    batches = draw_batches(first, args.steps)
    classes = int(first.dataset.num_classes)
    root = os.environ.get(ENV)
    results: list[Trajectory] = []
    theirs_state: dict[str, Any] | None = None
    if root:
        peer = import_peer(root)
        torch.manual_seed(args.seed)
        module = build_module(first)  # its head's parts; the configured optimiser factory
        net = opengait_net(peer, classes, int(module.net.parts))
        theirs_state = {"model": {k: v.clone() for k, v in net.state_dict().items()}}
        stepper = PeerStep(peer, net, label_smooth=args.loss == "gaitgl_ls")
        act: dict[str, float] = {"max": float("nan")}
        hook_max(net.HPP, act)
        net.train()

        def theirs(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
            x = silhouettes_to_input(batch["sils"])[:, 0]
            return stepper.loss(stepper.forward(x, batch["labels"]))

        params = list(net.parameters())
        results.append(
            train(
                OPENGAIT,
                theirs,
                params,
                module.optimizer_factory(params),
                batches,
                act,
                args.clip,
                f"OpenGait {peer.commit}, GREW GaitGL, own init",
            )
        )
    else:
        print(f"{ENV} not set: OpenGait's network left out", flush=True)
    for preset in args.presets:
        cfgs[f"+experiment={preset}"] = compose_cfg(preset_overrides(args, preset))
    for model, cfg in cfgs.items():
        torch.manual_seed(args.seed)
        module = build_module(cfg, num_classes=classes)
        module.net.set_mask_seed(args.seed)
        note = "own init"
        if theirs_state is not None:
            try:
                load_opengait_state(module.net, theirs_state, OPENGAIT)
                note = "OpenGait's initial weights"
            except OpenGaitCheckpointError:
                pass
        act = {"max": float("nan")}
        hook_max(module.net.pool, act)
        module.train()

        def ours(batch: Mapping[str, torch.Tensor], module: Any = module) -> torch.Tensor:
            out = module(batch["sils"], None)
            return module.loss(out.embeddings, out.logits, batch["labels"]).total

        params = list(module.parameters())
        optimizer = module.optimizer_factory(params)
        scheduler = module.scheduler_factory(optimizer) if module.scheduler_factory else None
        clip = float(cfg.trainer.get("gradient_clip_val") or 0.0) or args.clip
        if model.startswith("+experiment="):
            note = f"as shipped: {cfg.optimizer._target_.split('.')[-1]} lr {cfg.optimizer.lr}"
            note += f", {cfg.loss.get('label_smoothing', 0)} label smoothing, clip {clip or 'none'}"
        results.append(train(model, ours, params, optimizer, batches, act, clip, note, scheduler))
    return results


def table(results: list[Trajectory], steps: int, points: list[int]) -> str:
    """Markdown: a row per chosen step, loss / grad norm / max into GeM per network."""
    head = "| step | " + " | ".join(f"{t.name}: loss, grad norm, max into GeM" for t in results)
    lines = [head + " |", "|---" * (len(results) + 1) + "|"]
    for s in points:
        if s > steps:
            continue
        cells = []
        for t in results:
            r = t.rows[s - 1] if s <= len(t.rows) else None
            if r is None:
                cells.append("(stopped)")
            else:
                cells.append(f"{r.loss:.3f}, {r.grad_norm:.3g}, {r.act:.3g}")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(t: Trajectory, steps: int) -> str:
    bad = next((i + 1 for i, r in enumerate(t.rows) if not r.finite), None)
    if bad is not None:
        return f"{t.name} ({t.note}): NOT finite at step {bad}"
    if len(t.rows) < steps:
        return f"{t.name} ({t.note}): stopped after {len(t.rows)} of {steps} steps"
    k = max(1, steps // 5)
    a = sum(r.loss for r in t.rows[:k]) / k
    b = sum(r.loss for r in t.rows[-k:]) / k
    peak = max(r.act for r in t.rows)
    return (
        f"{t.name} ({t.note}): finite for {steps} steps; mean loss first {k} {a:.3f} -> last "
        f"{k} {b:.3f}; largest activation into GeM {peak:.3g}"
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="*", default=["opengait_gaitgl_large", "gaitgl_large_sp1"]
    )
    parser.add_argument(
        "--presets", nargs="*", default=[], help="experiment presets, as shipped (grew_sgd ...)"
    )
    parser.add_argument("--size", default="tiny", help="synthetic set size (tiny / default)")
    parser.add_argument("--height", type=int, default=0, help="frame height (default: input H)")
    parser.add_argument("--input", type=int, nargs=2, default=[16, 12], help="model input H W")
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--pk", type=int, nargs=2, default=[4, 2])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--loss", default="gaitgl_ls", help="loss config (gaitgl: no smoothing)")
    parser.add_argument("--clip", type=float, default=0.0, help="gradient norm clip (0: none)")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="write the trajectories here")
    parser.add_argument("--points", type=int, nargs="+", default=[1, 2, 3, 4, 5, 10, 20, 30])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Trajectory]:
    args = parse(argv)
    os.environ.setdefault("GAITGL_DATA_DIR", tempfile.mkdtemp(prefix="gaitgl_sgd_"))
    results = run_all(args)
    h, w = args.input
    print(
        f"\ninput {h}x{w}, {args.frames} frames, P x K {args.pk[0]} x {args.pk[1]}, SGD lr "
        f"{args.lr}, loss {args.loss}, clip {args.clip or 'none'}, seed {args.seed}"
    )
    print(table(results, args.steps, args.points))
    for t in results:
        print(verdict(t, args.steps))
    if args.json:
        rows = {t.name: {"note": t.note, "rows": [asdict(r) for r in t.rows]} for t in results}
        args.json.write_text(json.dumps(rows, indent=1))
    return results


if __name__ == "__main__":
    main()
