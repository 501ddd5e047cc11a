"""Pretreatment of raw frames: the alignment is computed exactly as documented."""

from __future__ import annotations

import numpy as np
import pytest

from gaitgl_lightning.data.pretreatment import (
    FrameSkipped,
    SkipReport,
    align_frame,
    align_sequence,
    side_cut,
)


def test_rectangle_is_cropped_resized_and_centred() -> None:
    # A 40-row x 10-column block, off-centre in a 100 x 80 frame.
    frame = np.zeros((100, 80), np.uint8)
    frame[30:70, 5:15] = 255
    out = align_frame(frame, height=64, min_sum=0)
    assert out.shape == (64, 64) and out.dtype == np.uint8
    # Rows 30..69 fill the whole height after the resize to 64 rows.
    assert out[0].max() == 255 and out[-1].max() == 255
    # The crop keeps all 80 columns: resize 40x80 -> 64x128 (x1.6), the block moves to columns
    # 8..23; the first column whose cumulative mass exceeds half is 16; the window [16-32, 16+32)
    # starts left of 0, so 32 zero columns are padded on both sides and the window is [16, 80)
    # of the padded image: the block lands at output columns 40-16 = 24 .. 55-16 = 39.
    cols = np.flatnonzero(out.max(axis=0) > 127)
    assert cols.min() == 24 and cols.max() == 39


def test_empty_and_centreless_frames_are_skipped_with_reasons() -> None:
    with pytest.raises(FrameSkipped, match="empty"):
        align_frame(np.zeros((64, 64), np.uint8))
    report = SkipReport()
    good = np.zeros((64, 64), np.uint8)
    good[10:60, 20:40] = 255
    seq = align_sequence([good, np.zeros((64, 64), np.uint8), good], 64, where="s", report=report)
    assert len(seq) == 2
    assert report.frames["empty (pixel sum below threshold)"] == 1
    assert "s#1" in report.lines()[0]


def test_side_cut_matches_the_field() -> None:
    assert side_cut(np.zeros((3, 64, 64))).shape == (3, 64, 44)
    assert side_cut(np.zeros((3, 128, 128))).shape == (3, 128, 88)
    assert side_cut(np.zeros((3, 32, 32))).shape == (3, 32, 22)
