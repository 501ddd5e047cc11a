"""Import OpenGait's own GaitGL and losses from a checkout the user points at (nothing copied).

Set ``OPENGAIT_ROOT`` to an OpenGait checkout (the folder that holds ``opengait/``, or that
``opengait/`` folder itself). The benchmarks then build OpenGait's network with OpenGait's code,
copy its weights into the package's ``opengait_gaitgl`` through the package's checkpoint
importer, and time both on the same inputs.

Why the import is done by hand: OpenGait is not an installable package. Its modules import each
other as top-level ``utils`` / ``data`` / ``modeling`` / ``evaluation`` from ``opengait/``, and the
``modeling.models`` / ``modeling.losses`` packages import *every* model and loss on import, which
pulls in libraries GaitGL never calls (torchvision, OpenCV, einops, kornia, tensorboard). So:

- ``modeling.models``, ``modeling.losses`` and ``modeling.backbones`` are registered as bare
  packages (their ``__init__`` is not run), so only
  ``gaitgl.py``, ``triplet.py`` and ``ce.py`` (and what they import) are executed;
- a third-party library that is not installed (or fails to import) is replaced, for the
  duration of the import, by a placeholder module whose attributes can be imported but raise
  when used (GaitGL's forward and the two losses use none of them); the placeholders are listed
  in ``Peer.placeholders`` and printed by the benchmark. Install the real ones
  (``pip install einops opencv-python-headless ...``) to avoid them.

Everything added to ``sys.modules`` / ``sys.path`` is removed again after the import.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

ENV = "OPENGAIT_ROOT"
# Top-level packages of OpenGait's source folder (imported by name from it).
_OWN = ("utils", "data", "modeling", "evaluation")
# Third-party imports of the modules GaitGL's import chain executes, none used by its forward.
_OPTIONAL = (
    "cv2",
    "einops",
    "kornia",
    "tqdm",
    "yaml",
    "torchvision",
    "torchvision.ops",
    "torchvision.utils",
    "torchvision.transforms",
    "torch.utils.tensorboard",
)


class PeerError(RuntimeError):
    """OPENGAIT_ROOT is set but does not hold an importable OpenGait checkout."""


@dataclass
class Peer:
    """OpenGait's classes, imported from ``root``."""

    root: Path
    gaitgl: type
    triplet: type
    cross_entropy: type
    placeholders: list[str] = field(default_factory=list)
    commit: str = "unknown"


class _Missing:
    """Stands for an attribute of a library that is not installed; fails only when used."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise ImportError(f"{self._name} is a placeholder: install the library to use it")

    def __getattr__(self, attr: str) -> _Missing:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Missing(f"{self._name}.{attr}")

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        name = self._name

        class Base:  # a class deriving from a missing library's class: fails when built
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                raise ImportError(f"{name} is a placeholder: install the library to use it")

        return (Base,)


class _Placeholder(types.ModuleType):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__path__: list[str] = []  # a package, so that submodules can be imported

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Missing(f"{self.__name__}.{attr}")


class _PlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Last on ``sys.meta_path``: any module no other finder knows becomes a placeholder."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname.split(".")[0] in _OWN:
            return None  # OpenGait's own modules must be the real ones
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: Any) -> types.ModuleType:
        self.made.append(spec.name)
        return _Placeholder(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def source_dir(root: str | os.PathLike[str]) -> Path:
    """The folder holding OpenGait's ``modeling/`` (accepts the checkout or ``opengait/``)."""
    base = Path(root).expanduser()
    for cand in (base / "opengait", base):
        if (cand / "modeling" / "models" / "gaitgl.py").is_file():
            return cand
    raise PeerError(
        f"{ENV}={root}: no opengait/modeling/models/gaitgl.py under it; point {ENV} at an "
        "OpenGait checkout (the folder with opengait/ in it)"
    )


def _bare_package(name: str, path: Path) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__path__ = [str(path)]
    mod.__package__ = name
    sys.modules[name] = mod
    return mod


def _commit(root: Path) -> str:
    head = root / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            return (root / ".git" / ref[5:]).read_text().strip()[:7]
        return ref[:7]
    except OSError:
        return "unknown"


