"""docs/extending.md, followed as a new contributor would: its code blocks, run as written.

Each Python block is executed in the namespace of the module the doc says to add it to (as if
pasted at the end of that file), so the doc cannot drift from the helpers it names; the YAML
block becomes a config file on Hydra's search path. Then each new piece is used the way the doc
says a config uses it.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from helpers import TINY, compose_config
from hydra.utils import instantiate
from PIL import Image

from gaitgl_lightning.data import formats
from gaitgl_lightning.data.meta import SequenceMeta
from gaitgl_lightning.data.prepare import prepare_store
from gaitgl_lightning.data.store import PackedStore
from gaitgl_lightning.evaluation import retrieval
from gaitgl_lightning.evaluation.registry import PROTOCOLS, evaluate
from gaitgl_lightning.models import MASK_PATTERNS, MaskStrategy, masks

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def _blocks(lang: str) -> list[str]:
    text = DOC.read_text()
    return [textwrap.dedent(b) for b in re.findall(rf"```{lang}\n(.*?)```", text, re.S)]


def _paste(block: str, module: ModuleType, registry: dict[str, Any], name: str) -> Iterator[None]:
    """Run ``block`` as if appended to ``module``; undo its registration afterwards."""
    namespace = dict(vars(module))
    try:
        exec(compile(block, str(DOC), "exec"), namespace)
        assert name in registry, f"the doc's {module.__name__} example did not register {name}"
        yield
    finally:
        registry.pop(name, None)


@pytest.fixture
def top_band() -> Iterator[None]:
    yield from _paste(_blocks("python")[0], masks, MASK_PATTERNS, "top_band")


@pytest.fixture
def mygait_layout() -> Iterator[None]:
    yield from _paste(_blocks("python")[1], formats, formats.LAYOUTS, "mygait")


@pytest.fixture
def mygait_protocol() -> Iterator[None]:
    yield from _paste(_blocks("python")[2], retrieval, PROTOCOLS, "mygait")


def test_the_doc_has_the_three_examples() -> None:
    assert len(_blocks("python")) == 3 and len(_blocks("yaml")) == 1


def test_mask_strategy_from_the_doc(top_band: None, tmp_path: Path) -> None:
    mp = MaskStrategy("top_band", 0.25).draw(3, 16, 11, torch.Generator().manual_seed(0), "cpu")
    rows = mp[:, 0, 0].bool().all(2)  # fully dropped rows
    assert torch.equal(rows, (torch.arange(16) < 4).expand(3, 16))
    # Step 2: the config file, on Hydra's search path as a user's config dir would be.
    (tmp_path / "conf" / "mask").mkdir(parents=True)
    (tmp_path / "conf" / "mask" / "top_band.yaml").write_text(_blocks("yaml")[0])
    cfg = compose_config(
        [*TINY, "mask=top_band", f"hydra.searchpath=[file://{tmp_path / 'conf'}]"], tmp_path
    )
    assert cfg.mask.strategy == "top_band"
    model = instantiate(cfg.model, num_classes=8)
    assert model.mask_strategy.strategy == "top_band"
    out = model.train()(torch.rand(2, 1, 6, 16, 12))
    assert torch.isfinite(out.embeddings).all()


def _mygait_tree(root: Path) -> Path:
    """``<id>/<condition>_<view>/*.png``, the tree the doc's layout describes."""
    rng = np.random.default_rng(0)
    for subject in ("001", "002", "003"):
        for folder in ("normal_000", "normal_090", "walk_000"):
            seq = root / subject / folder
            seq.mkdir(parents=True)
            for f in range(4):
                frame = np.zeros((32, 24), np.uint8)
                frame[4:28, 8 + rng.integers(0, 4) : 16] = 255
                Image.fromarray(frame).save(seq / f"{f:03d}.png")
    return root


def test_dataset_layout_from_the_doc(mygait_layout: None, tmp_path: Path) -> None:
    raw = _mygait_tree(tmp_path / "raw")
    assert formats.detect_layout(raw) == "mygait"
    keys = sorted(s.key for s in formats.walk(raw, "mygait"))
    assert keys[:3] == [("001", "normal", "000"), ("001", "normal", "090"), ("001", "walk", "000")]
    partition = {"TRAIN_SET": ["001", "002"], "TEST_SET": ["003"]}
    prepare_store(raw, tmp_path / "store", "mygait", partition, "mygait", 16, workers=1)
    store = PackedStore(tmp_path / "store")
    assert len(store) == 9 and {r.subject for r in store.records} == {"001", "002", "003"}


def test_evaluation_protocol_from_the_doc(mygait_protocol: None) -> None:
    subjects = ["a", "a", "b", "b", "c", "c"]
    meta = SequenceMeta.from_lists(subjects, ["normal", "walk"] * 3, ["000"] * 6)
    emb = torch.zeros(6, 4, 2)
    for row, centre in enumerate([0, 0, 1, 1, 2, 0]):
        emb[row, centre] = 1.0
    emb[5, 2] = 0.5  # c's walk: nearest a's normal, then its own
    result = evaluate("mygait", emb, meta, ranks=[1, 2])
    assert result.rank1 == pytest.approx(2 / 3)
    assert result.metrics["rank2"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="valid options"):
        evaluate("mygait", emb, meta, rank=[1])
