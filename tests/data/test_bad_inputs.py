"""The bad-input corpus: damaged trees and pickles through ``task=prepare`` (the real CLI).

Each tree is built by ``tests/bad_trees.py`` in the layouts users hold. ``prepare`` never aborts
on a bad item: it skips it, names it (the first few per reason in the log, all of them in
``<store>/prepare-report.json``), and ``dataset.strict=true`` turns damage into exit status 1
with one line. No case prints a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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
from gaitgl_lightning.data.store import PackedStore, StoreDamaged
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


# ----------------------------------------------------------------------------- damaged stores
def _cut_index(store: Path) -> str:
    index = store / "index.json"
    text = index.read_text()
    index.write_text(text[: len(text) * 2 // 3])  # cut short in the middle of "sequences"
    return str(index)


def _cut_data(store: Path) -> str:
    records = PackedStore(store).records
    last3 = sorted(records, key=lambda r: r.offset)[-3]
    frames = store / "frames.u8"
    with open(frames, "r+b") as fh:  # the last 3 records lose (part of) their frames
        fh.truncate((last3.offset + 1) * 32 * 32)
    return str(frames)


def _record_past_the_end(store: Path) -> str:
    index = json.loads((store / "index.json").read_text())
    index["sequences"][10][3] += 10**6
    (store / "index.json").write_text(json.dumps(index))
    return "/".join(index["sequences"][10][:3])


DAMAGES = {"index cut short": _cut_index, "data cut short": _cut_data}
DAMAGES["record past the end"] = _record_past_the_end
REDONE = {"index cut short": None, "data cut short": 3, "record past the end": 1}


def _clean_store(tmp_path: Path) -> tuple[Path, Path]:
    source = casia_b_raw(tmp_path / "CASIA-B", frames=3)
    prepare_store(source, tmp_path / "store", "casia_b", PARTITION, height=32, workers=1)
    return source, tmp_path / "store"


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_store_is_named_and_repaired_from_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    source, store = _clean_store(tmp_path)
    fresh = {
        r.key: PackedStore(store).sequence(i).copy()
        for i, r in enumerate(PackedStore(store).records)
    }
    named = DAMAGES[damage](store)
    with pytest.raises(StoreDamaged, match="damaged") as err:
        PackedStore(store)
    assert named in str(err.value) and "dataset.source" in str(err.value)
    redone: list[tuple[str, str, str]] = []
    real = prepare_mod._align_source

    def counting(args):  # type: ignore[no-untyped-def]
        redone.append(args[0].key)
        return real(args)

    monkeypatch.setattr(prepare_mod, "_align_source", counting)
    prepare_store(source, store, "casia_b", PARTITION, height=32, workers=1)
    expected = REDONE[damage]
    assert len(redone) == expected if expected is not None else 0 < len(redone) < 50
    repaired = PackedStore(store)
    assert {r.key for r in repaired.records} == set(fresh)
    for i, r in enumerate(repaired.records):
        np.testing.assert_array_equal(repaired.sequence(i), fresh[r.key], err_msg=str(r.key))


def _store_args(tmp_path: Path, store: Path, *extra: str) -> list[str]:
    args = _prepare(tmp_path, tmp_path / "unused", *extra)
    return [a for a in args if not a.startswith(("dataset.source=", "dataset.store="))] + [
        f"dataset.store={store}"
    ]


@pytest.mark.parametrize(
    "damage",
    [
        "data cut short",
        pytest.param("index cut short", marks=pytest.mark.slow),
        pytest.param("record past the end", marks=pytest.mark.slow),
    ],
)
def test_damaged_store_through_the_cli(tmp_path: Path, damage: str) -> None:
    _, store = _clean_store(tmp_path)
    named = DAMAGES[damage](store)
    proc = run_cli(_store_args(tmp_path, store), tmp_path / "cli")
    line = assert_one_line_error(proc, named, "damaged", "dataset.source=")
    assert "no packed store" not in line


@pytest.mark.slow
def test_damaged_store_is_repaired_by_task_prepare(tmp_path: Path) -> None:
    source, store = _clean_store(tmp_path)
    _cut_data(store)
    proc = run_cli([*_store_args(tmp_path, store), f"dataset.source={source}"], tmp_path / "cli")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Traceback" not in output, output[-3000:]
    assert "Repairing: 47 intact sequences kept" in output
    assert len(PackedStore(store)) == 50
