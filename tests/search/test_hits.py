"""Moments: the span of frames a hit matched, on hand-built attention patterns."""

from __future__ import annotations

import numpy as np
import pytest

from vtr_qdrant.search.hits import Moment, extend_across_segments, moment_from_weights

T = np.arange(12, dtype=np.float64) + 0.5  # frames at 0.5, 1.5, ..., 11.5 s of a 12 s video


def _w(*values: float) -> np.ndarray:
    w = np.asarray(values, dtype=np.float64)
    return w / w.sum()


def test_one_peak_covers_the_frames_near_it_to_the_midpoints() -> None:
    w = _w(1, 1, 1, 6, 8, 7, 1, 1, 1, 1, 1, 1)
    m = moment_from_weights(w, T, seg_start=0.0, seg_end=12.0)
    assert (m.start, m.end, m.peak) == (3.0, 6.0, 4.5)  # frames 3..5; halfway to frames 2 and 6
    assert m.weights == pytest.approx(w.tolist())


def test_two_peaks_keep_the_higher_run_only() -> None:
    m = moment_from_weights(_w(6, 7, 1, 1, 1, 1, 1, 1, 9, 8, 1, 1), T, seg_start=0.0, seg_end=12.0)
    assert (m.start, m.end, m.peak) == (8.0, 10.0, 8.5)


def test_flat_attention_is_the_whole_segment() -> None:
    m = moment_from_weights(np.full(12, 1 / 12), T, seg_start=0.0, seg_end=12.0)
    assert (m.start, m.end) == (0.0, 12.0)


def test_runs_at_the_ends_reach_the_segment_bounds() -> None:
    head = moment_from_weights(_w(9, 8, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), T, seg_start=0.0, seg_end=12.0)
    tail = moment_from_weights(_w(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 8, 9), T, seg_start=0.0, seg_end=12.0)
    assert (head.start, head.end) == (0.0, 2.0) and (tail.start, tail.end) == (10.0, 12.0)
    # without segment bounds, the first / last frame's time
    bare = moment_from_weights(_w(9, 8, 1, 1), T[:4])
    assert (bare.start, bare.end) == (0.5, 2.0)


def test_one_hot_attention_is_one_frame() -> None:
    w = np.zeros(12)
    w[5] = 1.0
    m = moment_from_weights(w, T, seg_start=0.0, seg_end=12.0)
    assert (m.start, m.end, m.peak) == (5.0, 6.0, 5.5)


def _segments(*weight_lists: list[float], length: float = 4.0) -> dict[int, tuple[Moment, float, float]]:
    """Consecutive segments of ``length`` seconds, 4 frames each, with these weights."""
    out = {}
    for k, ws in enumerate(weight_lists):
        lo = k * length
        ts = lo + (np.arange(len(ws)) + 0.5) * (length / len(ws))
        out[k] = (moment_from_weights(_w(*ws), ts, seg_start=lo, seg_end=lo + length), lo, lo + length)
    return out


def test_a_moment_continues_across_segment_boundaries() -> None:
    segs = _segments([1, 1, 1, 9], [9, 8, 9, 9], [8, 9, 1, 1])  # the run covers 3 s .. 10 s
    rows = {k: k for k in segs}
    m = extend_across_segments(lambda r: segs[r], rows, best=1)
    assert (m.start, m.end) == (3.0, 10.0) and m.peak == segs[1][0].peak
    # from the first segment it continues forward through both others
    assert (extend_across_segments(lambda r: segs[r], rows, best=0).end) == 10.0


def test_no_continuation_when_the_neighbour_matches_elsewhere_or_is_missing() -> None:
    segs = _segments([1, 1, 1, 9], [1, 1, 9, 1])  # the neighbour's own moment is in its middle
    m = extend_across_segments(lambda r: segs[r], {0: 0, 1: 1}, best=0)
    assert (m.start, m.end) == (3.0, 4.0)
    lone = extend_across_segments(lambda r: segs[r], {0: 0}, best=0)  # next segment not a candidate
    assert (lone.start, lone.end) == (3.0, 4.0)
    inner = _segments([1, 9, 1, 1], [9, 1, 1, 1])  # the run does not reach the edge
    assert extend_across_segments(lambda r: inner[r], {0: 0, 1: 1}, best=0).end == 2.0
