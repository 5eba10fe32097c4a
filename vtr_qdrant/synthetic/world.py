"""A synthetic video world whose content is known exactly: for tests, the demo and a small trained model.

A *scene* is a visual state a caption can name: a coloured shape on a coloured background, with a
motion ("a red circle moving left on a blue background"). A *video* is a sequence of 2-5 scenes of
unequal lengths, rendered in numpy and encoded to H.264 mp4 with the ffmpeg that
:func:`vtr_qdrant.video.resolve_ffmpeg` finds. Every video also has a whole-video caption
("red circle on blue, then green square on black").

The world is built to be hard for text-agnostic mean pooling in the way real video is (the
situation the X-Pool paper targets): a single-scene query describes a part of a video, that part can
be short (a few of the sampled frames), the other scenes of the same video and of distractor
videos share its colours, shapes and backgrounds (shape and background colours come from the same
palette, so "red on blue" and "blue on red" differ only in word order), and a share of the videos
are *mutations* of earlier ones (same scene list with one attribute of one scene changed).

Relevance: a video is relevant to a scene caption when it contains a scene with the same shape,
shape colour and background colour. Motion is named in captions but not used for relevance,
because a frame-level encoder cannot see the direction of a motion in one frame. A whole-video
caption is relevant to every video with the same sequence of (shape, colour, background).

Seed convention: training uses seeds in ``[0, HELDOUT_SEED_BASE)``; evaluation uses held-out seeds
``HELDOUT_SEED_BASE + i`` (see :func:`heldout_seed`), which training code must refuse
(:func:`check_training_seed`). A world is a pure function of its seed and arguments.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InvalidInputError, VideoDecodeError

__all__ = [
    "COLOURS",
    "HELDOUT_SEED_BASE",
    "MOTIONS",
    "SHAPES",
    "Query",
    "Scene",
    "SyntheticVideo",
    "World",
    "caption_variants",
    "check_training_seed",
    "evaluate_retrieval",
    "generate_world",
    "heldout_seed",
    "is_heldout_seed",
    "make_world",
    "parse_scene_caption",
    "parse_video_caption",
    "relevance_indices",
    "render_video_frames",
    "scene_caption",
    "uniform_timestamps",
    "video_caption",
    "write_video",
]

log = logging.getLogger(__name__)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "ring")
#: One palette for shapes and backgrounds; colours chosen to stay apart after yuv420p chroma subsampling.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (35, 70, 225),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "black": (12, 12, 12),
    "purple": (140, 45, 185),
    "orange": (250, 140, 20),
}
MOTIONS: tuple[str, ...] = (
    "moving left",
    "moving right",
    "moving up",
    "moving down",
    "growing",
    "shrinking",
    "standing still",
)
HELDOUT_SEED_BASE = 1_000_000
SCENE_KEY_FIELDS = ("shape", "colour", "background")

SceneKey = tuple[str, str, str]


# --------------------------------------------------------------------------------------------- seeds


def heldout_seed(index: int) -> int:
    """The ``index``-th held-out seed (never used for training): ``HELDOUT_SEED_BASE + index``."""
    if index < 0:
        raise ConfigError(f"held-out seed index must be >= 0, got {index}")
    return HELDOUT_SEED_BASE + int(index)


def is_heldout_seed(seed: int) -> bool:
    """True for seeds reserved for evaluation (``seed >= HELDOUT_SEED_BASE``)."""
    return int(seed) >= HELDOUT_SEED_BASE


def check_training_seed(seed: int) -> int:
    """Return ``seed`` if it may be used for training; raise :class:`ConfigError` for held-out seeds."""
    if int(seed) < 0 or is_heldout_seed(seed):
        raise ConfigError(
            f"seed {seed} is not a training seed: training seeds are in [0, {HELDOUT_SEED_BASE}), "
            f"seeds >= {HELDOUT_SEED_BASE} are held out for evaluation"
        )
    return int(seed)


# ------------------------------------------------------------------------------------------ captions


def scene_caption(shape: str, colour: str, background: str, motion: str) -> str:
    """The canonical caption of a scene: ``a {colour} {shape} {motion} on a {background} background``."""
    return f"a {colour} {shape} {motion} on a {background} background"


def caption_variants(shape: str, colour: str, background: str, motion: str) -> list[str]:
    """Paraphrases of a scene caption (training text augmentation); the first is the canonical one.

    In every variant the shape colour is named before the background colour, so
    :func:`parse_scene_caption` reads them all.
    """
    return [
        scene_caption(shape, colour, background, motion),
        f"a {colour} {shape} on a {background} background",
        f"{colour} {shape} {motion} over {background}",
        f"a {colour} {shape} on {background}, {motion}",
        f"the {colour} {shape} is {motion} in front of a {background} background",
        f"{colour} {shape} on {background}",
    ]


def video_caption(keys: Sequence[SceneKey]) -> str:
    """Whole-video caption: ``{colour} {shape} on {background}`` per scene, joined by ``, then ``."""
    return ", then ".join(f"{c} {s} on {b}" for s, c, b in keys)


def _words(text: str) -> list[str]:
    return text.lower().replace(",", " ").split()


def parse_scene_caption(caption: str) -> SceneKey:
    """Read ``(shape, colour, background)`` from a scene caption of this world's grammar.

    Raises:
        InvalidInputError: the caption does not name exactly one shape and two colours.
    """
    words = _words(caption)
    shapes = [w for w in words if w in SHAPES]
    colours = [w for w in words if w in COLOURS]
    if len(shapes) != 1 or len(colours) != 2:
        raise InvalidInputError(
            f"{caption!r} is not a scene caption of the synthetic world: expected one shape of {SHAPES} "
            f"and two colours of {tuple(COLOURS)} (shape colour first, then background)"
        )
    return shapes[0], colours[0], colours[1]


def parse_video_caption(caption: str) -> tuple[SceneKey, ...]:
    """Read the scene keys of a whole-video caption (parts separated by ``then``)."""
    parts = [p for p in caption.lower().split("then")]
    return tuple(parse_scene_caption(p) for p in parts)


# ------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Scene:
    """One scene of a synthetic video.

    Times are in seconds, ``[start, end)``, on frame boundaries. Geometry is in units of the frame
    side: the shape's centre moves linearly from ``(x0, y0)`` to ``(x1, y1)`` and its radius from
    ``r0`` to ``r1`` over the scene (y grows downwards).
    """

    start: float
    end: float
    shape: str
    colour: str
    background: str
    motion: str
    caption: str
    x0: float
    y0: float
    x1: float
    y1: float
    r0: float
    r1: float

    @property
    def key(self) -> SceneKey:
        """What relevance is judged on: (shape, colour, background)."""
        return (self.shape, self.colour, self.background)

    @property
    def midpoint(self) -> float:
        return 0.5 * (self.start + self.end)

    def geometry(self, t: float) -> tuple[float, float, float]:
        """Centre x, centre y and radius (frame-side units) at time ``t`` (clamped into the scene)."""
        span = max(self.end - self.start, 1e-9)
        p = min(max((t - self.start) / span, 0.0), 1.0)
        return (
            self.x0 + p * (self.x1 - self.x0),
            self.y0 + p * (self.y1 - self.y0),
            self.r0 + p * (self.r1 - self.r0),
        )


@dataclass(frozen=True)
class SyntheticVideo:
    """A synthetic video: its scenes in time order and its whole-video caption.

    Attributes:
        video_id: unique within a world (``w{seed}-v{index:04d}``).
        file: mp4 file name, relative to the world's ``root``.
        num_frames: frames in the file; frame ``i`` shows the state at ``i / fps``.
        fps: frame rate.
        scenes: 2-5 scenes covering ``[0, duration)``.
        caption: whole-video caption.
        parent: id of the video this one mutates (a distractor family), or None.
    """

    video_id: str
    file: str
    num_frames: int
    fps: int
    scenes: tuple[Scene, ...]
    caption: str
    parent: str | None = None

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    def scene_at(self, t: float) -> Scene:
        """The scene shown at time ``t`` seconds (the last scene for ``t >= duration``)."""
        for s in self.scenes:
            if t < s.end:
                return s
        return self.scenes[-1]

    @property
    def keys(self) -> tuple[SceneKey, ...]:
        return tuple(s.key for s in self.scenes)


@dataclass(frozen=True)
class Query:
    """An evaluation query: its text, its kind (``scene`` or ``video``) and the ids of relevant videos."""

    text: str
    kind: str
    relevant: frozenset[str]


@dataclass
class World:
    """A generated world: videos with their scenes and captions, and where their mp4 files are.

    Attributes:
        seed: the generator seed.
        size: frame side in pixels (frames are square).
        fps: frame rate of every video.
        videos: the videos, in generation order.
        root: folder holding the mp4 files (None until :func:`make_world` wrote them).
    """

    seed: int
    size: int
    fps: int
    videos: list[SyntheticVideo]
    root: str | None = None
    _by_id: dict[str, SyntheticVideo] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_id = {v.video_id: v for v in self.videos}

    @property
    def video_ids(self) -> list[str]:
        return [v.video_id for v in self.videos]

    def video(self, video_id: str) -> SyntheticVideo:
        try:
            return self._by_id[video_id]
        except KeyError:
            raise InvalidInputError(f"no video {video_id!r} in world seed={self.seed}") from None

    def path(self, video_id: str) -> Path:
        """The mp4 path of a video (the world must have been written by :func:`make_world`)."""
        if self.root is None:
            raise ConfigError("this world has no files: create it with make_world(...) to write the mp4s")
        return Path(self.root) / self.video(video_id).file

    def relevant(self, caption: str) -> set[str]:
        """Ids of the videos relevant to a scene caption or a whole-video caption (``then``-joined).

        A scene caption matches a video containing a scene with the same (shape, colour, background);
        a whole-video caption matches videos with the same sequence of those keys.
        """
        if "then" in _words(caption):
            keys = parse_video_caption(caption)
            return {v.video_id for v in self.videos if v.keys == keys}
        key = parse_scene_caption(caption)
        return {v.video_id for v in self.videos if key in v.keys}

    def queries(self, kind: str = "scene") -> list[Query]:
        """Evaluation queries, in first-appearance order.

        Args:
            kind: ``scene``: one query per distinct scene key (shape, colour, background), worded as
                the first scene caption with that key (captions differing only in motion have the
                same relevant set, so they are not counted twice); ``video``: one per distinct
                whole-video caption.
        """
        if kind not in ("scene", "video"):
            raise ConfigError(f"query kind must be 'scene' or 'video', got {kind!r}")
        texts: dict[object, str] = {}
        for v in self.videos:
            if kind == "video":
                texts.setdefault(v.caption, v.caption)
            else:
                for s in v.scenes:
                    texts.setdefault(s.key, s.caption)
        return [Query(t, kind, frozenset(self.relevant(t))) for t in texts.values()]

    def to_json(self) -> str:
        """Serialise to a JSON string (:meth:`from_json` reads it back)."""
        d = {
            "seed": self.seed,
            "size": self.size,
            "fps": self.fps,
            "root": self.root,
            "videos": [asdict(v) for v in self.videos],
        }
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str | os.PathLike[str]) -> World:
        """Read a world from a JSON string or a path to a JSON file written from :meth:`to_json`."""
        if isinstance(text, os.PathLike) or (isinstance(text, str) and not text.lstrip().startswith("{")):
            text = Path(text).read_text(encoding="utf-8")
        try:
            d = json.loads(text)
            videos = [
                SyntheticVideo(
                    **{**v, "scenes": tuple(Scene(**s) for s in v["scenes"])}  # type: ignore[arg-type]
                )
                for v in d["videos"]
            ]
            return cls(seed=d["seed"], size=d["size"], fps=d["fps"], videos=videos, root=d.get("root"))
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInputError(f"not a synthetic world JSON document: {e}") from e


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


# ---------------------------------------------------------------------------------------- evaluation


def relevance_indices(queries: Iterable[Query], video_ids: Sequence[str]) -> list[set[int]]:
    """Map each query's relevant video ids to column indices of a (Q, V) score matrix."""
    col = {v: i for i, v in enumerate(video_ids)}
    return [{col[v] for v in q.relevant if v in col} for q in queries]