def import_peer(root: str | os.PathLike[str]) -> Peer:
    """Import OpenGait's ``GaitGL``, ``TripletLoss`` and ``CrossEntropyLoss`` from ``root``."""
    src = source_dir(root)
    before = set(sys.modules)
    saved_path = list(sys.path)
    placeholders: list[str] = []
    finder = _PlaceholderFinder()
    shadowed: dict[str, types.ModuleType] = {}
    try:
        for name in _OPTIONAL:
            try:
                importlib.import_module(name)
            except Exception:  # not installed, or installed but broken
                sys.modules[name] = _Placeholder(name)
                placeholders.append(name)
        sys.meta_path.append(finder)
        sys.path.insert(0, str(src))
        # Another package's `utils` etc. must not shadow OpenGait's; put back afterwards.
        shadowed.update({n: sys.modules.pop(n) for n in _OWN if n in sys.modules})
        _bare_package("modeling.backbones", src / "modeling" / "backbones")
        _bare_package("modeling.models", src / "modeling" / "models")
        _bare_package("modeling.losses", src / "modeling" / "losses")
        gaitgl = importlib.import_module("modeling.models.gaitgl")
        triplet = importlib.import_module("modeling.losses.triplet")
        ce = importlib.import_module("modeling.losses.ce")
        return Peer(
            root=src,
            gaitgl=gaitgl.GaitGL,
            triplet=triplet.TripletLoss,
            cross_entropy=ce.CrossEntropyLoss,
            placeholders=placeholders + finder.made,
            commit=_commit(src.parent if src.name == "opengait" else src),
        )
    except PeerError:
        raise
    except Exception as exc:
        raise PeerError(f"{ENV}={root}: importing OpenGait's GaitGL failed: {exc!r}") from exc
    finally:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
        sys.path[:] = saved_path
        for name in set(sys.modules) - before:
            top = name.split(".")[0]
            if top in _OWN or name in placeholders or name in finder.made:
                del sys.modules[name]
        sys.modules.update(shadowed)


def build_gaitgl(
    peer: Peer, channels: list[int], class_num: int, dataset_name: str = "CASIA-B"
) -> nn.Module:
    """OpenGait's GaitGL built by its own ``build_network`` and ``init_parameters``.

    ``BaseModel.__init__`` (data loaders, optimiser, output folders, CUDA) is skipped: only the
    network is wanted. The dataset name picks OpenGait's variant (``OUMVLP`` / ``GREW``: deep).
    """
    cls = peer.gaitgl
    net = cls.__new__(cls)
    nn.Module.__init__(net)
    net.cfgs = {"data_cfg": {"dataset_name": dataset_name}}
    net.build_network({"model": "GaitGL", "channels": list(channels), "class_num": class_num})
    net.init_parameters()
    return net


def ensure_process_group() -> None:
    """OpenGait's triplet loss all-gathers: give it a one-process gloo group if none exists."""
    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized():
        store = Path(tempfile.mkdtemp(prefix="opengait_pg_")) / "store"
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)


class PeerStep:
    """OpenGait's training / inference calls, as its trainer makes them."""

    def __init__(self, peer: Peer, net: nn.Module, label_smooth: bool = False) -> None:
        ensure_process_group()
        self.net = net
        self.triplet = peer.triplet(margin=0.2, loss_term_weight=1.0)
        self.ce = peer.cross_entropy(
            scale=1, label_smooth=label_smooth, log_accuracy=True, loss_term_weight=1.0
        )

    def forward(self, sils: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        """``sils`` float [n, T, H, W] (OpenGait's loader output) -> OpenGait's output dict."""
        return self.net(([sils], labels, None, None, None))

    def loss(self, out: dict[str, Any]) -> torch.Tensor:
        """Sum of weighted mean losses, as OpenGait's ``LossAggregator`` forms it."""
        feats = out["training_feat"]
        tri, _ = self.triplet(**feats["triplet"])
        ce, _ = self.ce(**feats["softmax"])
        return tri.mean() * self.triplet.loss_term_weight + ce.mean() * self.ce.loss_term_weight

    def embed(self, sils: torch.Tensor) -> torch.Tensor:
        """Eval embedding of ONE sequence [1, T, H, W] (OpenGait evaluates one per call)."""
        labels = torch.zeros(sils.shape[0], dtype=torch.long, device=sils.device)
        return self.forward(sils, labels)["inference_feat"]["embeddings"]


def export_state(net: nn.Module, path: Path) -> Path:
    """Write the network's weights in OpenGait's checkpoint layout (``{"model": state_dict}``)."""
    torch.save({"model": net.state_dict()}, path)
    return path
