"""Helpers shared by the video tests (fixtures live in conftest.py beside this file)."""

from __future__ import annotations

import importlib.util
import time

import pytest
import video_factory as vf

from vtr_qdrant.errors import VideoDecodeError
from vtr_qdrant.video.decode import sample_frames
from vtr_qdrant.video.frames import SampledFrames

COLORS4 = ("red", "green", "blue", "white")
HAVE_AV = importlib.util.find_spec("av") is not None
needs_av = pytest.mark.skipif(not HAVE_AV, reason="PyAV (av) is not installed")
ENGINES = ["ffmpeg", pytest.param("pyav", marks=needs_av)]


def color_at(frames: SampledFrames, i: int) -> str:
    """The named colour nearest to frame ``i``'s mean pixel."""
    return vf.nearest_color(frames.images[i].reshape(-1, 3).mean(axis=0))


def expect_failure(exc: type[VideoDecodeError], reasons: set[str], path: object, **kw: object) -> VideoDecodeError:
    """``sample_frames`` must raise ``exc`` with one of ``reasons``, naming the file, within 20 s."""
    t = time.monotonic()
    with pytest.raises(exc) as info:
        sample_frames(path, num_frames=4, size=8, **kw)  # type: ignore[arg-type]
    assert info.value.reason in reasons, (info.value.reason, str(info.value))
    assert str(path) in str(info.value)
    assert time.monotonic() - t < 20
    return info.value
