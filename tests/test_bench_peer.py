"""The OpenGait side-by-side benchmark's importer, against a small fake checkout.

The fake has OpenGait's layout and import style (top-level ``utils`` / ``modeling`` imported from
``opengait/``, a ``modeling/models/__init__.py`` that imports every model, a third-party import
GaitGL never uses); the real checkout is not part of this repository.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"

FILES = {
    "opengait/utils/__init__.py": "MARK = 'fake-opengait-utils'\n",
    "opengait/modeling/base_model.py": (
        "import torch.nn as nn\n"
        "import not_installed_lib_x as cv\n"  # a library GaitGL never calls
        "from not_installed_lib_y.ops import RoIAlign\n"
        "from utils import MARK\n"
        "class BaseModel(nn.Module):\n"
        "    def __init__(self, cfgs, training):\n"
        "        raise RuntimeError('builds loaders and optimisers')\n"
        "    def init_parameters(self):\n"
        "        for m in self.modules():\n"
        "            if isinstance(m, nn.Conv3d):\n"
        "                nn.init.constant_(m.weight, 0.5)\n"
    ),
    "opengait/modeling/models/__init__.py": "raise ImportError('imports every model')\n",
    "opengait/modeling/models/gaitgl.py": (
        "import torch.nn as nn\n"
        "from ..base_model import BaseModel, MARK\n"
        "class GaitGL(BaseModel):\n"
        "    def build_network(self, model_cfg):\n"
        "        deep = self.cfgs['data_cfg']['dataset_name'] in ['OUMVLP', 'GREW']\n"
        "        c = model_cfg['channels']\n"
        "        self.conv3d = nn.Conv3d(1, c[-1], 3, bias=False)\n"
        "        self.deep, self.class_num, self.mark = deep, model_cfg['class_num'], MARK\n"
        "    def forward(self, inputs):\n"
        "        ipts, labs, _, _, seqL = inputs\n"
        "        e = self.conv3d(ipts[0].unsqueeze(1)).mean((2, 3, 4)).unsqueeze(-1)\n"
        "        return {'training_feat': {'triplet': {'embeddings': e, 'labels': labs},\n"
        "                'softmax': {'logits': e, 'labels': labs}},\n"
        "                'inference_feat': {'embeddings': e}}\n"
    ),
    "opengait/modeling/losses/__init__.py": "raise ImportError('imports every loss')\n",
    "opengait/modeling/losses/base.py": (
        "import torch.nn as nn\n"
        "class BaseLoss(nn.Module):\n"
        "    def __init__(self, loss_term_weight=1.0):\n"
        "        super().__init__()\n"
        "        self.loss_term_weight = loss_term_weight\n"
    ),
    "opengait/modeling/losses/triplet.py": (
        "from .base import BaseLoss\n"
        "class TripletLoss(BaseLoss):\n"
        "    def __init__(self, margin, loss_term_weight=1.0):\n"
        "        super().__init__(loss_term_weight)\n"
        "        self.margin = margin\n"
        "    def forward(self, embeddings, labels):\n"
        "        return embeddings.sum() * 0 + self.margin, {}\n"
    ),
    "opengait/modeling/losses/ce.py": (
        "from .base import BaseLoss\n"
        "class CrossEntropyLoss(BaseLoss):\n"
        "    def __init__(self, scale=16, label_smooth=True, eps=0.1, loss_term_weight=1.0,\n"
        "                 log_accuracy=False):\n"
        "        super().__init__(loss_term_weight)\n"
        "        self.scale = scale\n"
        "    def forward(self, logits, labels):\n"
        "        return logits.sum() * self.scale, {}\n"
    ),
}


def _bench_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def fake_checkout(tmp_path: Path) -> Path:
    for rel, text in FILES.items():
        path = tmp_path / "OpenGait" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "OpenGait"


def test_imports_gaitgl_and_losses_without_side_effects(
    fake_checkout: Path, request: pytest.FixtureRequest
) -> None:
    peer_mod = _bench_module("peer_opengait")
    shadow = ModuleType("utils")  # another package's `utils`, imported before
    sys.modules["utils"] = shadow
    modules_before, path_before, finders = set(sys.modules), list(sys.path), list(sys.meta_path)
    try:
        peer = peer_mod.import_peer(fake_checkout)
        # models/__init__ and losses/__init__ (which raise) were not executed; the missing
        # libraries became placeholders; OpenGait's own `utils` was the one imported.
        assert peer.gaitgl.__name__ == "GaitGL"
        assert {"not_installed_lib_x", "not_installed_lib_y.ops"} <= set(peer.placeholders)
        assert sys.path == path_before and sys.meta_path == finders
        assert set(sys.modules) == modules_before and sys.modules["utils"] is shadow
        # Either checkout folder works.
        assert peer_mod.import_peer(fake_checkout / "opengait").gaitgl.__name__ == "GaitGL"
    finally:
        sys.modules.pop("utils", None)

    net = peer_mod.build_gaitgl(peer, [4, 8], 5)
    assert net.mark == "fake-opengait-utils" and not net.deep and net.class_num == 5
    assert bool((net.conv3d.weight == 0.5).all())  # OpenGait's init_parameters ran
    assert peer_mod.build_gaitgl(peer, [4, 8], 5, dataset_name="OUMVLP").deep

    step = peer_mod.PeerStep(peer, net)  # starts a 1-process gloo group for OpenGait's gather
    request.addfinalizer(torch.distributed.destroy_process_group)
    x = torch.ones(2, 5, 6, 6)
    out = step.forward(x, torch.tensor([0, 1]))
    assert step.embed(x[:1]).shape == (1, 8, 1)
    # the weighted sum of OpenGait's two loss terms (CE scale 1, as in its GaitGL configs)
    expected = 0.2 + float(out["training_feat"]["softmax"]["logits"].detach().sum())
    assert float(step.loss(out)) == pytest.approx(expected)


def test_placeholder_fails_only_when_used() -> None:
    peer_mod = _bench_module("peer_opengait")
    mod = peer_mod._Placeholder("lib")
    thing = mod.ops.RoIAlign  # importing names works
    with pytest.raises(ImportError, match=r"lib\.ops\.RoIAlign is a placeholder"):
        thing(1)


def test_bad_root_names_the_setting(tmp_path: Path) -> None:
    peer_mod = _bench_module("peer_opengait")
    with pytest.raises(peer_mod.PeerError, match=r"OPENGAIT_ROOT=.*no opengait/modeling"):
        peer_mod.import_peer(tmp_path)


def test_loads_same_weights_into_the_package_net(fake_checkout: Path, tmp_path: Path) -> None:
    """export_state writes OpenGait's checkpoint layout, which the package importer reads."""
    peer_mod = _bench_module("peer_opengait")
    state = torch.nn.Conv3d(1, 2, 3, bias=False)
    path = peer_mod.export_state(state, tmp_path / "c.pt")
    loaded = torch.load(path, weights_only=True)
    assert set(loaded) == {"model"} and torch.equal(loaded["model"]["weight"], state.weight)
