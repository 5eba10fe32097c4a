"""Train the query-adaptive X-Pool head shipped as ``synthetic-world/v2`` (one command, deterministic).

Usage::

    python -m onnx_export.train_synthetic_head                      # writes vtr_qdrant/models/synthetic-world__v2
    python -m onnx_export.train_synthetic_head --out DIR --steps 300

The head extends the paper's X-Pool head (Gorti et al., CVPR 2022) by one query-adaptive attention
scale ``log s(t) = w · t + b``: the text embedding itself decides how sharp its attention over the
frames is. A caption naming one scene wants sharp attention (the frames of that scene), a caption
naming the whole video wants flat attention (all frames, like mean pooling); a user does not say
which kind they typed. Everything else is the paper's identity initialisation, kept fixed
(``trainable="adaptive"``), so the head cannot drift from the parameter-free text-conditioned pooling
that already ranks scene captions best; only D + 1 numbers (and InfoNCE's logit scale) are learnt.

Data (training seeds only; :func:`vtr_qdrant.synthetic.check_training_seed` refuses held-out ones):
each training world's videos are rendered in numpy at the 12 sampled timestamps and encoded by the
``synthetic-world/v1`` image tower; captions are every paraphrase of every scene (positive: every
video with that scene) and the whole-video caption (positive: every video with that scene
sequence), embedded by the text tower. Early stopping on a validation split of the training videos.
The bundle written has v1's towers byte for byte (so it opens v1 collections) plus ``xpool.npz``;
its manifest records this recipe: seeds, sizes, configuration and validation history.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vtr_qdrant import synthetic as syn
from vtr_qdrant.model.bundle import BUILTIN_MODELS_DIR, ModelBundle, resolve_bundle

from .head_config import HeadTrainConfig
from .head_output import write_head_bundle
from .train_head import train_head

__all__ = ["training_data", "training_captions", "synthetic_training_parser", "main"]

log = logging.getLogger("onnx_export.train_synthetic_head")

NAME = "synthetic-world/v2"
DEFAULT_OUT = BUILTIN_MODELS_DIR / "synthetic-world__v2"
TRAIN_SEEDS = (301, 302, 303)


def training_data(
    bundle: ModelBundle, seeds: Sequence[int], n_videos: int, *, num_frames: int = 12, world_size: int = 64,
    video_caption_weight: int = 3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Any]]:
    """(V, F, D) frames, (C, D) caption embeddings, (C,) caption owners and (C,) relevance groups."""
    frames, texts, owner, groups = training_captions(
        bundle, seeds, n_videos, num_frames=num_frames, world_size=world_size, video_caption_weight=video_caption_weight
    )
    unique = sorted(set(texts))
    emb = bundle.text_encoder().encode(unique)
    index = {t: j for j, t in enumerate(unique)}
    return frames, emb[[index[t] for t in texts]], owner, groups


def training_captions(
    bundle: ModelBundle, seeds: Sequence[int], n_videos: int, *, num_frames: int = 12, world_size: int = 64,
    video_caption_weight: int = 3,
) -> tuple[np.ndarray, list[str], np.ndarray, list[Any]]:
    """(V, F, D) frames of the bundle's image tower, (C,) caption texts, (C,) caption owners and (C,)
    relevance groups ``("scene", key)`` / ``("video", keys)``."""
    fenc = bundle.frame_encoder()
    size = bundle.manifest.image.image_size
    supersample = max(1, 2 * world_size // size)
    frames, texts, owner = [], [], []
    groups: list[Any] = []
    for seed in seeds:
        world = syn.generate_world(syn.check_training_seed(seed), n_videos, size=world_size)
        for v in world.videos:
            images, _ = syn.render_video_frames(v, size, syn.uniform_timestamps(v.duration, num_frames), supersample=supersample)
            frames.append(fenc.encode(images))
            i = len(frames) - 1
            for s in v.scenes:
                for c in syn.caption_variants(s.shape, s.colour, s.background, s.motion):
                    texts.append(c)
                    owner.append(i)
                    groups.append(("scene", s.key))
            for _ in range(video_caption_weight):  # as many whole-video captions as a scene has paraphrases
                texts.append(v.caption)
                owner.append(i)
                groups.append(("video", v.keys))
    return np.stack(frames), texts, np.asarray(owner), groups


def synthetic_training_parser(doc: str, name: str, out: Path, seeds: Sequence[int], lr: float) -> argparse.ArgumentParser:
    """The options every synthetic-world training script shares (bundle, output, data, steps, lr)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="synthetic-world/v1", help="the towers to start from")
    ap.add_argument("--out", type=Path, default=out)
    ap.add_argument("--name", default=name)
    ap.add_argument("--train-seeds", type=int, nargs="+", default=list(seeds))
    ap.add_argument("--train-videos", type=int, default=1000, help="videos per training world")
    ap.add_argument("--video-caption-weight", type=int, default=6, help="copies of each whole-video caption")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=lr, help="the head's peak learning rate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    return ap


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = synthetic_training_parser(__doc__ or "", NAME, DEFAULT_OUT, TRAIN_SEEDS, 0.1)
    ap.add_argument("--trainable", default="adaptive", choices=["all", "attention", "adaptive"])
    ap.add_argument("--weight-decay", type=float, default=0.0, help="decay toward the identity initialisation")
    ap.add_argument("--patience", type=int, default=100, help="evaluations without improvement before stopping")
    ap.add_argument("--hard-negatives", type=int, default=0, help="0, or anchors + nearest videos per batch")
    ap.add_argument("--v2t-weight", type=float, default=1.0, help="weight of the video-to-text InfoNCE term")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    bundle = resolve_bundle(args.bundle)
    t0 = time.perf_counter()
    frames, text, owner, groups = training_data(
        bundle, args.train_seeds, args.train_videos, video_caption_weight=args.video_caption_weight
    )
    embed_s = time.perf_counter() - t0
    log.info("training data: %s frames, %d captions in %.0f s", frames.shape, len(text), embed_s)
    cfg = HeadTrainConfig(
        max_steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        trainable=args.trainable, adaptive_scale=True, seed=args.seed, threads=args.threads, patience=args.patience,
        hard_negatives=args.hard_negatives, v2t_weight=args.v2t_weight,
    )
    result = train_head(text, owner, frames, config=cfg, caption_groups=groups)
    recipe = {
        "script": "onnx_export.train_synthetic_head",
        "towers": bundle.name,
        "train_seeds": list(args.train_seeds),
        "train_videos_per_world": args.train_videos,
        "captions": len(text),
        "command": "python -m onnx_export.train_synthetic_head " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    out = write_head_bundle(result, bundle, args.out, name=args.name, recipe=recipe, overwrite=args.overwrite)
    v0, v1 = result.val_identity, result.val_best
    print(
        f"trained in {result.seconds:.0f} s (best step {result.best_step}); validation R@1 identity {v0['R@1']:.3f} -> "
        f"{v1['R@1']:.3f}; wrote {out.name} to {out.path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