def evaluate_retrieval(
    scores: np.ndarray, relevant: Sequence[Collection[int]], *, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@k and rank statistics of a text-to-video score matrix.

    The rank of a query (1-based) is that of its best-ranked relevant video; ties count against it
    (rank = 1 + number of irrelevant videos scoring >= the best relevant score), so a constant score
    matrix is never rewarded.

    Args:
        scores: (Q, V) float, higher is better.
        relevant: for each query, the column indices of its relevant videos (at least one each).
        ks: the k of each ``R@k``.

    Returns:
        ``{"R@1": ..., "R@5": ..., "R@10": ..., "MdR": median rank, "MnR": mean rank, "n": Q}``;
        recalls are fractions in [0, 1].

    Raises:
        InvalidInputError: shape mismatch or a query without relevant videos.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != len(relevant):
        raise InvalidInputError(
            f"scores must be (Q, V) with Q = {len(relevant)} queries, got shape {s.shape}"
        )
    if s.shape[0] == 0:
        raise InvalidInputError("no queries to evaluate")
    ranks = np.empty(s.shape[0], dtype=np.int64)
    for q, rel in enumerate(relevant):
        idx = np.fromiter(rel, dtype=np.int64)
        if idx.size == 0:
            raise InvalidInputError(f"query {q} has no relevant video")
        if idx.min() < 0 or idx.max() >= s.shape[1]:
            raise InvalidInputError(f"query {q}: relevant index out of range for {s.shape[1]} videos")
        is_rel = np.zeros(s.shape[1], dtype=bool)
        is_rel[idx] = True
        best = s[q, is_rel].max()
        ranks[q] = 1 + int(np.count_nonzero(s[q, ~is_rel] >= best))
    out = {f"R@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["MdR"] = float(np.median(ranks))
    out["MnR"] = float(np.mean(ranks))
    out["n"] = float(len(ranks))
    return out
