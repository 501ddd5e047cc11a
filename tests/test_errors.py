"""Bad settings through the real command line: one line naming the setting, no traceback.

Each case runs ``python -m gaitgl_lightning`` in a subprocess and checks the exit status, that
stderr ends with one ``error:`` line naming the item, and that no traceback is printed. The bad
data cases (trees, pickles, stores) are in ``tests/data/test_bad_inputs.py``.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
from helpers import TINY, assert_one_line_error, run_cli

from gaitgl_lightning.cli import user_error_line
from gaitgl_lightning.errors import BatchError, ConfigError, GaitGLError, StoreError


def test_unknown_override_names_the_key(tmp_path: Path) -> None:
    line = assert_one_line_error(run_cli(["dataset.frams=3"], tmp_path), "dataset.frams")
    assert "did you mean dataset.frames?" in line  # the nearest key, not Hydra's `+` hint


def test_unknown_config_group_option_lists_the_choices(tmp_path: Path) -> None:
    line = assert_one_line_error(run_cli(["model=gaitgl_huge"], tmp_path), "model/gaitgl_huge")
    assert "tiny" in line and "search path" not in line


def test_override_syntax_names_the_override(tmp_path: Path) -> None:
    assert_one_line_error(run_cli(["dataset.P=["], tmp_path), "override 'dataset.P=['")


def test_impossible_batch_says_what_to_set(tmp_path: Path) -> None:
    proc = run_cli([*TINY, "dataset.P=50"], tmp_path)
    assert_one_line_error(proc, "dataset.P <= 8")


def test_missing_store_names_the_folder_and_the_setting(tmp_path: Path) -> None:
    store = tmp_path / "nowhere"
    proc = run_cli(["dataset=casia_b", f"dataset.store={store}", "dataset.num_workers=0"], tmp_path)
    assert_one_line_error(proc, str(store), "dataset.source=")


def test_missing_checkpoint_names_the_file(tmp_path: Path) -> None:
    ckpt = tmp_path / "gone.ckpt"
    assert_one_line_error(run_cli([*TINY, "task=eval", f"ckpt_path={ckpt}"], tmp_path), str(ckpt))


@pytest.mark.slow
def test_bad_constructor_value_names_the_config_node(tmp_path: Path) -> None:
    proc = run_cli([*TINY, "mask.ratio=1.5"], tmp_path)
    assert_one_line_error(proc, "ratio", "config node model")


@pytest.mark.slow
def test_unexpected_errors_keep_their_traceback(tmp_path: Path) -> None:
    # A callback whose constructor fails with an OSError: not a setting the package checks.
    args = [*TINY, "+callbacks.boom._target_=builtins.open", f"+callbacks.boom.file={tmp_path}/x/y"]
    proc = run_cli(args, tmp_path)
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    assert not any(line.startswith("error: ") for line in proc.stderr.splitlines())


def test_full_trace_is_one_switch_away(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    proc = run_cli(["dataset.frams=3"], tmp_path)
    assert proc.returncode == 1 and "Traceback" in proc.stderr


def test_the_family_and_bugs_are_told_apart() -> None:
    assert user_error_line(BatchError("P = 9: set dataset.P <= 8")) == "P = 9: set dataset.P <= 8"
    assert user_error_line(StoreError("a\n  b")) == "a, b"
    assert user_error_line(RuntimeError("a bug")) is None
    assert user_error_line(KeyError("x")) is None
    assert issubclass(ConfigError, ValueError) and issubclass(StoreError, GaitGLError)


def _as_spawned(err: Exception) -> Exception:
    """``err`` as a ddp_spawn parent receives it: torch's exception holding the child's trace."""
    from torch.multiprocessing.spawn import ProcessRaisedException

    try:
        raise err
    except Exception:
        trace = traceback.format_exc()
    return ProcessRaisedException(
        f"\n\n-- Process 1 terminated with the following error:\n{trace}", 1, 0
    )


def test_a_spawned_rank_error_keeps_its_one_line() -> None:
    line = user_error_line(_as_spawned(ConfigError("num_classes=9\n  set dataset.num_classes=8")))
    assert line == "num_classes=9, set dataset.num_classes=8"
    assert user_error_line(_as_spawned(RuntimeError("a bug"))) is None
    assert user_error_line(_as_spawned(KeyError("gaitgl_lightning.errors.ConfigError: x"))) is None


@pytest.mark.slow
@pytest.mark.extended  # 23 s in CI, where test_failures' DDP runs end both ranks with one line
def test_ddp_spawn_ranks_fail_with_one_line(tmp_path: Path) -> None:
    args = [*TINY, "+trainer.strategy=ddp_spawn", "trainer.devices=2", "dataset.num_classes=99"]
    assert_one_line_error(run_cli(args, tmp_path), "set dataset.num_classes=")


def test_a_spawned_rank_error_is_recognised_by_type_not_by_class_name() -> None:
    from torch.multiprocessing.spawn import ProcessRaisedException

    text = (
        "\n\n-- Process 1 terminated with the following error:\nTraceback (most recent call "
        'last):\n  File "x.py", line 1, in f\ngaitgl_lightning.errors.ConfigError: dataset.P=0: '
        "give P >= 1\n"
    )
    assert user_error_line(ProcessRaisedException(text, 1, 42)) == "dataset.P=0: give P >= 1"

    class ProcessRaisedException(Exception):  # the same name, another type: a bug
        pass

    assert user_error_line(ProcessRaisedException(text)) is None
