"""Fixtures of the video tests: the engines, and test videos generated once per module."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest
import video_factory as vf
from video_checks import COLORS4, ENGINES

from vtr_qdrant.video.decode import sample_frames
from vtr_qdrant.video.frames import SampledFrames


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs once per decoding engine."""
    return str(request.param)


@pytest.fixture
def sf(engine: str) -> Callable[..., SampledFrames]:
    """``sample_frames`` bound to the engine under test."""
    return functools.partial(sample_frames, engine=engine)


@pytest.fixture(scope="module")
def vids(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every test video, generated once for the module."""
    d = tmp_path_factory.mktemp("videos")
    out: dict[str, Path] = {}
    # 4 s, one colour per second, 25 fps, keyframe every 12 frames (0.48 s), B-frames.
    out["colors"] = vf.color_video(d / "colors.mp4", COLORS4, gop=12)
    # Same content with one keyframe only: fast mode has nothing to choose from.
    out["colors_1gop"] = vf.color_video(d / "colors_1gop.mp4", COLORS4, gop=250)
    out["vfr"], _, _ = vf.vfr_video(d / "vfr.mp4")
    out["rot90"] = vf.rotated_video(d / "rot90.mp4", 90)
    out["rot270"] = vf.rotated_video(d / "rot270.mp4", 270)
    out["rot0"] = vf.rotated_video(d / "rot0.mp4", 0)
    out["single"] = vf.single_frame_video(d / "single.mp4")
    return out


@pytest.fixture(scope="module")
def moving(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Moving content, 3 B-frames (x264 b-pyramid: reference and non-reference B-frames), 2 s GOPs."""
    return vf.testsrc_video(tmp_path_factory.mktemp("moving") / "moving.mp4", duration=8.0, height=72, fps=25,
                            gop_seconds=2.0, preset="medium")
