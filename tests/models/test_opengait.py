"""OpenGait checkpoint import: an OpenGait-named state dict loads and gives the same embeddings
as an independent functional forward written from the reference description."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from as_shipped import opengait_shallow_state
from helpers import model_config
from hydra.utils import instantiate

from gaitgl_lightning.models import OpenGaitCheckpointError, load_opengait_checkpoint


def shallow_state(classes: int) -> dict[str, torch.Tensor]:
    """OpenGait CASIA-B GaitGL key names and shapes (layer table, channels 32/64/128)."""
    return opengait_shallow_state(classes)


def reference_forward(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Eval forward of OpenGait's shallow GaitGL, written from the layer description."""
    lrelu = F.leaky_relu

    def glconv(name: str, z: torch.Tensor, concat: bool) -> torch.Tensor:
        g = F.conv3d(z, sd[f"{name}.global_conv3d.conv3d.weight"], padding=1)
        w = sd[f"{name}.local_conv3d.conv3d.weight"]
        size = z.shape[3] // 8
        loc = torch.cat([F.conv3d(c, w, padding=1) for c in z.split(size, 3)], 3)
        return lrelu(torch.cat([g, loc], 3)) if concat else lrelu(g) + lrelu(loc)

    z = lrelu(F.conv3d(x, sd["conv3d.0.conv3d.weight"], padding=1))
    z = lrelu(F.conv3d(z, sd["LTA.0.conv3d.weight"], stride=(3, 1, 1)))
    z = glconv("GLConvA0", z, False)
    z = F.max_pool3d(z, (1, 2, 2))
    z = glconv("GLConvB2", glconv("GLConvA1", z, False), True)
    z = z.max(2).values
    p = sd["HPP.p"]
    z = z.clamp(min=1e-6).pow(p).mean(-1).pow(1 / p)  # 64 bins of one row
    z = torch.einsum("ncp,pco->nop", z, sd["Head0.fc_bin"])
    return F.batch_norm(
        z, sd["Bn.running_mean"], sd["Bn.running_var"], sd["Bn.weight"], sd["Bn.bias"], False
    )


def _net(name: str, classes: int) -> torch.nn.Module:
    return instantiate(model_config(name), num_classes=classes)


def test_shallow_checkpoint_gives_reference_embeddings(tmp_path: Path) -> None:
    sd = shallow_state(74)
    path = tmp_path / "GaitGL-80000.pt"
    torch.save({"model": sd, "iteration": 80000}, path)
    net = _net("opengait_gaitgl", 74)
    load_opengait_checkpoint(net, path)
    x = torch.rand(1, 1, 6, 64, 44)
    with torch.no_grad():
        out = net.eval()(x)
        ref = reference_forward(sd, x)
    torch.testing.assert_close(out.embeddings, ref, rtol=1e-4, atol=1e-5)
    assert torch.equal(net.head.classifier.fc_bin, sd["Head1.fc_bin"])


def test_deep_checkpoint_maps_sequential_blocks(tmp_path: Path) -> None:
    src = _net("opengait_gaitgl_large", 3)
    # Rename our tensors to OpenGait's deep names by hand (Sequential indices inside blocks).
    names = {
        "stages.0.0.conv": "conv3d.0",
        "stages.0.1.conv": "conv3d.2",
        "ltas.0.conv": "LTA.0",
        "stages.1.0": "GLConvA0.0",
        "stages.1.1": "GLConvA0.1",
        "stages.2.0": "GLConvA1.0",
        "stages.2.1": "GLConvA1.1",
        "stages.3.0": "GLConvB2.0",
        "stages.3.1": "GLConvB2.1",
        "pool.p": "HPP.p",
        "head.fc": "Head0",
        "head.bn": "Bn",
        "head.classifier": "Head1",
    }
    sd = {}
    for k, v in src.state_dict().items():
        if k == "mask_draws":
            continue
        for ours, theirs in names.items():
            if k.startswith(ours):
                sd["module." + theirs + k[len(ours) :]] = v.clone()  # DDP prefix too
                break
        else:
            raise AssertionError(k)
    path = tmp_path / "deep.pt"
    torch.save({"model": sd}, path)
    net = _net("opengait_gaitgl_large", 3)
    load_opengait_checkpoint(net, path)
    for k, v in src.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k


def test_mismatch_gives_readable_diff(tmp_path: Path) -> None:
    sd = shallow_state(74)
    del sd["GLConvA1.local_conv3d.conv3d.weight"]
    sd["Extra.weight"] = torch.zeros(2)
    path = tmp_path / "bad.pt"
    torch.save({"model": sd}, path)
    with pytest.raises(OpenGaitCheckpointError) as err:
        load_opengait_checkpoint(_net("opengait_gaitgl", 10), path)
    msg = str(err.value)
    assert "bad.pt" in msg
    assert (
        "Head1.fc_bin is (64, 128, 74), network's head.classifier.fc_bin needs (64, 128, 10)" in msg
    )
    assert "missing in checkpoint: GLConvA1.local_conv3d.conv3d.weight" in msg
    assert "unexpected in checkpoint: Extra.weight" in msg
    torch.save({"state_dict": sd}, path)
    with pytest.raises(OpenGaitCheckpointError, match="under 'model'"):
        load_opengait_checkpoint(_net("opengait_gaitgl", 10), path)


def test_train_path_gradients_equal_reference(tmp_path: Path) -> None:
    """The autograd path (in-place LeakyReLU, max over time, the last layer's halves pooled
    apart instead of stacked) gives the gradients of the straightforward forward (float64)."""
    sd = {k: v.double() if v.is_floating_point() else v for k, v in shallow_state(74).items()}
    path = tmp_path / "GaitGL-80000.pt"
    torch.save({"model": sd}, path)
    net = _net("opengait_gaitgl", 74)
    load_opengait_checkpoint(net, path)
    net.double().eval()  # BN with running statistics, as reference_forward; autograd still records
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 7, 64, 44, generator=gen, dtype=torch.float64)
    probe = torch.randn(2, 128, 64, generator=gen, dtype=torch.float64)
    names = ["conv3d.0.conv3d.weight", "LTA.0.conv3d.weight", "GLConvB2.local_conv3d.conv3d.weight"]
    ref_w = {k: sd[k].clone().requires_grad_() for k in names}
    xr = x.clone().requires_grad_()
    (reference_forward({**sd, **ref_w}, xr) * probe).sum().backward()
    xo = x.clone().requires_grad_()
    (net(xo).embeddings * probe).sum().backward()
    ours = {
        "conv3d.0.conv3d.weight": net.stages[0][0].conv.conv3d.weight,
        "LTA.0.conv3d.weight": net.ltas["0"].conv.conv3d.weight,
        "GLConvB2.local_conv3d.conv3d.weight": net.stages[2][1].local_conv3d.conv3d.weight,
    }
    assert xo.grad is not None and xr.grad is not None
    torch.testing.assert_close(xo.grad, xr.grad, rtol=1e-9, atol=1e-12)
    for k, p in ours.items():
        g = ref_w[k].grad
        assert p.grad is not None and g is not None
        torch.testing.assert_close(p.grad, g, rtol=1e-9, atol=1e-12)
