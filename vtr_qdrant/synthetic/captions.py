"""The synthetic world's vocabulary, seed convention and captions (see :mod:`vtr_qdrant.synthetic`)."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ConfigError, InvalidInputError

__all__ = [
    "SHAPES",
    "COLOURS",
    "MOTIONS",
    "HELDOUT_SEED_BASE",
    "SCENE_KEY_FIELDS",
    "SceneKey",
    "heldout_seed",
    "is_heldout_seed",
    "check_training_seed",
    "scene_caption",
    "caption_variants",
    "video_caption",
    "caption_words",
    "parse_scene_caption",
    "parse_video_caption",
]

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


def caption_words(text: str) -> list[str]:
    return text.lower().replace(",", " ").split()


def parse_scene_caption(caption: str) -> SceneKey:
    """Read ``(shape, colour, background)`` from a scene caption of this world's grammar.

    Raises:
        InvalidInputError: the caption does not name exactly one shape and two colours.
    """
    words = caption_words(caption)
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
