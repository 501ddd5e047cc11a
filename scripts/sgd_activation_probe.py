"""Why SGD lr 0.1 blows up the 4-stage net: per step, the loss, the largest activation the
backbone hands to GeM, GeM's p and the embeddings' scale (plain SGD steps, no Lightning).

    GAITGL_DATA_DIR=/tmp/gait python scripts/sgd_activation_probe.py [hydra overrides...]

Defaults: the CPU proxy of scripts/sgd_stability.py (the presets' net, gaitgl_large_sp1_stem,
at 16x12, 9 frames, P x K 4 x 2, GREW loss and optimiser, lr 0.1, no warm-up), 8 steps.
`model=gaitgl_large_sp1` probes the stemless net, the presets' net before 2026-12-06, which the
SGD section of docs/model.md measured.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from gaitgl_lightning.runtime.tasks import build_datamodule, build_module

CONF = Path(__file__).resolve().parents[1] / "conf"
PROXY = [
    "model=gaitgl_large_sp1_stem",
    "model.input_size=[16,12]",
    "dataset.size=tiny",
    "dataset.height=16",
    "dataset.frames=9",
    "dataset.P=4",
    "dataset.K=2",
    "dataset.num_workers=0",
    "loss=gaitgl_ls",
    "optimizer=sgd",
    "scheduler=none",
]


def main(overrides: list[str], steps: int = 8) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[*PROXY, *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    torch.manual_seed(int(cfg.seed))
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    module = build_module(cfg)
    module.net.set_mask_seed(int(cfg.seed))
    optimizer = module.optimizer_factory(module.parameters())
    seen: dict[str, float] = {}
    last = module.net.stages[-1][-1]  # the backbone's last layer: what GeM pools
    last.register_forward_hook(
        lambda _m, _i, o: seen.__setitem__("act", float(o.detach().abs().max()))
    )
    batches = iter(dm.train_dataloader())
    for step in range(steps):
        batch = next(batches)
        out = module(batch["sils"], None)
        result = module.loss(out.embeddings, out.logits, batch["labels"])
        optimizer.zero_grad()
        result.total.backward()
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        print(
            f"step {step}: loss {float(result.total):.3f}  max activation into GeM "
            f"{seen['act']:.3g}  GeM p {float(module.net.pool.p):.3f}  max |embedding| "
            f"{float(out.embeddings.abs().max()):.3g}  grad norm "
            f"{float(torch.nn.utils.get_total_norm(grads)):.3g}",
            flush=True,
        )
        optimizer.step()


if __name__ == "__main__":
    main(sys.argv[1:])
