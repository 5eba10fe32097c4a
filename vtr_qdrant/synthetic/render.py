"""Rendering the synthetic world: frames in numpy at any timestamps, H.264 mp4 files with ffmpeg."""

from __future__ import annotations

import logging
import math
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, VideoDecodeError
from .captions import COLOURS, SHAPES
from .generate import generate_world
from .world import Scene, SyntheticVideo, World

__all__ = ["uniform_timestamps", "render_video_frames", "write_video", "make_world"]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------- rendering


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.82 * r
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.1 * r
    if shape == "cross":
        a, b = np.abs(dx), np.abs(dy)
        arm = 0.34 * r
        return ((a <= arm) & (b <= r)) | ((b <= arm) & (a <= r))
    if shape == "triangle":
        # upward equilateral triangle inscribed in the circle of radius 1.15 r
        R = 1.15 * r
        y = dy + 0.25 * R  # centre the triangle's bounding box
        h = 1.5 * R
        inside_y = (y >= -R) & (y <= 0.5 * R)
        half_w = (y + R) / h * (math.sqrt(3) / 2 * R)
        return inside_y & (np.abs(dx) <= half_w)
    raise ConfigError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _render_frame(scene: Scene, t: float, size: int, supersample: int = 2) -> np.ndarray:
    cx, cy, r = scene.geometry(t)
    n = size * supersample
    coords = (np.arange(n, dtype=np.float32) + 0.5) / n
    dx = coords[None, :] - cx
    dy = coords[:, None] - cy
    mask = _shape_mask(scene.shape, dx, dy, r).astype(np.float32)
    alpha = mask.reshape(size, supersample, size, supersample).mean(axis=(1, 3))[..., None]
    fg = np.asarray(COLOURS[scene.colour], dtype=np.float32)
    bg = np.asarray(COLOURS[scene.background], dtype=np.float32)
    return np.rint(alpha * fg + (1.0 - alpha) * bg).astype(np.uint8)


def uniform_timestamps(duration: float, num_frames: int) -> np.ndarray:
    """Centres of ``num_frames`` equal segments of ``[0, duration)``: (num_frames,) float64 seconds."""
    return (np.arange(num_frames, dtype=np.float64) + 0.5) * (duration / num_frames)


def render_video_frames(
    video: SyntheticVideo,
    size: int,
    timestamps: Sequence[float] | np.ndarray | None = None,
    *,
    supersample: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Render a video's frames in numpy, without ffmpeg (training reads these instead of decoding).

    Args:
        video: the video spec.
        size: frame side in pixels.
        timestamps: seconds to render; each time shows frame ``floor(t * fps)`` like a decoder
            (clamped to the last frame). None renders every frame of the video.
        supersample: anti-aliasing samples per pixel side. Rendering at ``size / 2`` with twice
            the supersampling equals rendering at ``size`` and box-downscaling 2x (up to rounding).

    Returns:
        ``(frames, timestamps)``: (F, size, size, 3) uint8 RGB and (F,) float64 seconds.
    """
    if timestamps is None:
        ts = np.arange(video.num_frames, dtype=np.float64) / video.fps
    else:
        ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    frames = np.empty((len(ts), size, size, 3), dtype=np.uint8)
    for i, t in enumerate(ts):
        idx = min(max(math.floor(t * video.fps + 1e-9), 0), video.num_frames - 1)
        tf = idx / video.fps
        frames[i] = _render_frame(video.scene_at(tf), tf, size, supersample)
    return frames, ts


def write_video(video: SyntheticVideo, path: str | os.PathLike[str], size: int, *, crf: int = 18) -> Path:
    """Render a video and encode it to H.264 mp4 (yuv420p) with ffmpeg; written atomically.

    Raises:
        MissingDependencyError: no ffmpeg binary (from :func:`vtr_qdrant.video.resolve_ffmpeg`).
        VideoDecodeError: ffmpeg failed (the message carries its stderr).
    """
    from ..video.ffmpeg_bin import resolve_ffmpeg

    ffmpeg = resolve_ffmpeg()
    out = Path(path)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    frames, _ = render_video_frames(video, size)
    cmd = [
        str(ffmpeg), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size}x{size}", "-r", str(video.fps), "-i", "-",
        "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
        "-threads", "1", "-g", str(video.fps), "-fflags", "+bitexact", "-movflags", "+faststart",
        str(tmp),
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, input=frames.tobytes(), capture_output=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        tmp.unlink(missing_ok=True)
        raise VideoDecodeError(
            str(out), f"ffmpeg could not encode the synthetic video: {e}", reason="encode_failed"
        ) from e
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        err = proc.stderr.decode("utf-8", "replace").strip()[-800:]
        raise VideoDecodeError(
            str(out), f"ffmpeg exited with {proc.returncode}: {err}", reason="encode_failed"
        )
    os.replace(tmp, out)
    return out


def make_world(
    seed: int,
    n_videos: int,
    out_dir: str | os.PathLike[str],
    *,
    size: int = 64,
    fps: int = 10,
    **options: Any,
) -> World:
    """Generate a world and write its videos as mp4 files plus ``world.json`` into ``out_dir``.

    Args:
        seed: generator seed (see the module docstring for the train / held-out convention).
        n_videos: number of videos.
        out_dir: folder to write into (created if needed).
        size: frame side in pixels (even).
        fps: frame rate.
        **options: passed to :func:`generate_world` (``duration_range``, ``scenes_range``,
            ``mutation_rate``, ``persistence``, ``min_scene_fraction``).

    Returns:
        The :class:`World` with ``root`` set to ``out_dir``.
    """
    world = generate_world(seed, n_videos, size=size, fps=fps, **options)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    world.root = str(root.resolve())
    for v in world.videos:
        write_video(v, root / v.file, size)
    (root / "world.json").write_text(world.to_json(), encoding="utf-8")
    log.info("wrote synthetic world seed=%d: %d videos to %s", seed, n_videos, root)
    return world
