"""Segments of a sampled video (``vtr_qdrant.video.frames``).

Expected values come from how the files were generated (a colour per second, known frame
times), never from our own decoder's output.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ffmpeg")
pytest.importorskip("imageio_ffmpeg")


from vtr_qdrant.errors import (  # noqa: E402
    ConfigError,
)
from vtr_qdrant.video.decode import SampledFrames, segment_windows  # noqa: E402

pytestmark = pytest.mark.video


def _frames(ts: np.ndarray, duration: float) -> SampledFrames:
    n = len(ts)
    return SampledFrames(uri="x", images=np.zeros((n, 1, 1, 3), np.uint8), timestamps=ts, duration=duration,
                         fps=1.0, width=1, height=1, rotation=0, padded=0, mode="exact")


def test_segment_windows_by_count() -> None:
    fr = _frames(np.arange(10) + 0.5, 10.0)
    segs = segment_windows(fr, max_frames_per_segment=4)
    assert [s.frame_indices.tolist() for s in segs] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert segs[0].start == 0.0 and segs[-1].end == 10.0
    assert segs[0].end == segs[1].start == 4.0
    assert [s.index for s in segs] == [0, 1, 2]


def test_segment_windows_by_time() -> None:
    fr = _frames(np.arange(10) + 0.5, 10.0)
    segs = segment_windows(fr, segment_seconds=3.0, max_frames_per_segment=2)
    covered = np.concatenate([s.frame_indices for s in segs])
    assert covered.tolist() == list(range(10))  # every frame exactly once, in order
    assert all(len(s.frame_indices) <= 2 for s in segs)
    for s in segs:
        assert all(s.start <= fr.timestamps[i] < s.end for i in s.frame_indices)
    assert segs[-1].end == 10.0
    with pytest.raises(ConfigError):
        segment_windows(fr, max_frames_per_segment=0)
