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
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InvalidInputError
from ..eval.queries import EvalQuery
from .captions import (
    SceneKey,
    caption_words,
    parse_scene_caption,
    parse_video_caption,
)

__all__ = ["Scene", "SyntheticVideo", "Query", "World"]

log = logging.getLogger(__name__)


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
        if "then" in caption_words(caption):
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

    def eval_queries(self, kinds: tuple[str, ...] = ("scene", "video")) -> list[EvalQuery]:
        """Evaluation queries with kinds and spans (:class:`~vtr_qdrant.eval.queries.EvalQuery`).

        A scene query's spans are the times of the scenes with its key in each relevant video, a
        whole-video query's the whole video.
        """
        out: list[EvalQuery] = []
        for kind in kinds:
            for q in self.queries(kind):
                ids = tuple(sorted(q.relevant))
                key = parse_scene_caption(q.text) if kind == "scene" else None
                spans = tuple(
                    (v, tuple((s.start, s.end) for s in self.video(v).scenes if s.key == key))
                    if key is not None
                    else (v, ((0.0, self.video(v).duration),))
                    for v in ids
                )
                out.append(EvalQuery(q.text, ids, kind, spans))
        return out

    def query_records(self, kinds: tuple[str, ...] = ("scene", "video")) -> list[dict[str, Any]]:
        """:meth:`eval_queries` as JSON lines records, the query-file format ``vtr-qdrant eval`` reads:
        ``{"query", "video_ids", "kind", "spans": {video_id: [[start, end], ...]}}``."""
        return [
            {
                "query": q.text,
                "video_ids": list(q.video_ids),
                "kind": q.kind,
                "spans": {v: [list(s) for s in spans] for v, spans in q.spans},
            }
            for q in self.eval_queries(kinds)
        ]

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
