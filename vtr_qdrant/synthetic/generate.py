"""Drawing a synthetic world from a seed: scene sequences, mutations, lengths and motions."""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError
from .captions import COLOURS, MOTIONS, SHAPES, SceneKey, scene_caption, video_caption
from .world import Scene, SyntheticVideo, World

__all__ = ["generate_world"]


# ---------------------------------------------------------------------------------------- generation


def _motion_geometry(
    rng: np.random.Generator, motion: str
) -> tuple[float, float, float, float, float, float]:
    lo, hi = 0.26, 0.74
    r = float(rng.uniform(0.17, 0.25))
    c = float(rng.uniform(0.36, 0.64))
    if motion == "moving left":
        return hi, c, lo, c, r, r
    if motion == "moving right":
        return lo, c, hi, c, r, r
    if motion == "moving up":
        return c, hi, c, lo, r, r
    if motion == "moving down":
        return c, lo, c, hi, r, r
    x, y = (float(v) for v in rng.uniform(0.4, 0.6, size=2))
    if motion == "growing":
        return x, y, x, y, 0.12, 0.3
    if motion == "shrinking":
        return x, y, x, y, 0.3, 0.12
    x, y = (float(v) for v in rng.uniform(0.3, 0.7, size=2))
    return x, y, x, y, r, r


def _random_key(rng: np.random.Generator, prev: SceneKey | None, persistence: float) -> SceneKey:
    names = list(COLOURS)
    while True:
        shape = prev[0] if prev and rng.random() < persistence else SHAPES[rng.integers(len(SHAPES))]
        colour = prev[1] if prev and rng.random() < persistence else names[rng.integers(len(names))]
        bg = prev[2] if prev and rng.random() < persistence else names[rng.integers(len(names))]
        key = (shape, colour, bg)
        if colour != bg and key != prev:
            return key


def _mutate_key(rng: np.random.Generator, key: SceneKey) -> SceneKey:
    names = list(COLOURS)
    while True:
        which = int(rng.integers(4))
        shape, colour, bg = key
        if which == 0:
            shape = SHAPES[rng.integers(len(SHAPES))]
        elif which == 1:
            colour = names[rng.integers(len(names))]
        elif which == 2:
            bg = names[rng.integers(len(names))]
        else:
            colour, bg = bg, colour  # same words, swapped roles: only word order tells them apart
        new = (shape, colour, bg)
        if colour != bg and new != key:
            return new


def _scene_lengths(rng: np.random.Generator, n_scenes: int, num_frames: int, min_frames: int) -> list[int]:
    # Dirichlet(0.8) gives very unequal scenes; every scene keeps at least min_frames frames so a
    # uniform 12-frame sample still sees it.
    spare = num_frames - n_scenes * min_frames
    w = rng.dirichlet(np.full(n_scenes, 0.8))
    extra = np.floor(w * spare).astype(int)
    extra[int(np.argmax(w))] += spare - int(extra.sum())
    return [min_frames + int(e) for e in extra]


def generate_world(
    seed: int,
    n_videos: int,
    *,
    size: int = 64,
    fps: int = 10,
    duration_range: tuple[float, float] = (4.0, 10.0),
    scenes_range: tuple[int, int] = (2, 5),
    mutation_rate: float = 0.3,
    persistence: float = 0.35,
    min_scene_fraction: float = 1.0 / 10.0,
) -> World:
    """Draw a world's videos (specs only, no files; :func:`make_world` also writes the mp4s).

    Args:
        seed: generator seed; the world is a pure function of the arguments.
        n_videos: number of videos.
        size: frame side in pixels.
        fps: frame rate.
        duration_range: video duration range in seconds.
        scenes_range: inclusive range of scenes per video.
        mutation_rate: probability that a video copies an earlier video's scene list with one
            scene changed in one attribute (a hard distractor).
        persistence: probability that a scene keeps each attribute of the previous scene.
        min_scene_fraction: the shortest scene as a fraction of the video (>= 1/12 keeps every scene
            visible to a uniform 12-frame sample).

    Returns:
        The :class:`World` (``root`` is None).
    """
    if n_videos < 1:
        raise ConfigError(f"n_videos must be >= 1, got {n_videos}")
    lo_s, hi_s = scenes_range
    if not (1 <= lo_s <= hi_s):
        raise ConfigError(f"scenes_range must satisfy 1 <= low <= high, got {scenes_range}")
    if not (0 < duration_range[0] <= duration_range[1]):
        raise ConfigError(f"duration_range must be positive and ordered, got {duration_range}")
    if hi_s * min_scene_fraction > 1.0:
        raise ConfigError(f"{hi_s} scenes of at least {min_scene_fraction:.3f} of a video do not fit")
    if size < 16 or size % 2:
        raise ConfigError(f"size must be an even number >= 16 (yuv420p), got {size}")
    rng = np.random.default_rng([int(seed), 0x5EED])
    videos: list[SyntheticVideo] = []
    for index in range(n_videos):
        parent: SyntheticVideo | None = None
        if videos and rng.random() < mutation_rate:
            parent = videos[int(rng.integers(len(videos)))]
            keys = list(parent.keys)
            j = int(rng.integers(len(keys)))
            keys[j] = _mutate_key(rng, keys[j])
            # keep consecutive scenes distinct
            for i in range(1, len(keys)):
                if keys[i] == keys[i - 1]:
                    keys[i] = _mutate_key(rng, keys[i])
        else:
            n_scenes = int(rng.integers(lo_s, hi_s + 1))
            keys = []
            for _ in range(n_scenes):
                keys.append(_random_key(rng, keys[-1] if keys else None, persistence))
        num_frames = round(rng.uniform(*duration_range) * fps)
        min_frames = max(1, math.ceil(min_scene_fraction * num_frames))
        lengths = _scene_lengths(rng, len(keys), num_frames, min_frames)
        scenes = []
        start = 0
        for key, n in zip(keys, lengths):
            motion = MOTIONS[int(rng.integers(len(MOTIONS)))]
            geo = _motion_geometry(rng, motion)
            scenes.append(
                Scene(
                    start=start / fps,
                    end=(start + n) / fps,
                    shape=key[0],
                    colour=key[1],
                    background=key[2],
                    motion=motion,
                    caption=scene_caption(key[0], key[1], key[2], motion),
                    x0=geo[0],
                    y0=geo[1],
                    x1=geo[2],
                    y1=geo[3],
                    r0=geo[4],
                    r1=geo[5],
                )
            )
            start += n
        vid = f"w{seed}-v{index:04d}"
        videos.append(
            SyntheticVideo(
                video_id=vid,
                file=f"{vid}.mp4",
                num_frames=num_frames,
                fps=fps,
                scenes=tuple(scenes),
                caption=video_caption(keys),
                parent=parent.video_id if parent else None,
            )
        )
    return World(seed=int(seed), size=size, fps=fps, videos=videos)
