"""The bad-input corpus: damaged trees and pickles through ``task=prepare`` (the real CLI).

Each tree is built by ``tests/bad_trees.py`` in the layouts users hold. ``prepare`` never aborts
on a bad item: it skips it, names it (the first few per reason in the log, all of them in
``<store>/prepare-report.json``), and ``dataset.strict=true`` turns damage into exit status 1
with one line. No case prints a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bad_trees import (
    SUBJECTS,
    casia_b_raw,
    damage_pickle_tree,
    damage_png_tree,
    grew_tree,
    opengait_pickles,
    write_partition,
)
from helpers import assert_one_line_error, run_cli

from gaitgl_lightning.data import prepare as prepare_mod
from gaitgl_lightning.data.prepare import REPORT, prepare_store
from gaitgl_lightning.data.store import PackedStore
from gaitgl_lightning.errors import PrepareIncomplete

PARTITION = {"TRAIN_SET": list(SUBJECTS[:3]), "TEST_SET": list(SUBJECTS[3:])}


def _prepare(root: Path, source: Path, *extra: str) -> list[str]:
    partition = write_partition(root / "partition.json", SUBJECTS[:3], SUBJECTS[3:])
    return [
        "task=prepare",
        "dataset=casia_b",
        f"dataset.source={source}",
        f"dataset.store={root / 'store'}",
        f"dataset.partition={partition}",
        "dataset.num_classes=3",
        "dataset.P=2",
        "dataset.K=2",
        "dataset.height=32",
        "dataset.prepare_workers=1",
        "dataset.num_workers=0",
        *extra,
    ]


def _reported(store: Path) -> dict[str, list[str]]:
    """Every item of the report file, by reason."""
    report = json.loads((store / REPORT).read_text())
    return {r: v["items"] for kind in report.values() for r, v in kind.items()}


def _named(items: dict[str, list[str]], path: str) -> bool:
    return any(path in item for where in items.values() for item in where)


# ----------------------------------------------------------------------------- PNG trees
def test_png_tree_strict_names_every_damage_and_exits_1(tmp_path: Path) -> None:
    source = casia_b_raw(tmp_path / "CASIA-B")
    cases = damage_png_tree(source)
    proc = run_cli(_prepare(tmp_path, source, "dataset.strict=true"), tmp_path)
    line = assert_one_line_error(proc, str(source), REPORT, "dataset.strict")
    assert "damaged files or layout mistakes" in line
    for what, path in cases.items():
        assert path in proc.stdout + proc.stderr, what  # the log names the first few per reason
    assert not (tmp_path / "store" / "index.json").exists()  # not finished, resumable
    items = _reported(tmp_path / "store")
    for what, path in cases.items():
        assert _named(items, path), what


def test_png_tree_skips_every_bad_item_and_finishes(tmp_path: Path) -> None:
    source = casia_b_raw(tmp_path / "CASIA-B")
    cases = damage_png_tree(source)
    report = prepare_store(source, tmp_path / "store", "casia_b", PARTITION, height=32, workers=1)
    store = PackedStore(tmp_path / "store")
    keys = {r.key for r in store.records}
    # 50 sequences: 2 moved one level up, 1 emptied, 1 all blank; the damaged ones lose frames.
    assert len(keys) == 50 - 4 and ("001", "nm-01", "000") in keys
    assert report.counts["files"]["unreadable PNG (truncated, or not an image)"] == 3
    assert report.counts["sequences"]["no usable frame"] == 1
    items = _reported(tmp_path / "store")
    for what, path in cases.items():
        assert _named(items, path), what
    assert store.skipped["layout"]["empty folder"] == 2


def test_a_worker_failure_skips_that_sequence_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = casia_b_raw(tmp_path / "CASIA-B", frames=3)
    real = prepare_mod.align_sequence

    def broken(frames, height, where="", report=None):  # type: ignore[no-untyped-def]
        if where == "002/cl-01/090":
            raise MemoryError("cannot allocate")
        return real(frames, height, where=where, report=report)

    monkeypatch.setattr(prepare_mod, "align_sequence", broken)
    report = prepare_store(source, tmp_path / "store", "casia_b", PARTITION, height=32, workers=1)
    assert len(PackedStore(tmp_path / "store")) == 49
    (where,) = report.items["files"]["could not be read (MemoryError)"]
    assert where.startswith("002/cl-01/090")


@pytest.mark.slow
def test_png_tree_through_the_cli_exits_0_and_names_the_skips(tmp_path: Path) -> None:
    source = casia_b_raw(tmp_path / "CASIA-B")
    cases = damage_png_tree(source)
    proc = run_cli(_prepare(tmp_path, source), tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Traceback" not in output, output[-3000:]
    for what, path in cases.items():
        assert path in output, what
    assert (tmp_path / "store" / "index.json").is_file()


def test_grew_frame_of_the_wrong_size_is_skipped(tmp_path: Path) -> None:
    cases = grew_tree(tmp_path / "GREW")
    partition = {"TRAIN_SET": ["00001train"], "TEST_SET": ["00004"]}
    report = prepare_store(tmp_path / "GREW", tmp_path / "store", "grew", partition, workers=1)
    (where,) = report.items["files"]["frame is not 64x64 (this layout's frames are aligned)"]
    assert where.startswith(cases["frame of the wrong size"])
    store = PackedStore(tmp_path / "store")
    assert len(store) == 11 and min(r.length for r in store.records) == 4


# ----------------------------------------------------------------------------- pickle trees
def test_pickle_tree_strict_names_every_damage_and_exits_1(tmp_path: Path) -> None:
    source = opengait_pickles(tmp_path / "pkl")
    marker = tmp_path / "pwned"
    cases = damage_pickle_tree(source, marker)
    proc = run_cli(_prepare(tmp_path, source, "dataset.height=64", "dataset.strict=true"), tmp_path)
    assert_one_line_error(proc, str(source), REPORT)
    for what, path in cases.items():
        assert path in proc.stdout + proc.stderr, what
    assert not marker.exists()  # the foreign pickle was refused, never run
    items = _reported(tmp_path / "store")
    for what, path in cases.items():
        assert _named(items, path), what


def test_pickle_tree_skips_every_bad_pickle_and_finishes(tmp_path: Path) -> None:
    source = opengait_pickles(tmp_path / "pkl")
    marker = tmp_path / "pwned"
    cases = damage_pickle_tree(source, marker)
    report = prepare_store(source, tmp_path / "store", "casia_b", PARTITION, workers=1)
    assert len(PackedStore(tmp_path / "store")) == 50 - 8
    assert report.counts["files"]["foreign pickle (holds objects other than a numpy array)"] == 1
    assert not marker.exists()
    items = _reported(tmp_path / "store")
    for what, path in cases.items():
        assert _named(items, path), what
    with pytest.raises(PrepareIncomplete, match="strict"):
        prepare_store(source, tmp_path / "s2", "casia_b", PARTITION, workers=1, strict=True)
