"""A synthetic video world with known content: scenes of shapes, colours, backgrounds and motions,
their captions, rendered videos, and held-out seeds for honest evaluation.

``captions`` holds the vocabulary, seeds and captions, ``world`` the records and the generator,
``render`` the frames and mp4 files. The retrieval metrics live in :mod:`vtr_qdrant.eval.metrics`
and are re-exported here, as before.
"""

from ..eval.metrics import evaluate_retrieval, relevance_indices
from .captions import (
    COLOURS,
    HELDOUT_SEED_BASE,
    MOTIONS,
    SCENE_KEY_FIELDS,
    SHAPES,
    SceneKey,
    caption_variants,
    check_training_seed,
    heldout_seed,
    is_heldout_seed,
    parse_scene_caption,
    parse_video_caption,
    scene_caption,
    video_caption,
)
from .generate import generate_world
from .render import make_world, render_video_frames, uniform_timestamps, write_video
from .world import Query, Scene, SyntheticVideo, World

__all__ = [
    "COLOURS",
    "HELDOUT_SEED_BASE",
    "MOTIONS",
    "SCENE_KEY_FIELDS",
    "SHAPES",
    "Query",
    "Scene",
    "SceneKey",
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
